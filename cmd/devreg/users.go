package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"devreg"
	"devreg/registry"
	"devreg/server"
)

// The users commands work offline on the server's data (--data, --database), as accounts create
// does: an owner locked out of the console has no session and no key to reach the server with.

// userFlags adds the flags every users command takes but reset-password: the server's data and
// the account.
func (m *Main) userFlags(fs *flag.FlagSet, cfg *server.Config) *string {
	m.serverFlags(fs, cfg)
	return fs.String("account", "", "the account's `ID` (required), as accounts create printed it")
}

// openUsers opens the server's data and returns the service with a context in which the command
// line acts on account, checked to exist.
func (m *Main) openUsers(ctx context.Context, cfg server.Config, account string) (*registry.Service, context.Context, func(), error) {
	if account == "" {
		return nil, nil, nil, usageError{"--account is required"}
	}
	svc, db, err := server.OpenRegistry(ctx, cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	actx := devreg.NewContextWithCaller(ctx, registry.CLICaller(account))
	// Every account has at least one user, its owner: none means no such account.
	if users, err := svc.ListUsers(actx); err != nil || len(users) == 0 {
		db.Close()
		if err == nil {
			err = devreg.Errorf(devreg.ENOTFOUND, "no account %s in this server's data (check --account, and --data or --database)", account)
		}
		return nil, nil, nil, err
	}
	return svc, actx, func() { db.Close() }, nil
}

// userByEmail finds the account's user with email.
func userByEmail(ctx context.Context, svc *registry.Service, account, email string) (devreg.User, error) {
	users, err := svc.ListUsers(ctx)
	if err != nil {
		return devreg.User{}, err
	}
	for _, u := range users {
		if u.Email == devreg.NormalizeEmail(email) {
			return u, nil
		}
	}
	return devreg.User{}, devreg.Errorf(devreg.ENOTFOUND, "account %s has no user %s; devreg users list --account %s lists them", account, email, account)
}

func (m *Main) usersAdd(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("users add", "users add --account ID --email EMAIL --role admin|operations|developer [--password-stdin] [flags]\n\n"+
		"Example:\n  devreg users add --account acc_... --email dana@maker.example --role operations")
	account := m.userFlags(fs, &cfg)
	email := fs.String("email", "", "the user's `email`, to log in to the console (required)")
	role := fs.String("role", "", "the user's `role`: admin, operations or developer (required)")
	passwordStdin := fs.Bool("password-stdin", false, "read the user's password from one line of stdin instead of printing a one-time link")
	publicURL := fs.String("public-url", m.env("DEVREG_PUBLIC_URL", "http://"+m.env("DEVREG_ADDR", "localhost:8080")),
		"the `URL` the server's clients use, which the invitation link starts with (env DEVREG_PUBLIC_URL)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *email == "" || *role == "" {
		return usageError{"--email and --role are required"}
	}
	var password string
	if *passwordStdin {
		var err error
		if password, err = m.readPassword(true); err != nil {
			return err
		}
	}
	svc, actx, closeDB, err := m.openUsers(ctx, cfg, *account)
	if err != nil {
		return err
	}
	defer closeDB()
	svc.PublicURL = strings.TrimRight(*publicURL, "/")
	u, link, err := svc.CreateUser(actx, registry.NewUser{Email: *email, Role: devreg.Role(*role), Password: password})
	if err != nil {
		return err
	}
	out := struct {
		ID            string      `json:"id"`
		Email         string      `json:"email"`
		Role          devreg.Role `json:"role"`
		InvitationURL string      `json:"invitation_url,omitempty"`
	}{u.ID, u.Email, u.Role, link}
	return json.NewEncoder(m.Stdout).Encode(out)
}

func (m *Main) usersList(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("users list", "users list --account ID [--json] [flags]\n\nExample:\n  devreg users list --account acc_...")
	account := m.userFlags(fs, &cfg)
	asJSON := fs.Bool("json", false, "print the users as JSON, as GET /api/v1/users answers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	svc, actx, closeDB, err := m.openUsers(ctx, cfg, *account)
	if err != nil {
		return err
	}
	defer closeDB()
	users, err := svc.ListUsers(actx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(m.Stdout).Encode(struct {
			Users []devreg.User `json:"users"`
		}{users})
	}
	tw := tabwriter.NewWriter(m.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tEMAIL\tROLE\tLAST LOGIN")
	for _, u := range users {
		last := "never"
		if u.LastLoginAt != nil {
			last = u.LastLoginAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.ID, u.Email, u.Role, last)
	}
	return tw.Flush()
}

func (m *Main) usersSetRole(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("users set-role", "users set-role --account ID --email EMAIL --role admin|operations|developer [flags]\n\n"+
		"Example:\n  devreg users set-role --account acc_... --email dana@maker.example --role admin")
	account := m.userFlags(fs, &cfg)
	email := fs.String("email", "", "the user's `email` (required)")
	role := fs.String("role", "", "the new `role`: admin, operations or developer (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *email == "" || *role == "" {
		return usageError{"--email and --role are required"}
	}
	return m.onUser(ctx, cfg, *account, *email, func(actx context.Context, svc *registry.Service, u devreg.User) error {
		r := devreg.Role(*role)
		u, _, err := svc.UpdateUser(actx, u.ID, registry.UserUpdate{Role: &r})
		if err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "%s is now %s\n", u.Email, u.Role)
		return nil
	})
}

// onUser opens the account's data, finds its user of email, and hands both to fn.
func (m *Main) onUser(ctx context.Context, cfg server.Config, account, email string, fn func(context.Context, *registry.Service, devreg.User) error) error {
	svc, actx, closeDB, err := m.openUsers(ctx, cfg, account)
	if err != nil {
		return err
	}
	defer closeDB()
	u, err := userByEmail(actx, svc, account, email)
	if err != nil {
		return err
	}
	return fn(actx, svc, u)
}

func (m *Main) usersRemove(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("users remove", "users remove --account ID --email EMAIL [flags]\n\nExample:\n  devreg users remove --account acc_... --email dana@maker.example")
	account := m.userFlags(fs, &cfg)
	email := fs.String("email", "", "the user's `email` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *email == "" {
		return usageError{"--email is required"}
	}
	return m.onUser(ctx, cfg, *account, *email, func(actx context.Context, svc *registry.Service, u devreg.User) error {
		if err := svc.DeleteUser(actx, u.ID); err != nil {
			return err
		}
		fmt.Fprintf(m.Stdout, "%s is removed; its sessions have ended\n", u.Email)
		return nil
	})
}

// usersResetPassword sets a user's password from the command line: the way back in for an
// owner locked out of the console. It needs no account: an email belongs to one user.
func (m *Main) usersResetPassword(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("users reset-password", "users reset-password --email EMAIL [flags] < password\n\n"+
		"Reads the new password from one line of stdin (or asks twice on a terminal); the user's sessions end.\n"+
		"Example:\n  echo 'a new long password' | devreg users reset-password --email owner@maker.example")
	m.serverFlags(fs, &cfg)
	email := fs.String("email", "", "the user's `email` (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *email == "" {
		return usageError{"--email is required"}
	}
	f, ok := m.Stdin.(*os.File)
	password, err := m.readPassword(!ok || !term.IsTerminal(int(f.Fd())))
	if err != nil {
		return err
	}
	svc, db, err := server.OpenRegistry(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	u, err := svc.ResetPassword(ctx, *email, password)
	if err != nil {
		return err
	}
	fmt.Fprintf(m.Stdout, "the password of %s is set; its sessions have ended\n", u.Email)
	return nil
}
