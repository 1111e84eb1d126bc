package registry

import (
	"context"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// sessionPauser holds the first CreateSession until released: the moment after Login has
// checked the password against the hash it read, and before it stores the session.
type sessionPauser struct {
	Store
	reached, release chan struct{}
}

func (p *sessionPauser) CreateSession(ctx context.Context, tokenHash []byte, userID, passwordHash string, created, expires time.Time) error {
	select {
	case p.reached <- struct{}{}:
		<-p.release
	default: // not the login the test holds
	}
	return p.Store.CreateSession(ctx, tokenHash, userID, passwordHash, created, expires)
}

// TestLoginRacingAResetGetsNoSession: someone logs in with a user's stolen password; while the
// login is between its password check and storing its session, an admin forces a reset of the
// password (or the user changes it) to lock them out. The login must fail and leave no session:
// it stored one after the reset had ended the user's sessions, which then worked for 12 hours.
// (An outside review's reproducer.)
func TestLoginRacingAResetGetsNoSession(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		for _, change := range []string{"reset", "own change"} {
			t.Run(change, func(t *testing.T) {
				var p *sessionPauser
				svc, _ := OpenTestService(t, pgtest.NewDatabaseLike(t, url), func(db *store.DB) Store { p = &sessionPauser{Store: db}; return p })
				a, _, err := svc.NewAccount(context.Background(), "Maker", "owner@maker.example", "password-of-the-owner")
				if err != nil {
					t.Fatal(err)
				}
				admin := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
				u, _, err := svc.CreateUser(admin, NewUser{Email: "victim@maker.example", Role: devreg.RoleAdmin, Password: "stolen-password"})
				if err != nil {
					t.Fatal(err)
				}
				own, err := svc.Login(context.Background(), "victim@maker.example", "stolen-password")
				if err != nil {
					t.Fatal(err)
				}
				p.reached, p.release = make(chan struct{}), make(chan struct{})
				type result struct {
					token string
					err   error
				}
				done := make(chan result, 1)
				go func() {
					token, err := svc.Login(context.Background(), "victim@maker.example", "stolen-password")
					done <- result{token, err}
				}()
				<-p.reached
				if change == "reset" {
					_, _, err = svc.UpdateUser(admin, u.ID, UserUpdate{ResetPassword: true})
				} else {
					me := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: u.Email, Source: devreg.SourceConsole, UserID: u.ID})
					err = svc.ChangePassword(me, own, "stolen-password", "brand-new-password")
				}
				if err != nil {
					t.Fatal(err)
				}
				close(p.release)
				r := <-done
				if devreg.ErrorCode(r.err) != devreg.EUNAUTHORIZED {
					t.Errorf("the login checked before the %s: %v, want unauthorized", change, r.err)
				}
				if r.token != "" {
					if c, err := svc.SessionCaller(context.Background(), r.token); err == nil {
						t.Errorf("the login checked before the %s holds a working session: %s, %s", change, c.Name, c.Scope)
					}
				}
			})
		}
	})
}
