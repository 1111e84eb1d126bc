package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/term"

	"devreg"
	"devreg/server"
)

func (m *Main) createAccount(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("accounts create", "accounts create --name NAME --email EMAIL [--password-stdin] [flags]\n\n"+
		"Creates an account, its owner (who logs in to the console with this email) and a first API key\n"+
		"with the admin scope, and prints them as JSON. Give it the server's --data (or DEVREG_DATA) or\n"+
		"--database: it works while the server runs.\n\n"+
		"Example:\n  devreg accounts create --data /var/lib/devreg --name \"Acme Devices\" --email ops@acme.example")
	name := fs.String("name", "", "the manufacturer's `name` (required)")
	email := fs.String("email", "", "the owner's `email`, to log in to the console (required)")
	passwordStdin := fs.Bool("password-stdin", false, "read the owner's password from one line of stdin instead of prompting")
	m.serverFlags(fs, &cfg)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || *email == "" {
		return usageError{"--name and --email are required"}
	}
	password, err := m.readPassword(*passwordStdin)
	if err != nil {
		return err
	}
	// A new data folder here usually means a --data (or DEVREG_DATA) other than the server's: the
	// account would land in a database no server reads. Said, not refused: it is also how the
	// first account of a new installation is made.
	_, statErr := os.Stat(cfg.DataDir)
	newFolder := cfg.Database == "" && errors.Is(statErr, os.ErrNotExist)
	svc, db, err := server.OpenRegistry(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if newFolder {
		abs, _ := filepath.Abs(cfg.DataDir)
		fmt.Fprintf(m.Stderr, "devreg: created a new data folder %s; the server must use the same one (--data or DEVREG_DATA) to see this account\n", abs)
	}
	account, key, err := svc.NewAccount(ctx, *name, *email, password)
	if err != nil {
		return err
	}
	out := struct {
		AccountID string `json:"account_id"`
		Email     string `json:"email"`
		APIKey    string `json:"api_key"`
	}{account.ID, devreg.NormalizeEmail(*email), key}
	return json.NewEncoder(m.Stdout).Encode(out)
}

// readPassword reads the owner's password: one line of stdin, or twice at a prompt on the terminal.
func (m *Main) readPassword(fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(m.Stdin).ReadString('\n')
		if err != nil && line == "" {
			return "", fmt.Errorf("--password-stdin: no password on stdin")
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := m.Stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usageError{"stdin is not a terminal; pass the password with --password-stdin"}
	}
	var pw [2]string
	for i, prompt := range []string{"Password for the console: ", "Repeat it: "} {
		fmt.Fprint(m.Stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(m.Stderr)
		if err != nil {
			return "", err
		}
		pw[i] = string(b)
	}
	if pw[0] != pw[1] {
		return "", fmt.Errorf("the two passwords differ")
	}
	return pw[0], nil
}
