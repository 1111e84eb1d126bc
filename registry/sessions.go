package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"time"

	"devreg"
	"devreg/credential"
)

// Console session and login throttle settings.
const (
	SessionLifetime  = 12 * time.Hour
	loginMaxFailures = 5
	loginWindow      = 15 * time.Minute
)

// dummyPasswordHash is a hash to check a password against when the email is unknown, so that
// the answer takes the same time either way. It is made on first use: argon2id takes 64 MiB.
var dummyPasswordHash = sync.OnceValue(func() string { return credential.HashPassword("no such user") })

// Login checks a console user's email and password and opens a session, returning its token for
// the cookie. After loginMaxFailures failures for one email within loginWindow, further attempts
// are refused until the window has passed.
func (s *Service) Login(ctx context.Context, email, password string) (string, error) {
	email = strings.ToLower(strings.TrimSpace(email))
	now := s.now()
	key := "login:" + throttleKey(email)
	failures, since, err := s.store.Failures(ctx, key, now, loginWindow)
	if err != nil {
		return "", err
	}
	if failures >= loginMaxFailures {
		wait := since.Add(loginWindow).Sub(now).Round(time.Minute)
		return "", devreg.Errorf(devreg.ERATELIMITED, "too many failed logins for %s; try again in %s", email, max(wait, time.Minute))
	}
	u, err := devreg.User{}, devreg.Errorf(devreg.ENOTFOUND, "no user")
	if checkLength("email", email, 1, 320) == nil {
		u, err = s.store.UserByEmail(ctx, email)
	}
	known := err == nil
	hash := u.PasswordHash
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		hash = dummyPasswordHash()
	} else if err != nil {
		return "", err
	}
	if !credential.CheckPassword(hash, password) || !known {
		if err := s.store.AddFailure(ctx, key, now, loginWindow); err != nil {
			return "", err
		}
		return "", devreg.Errorf(devreg.EUNAUTHORIZED, "wrong email or password")
	}
	token := credential.RandomString(43)
	if err := s.store.CreateSession(ctx, hashToken(token), u.ID, now, now.Add(SessionLifetime)); err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	return token, nil
}

// SessionCaller returns the caller a console session token stands for. Console users are their
// account's owners and have the admin scope.
func (s *Service) SessionCaller(ctx context.Context, token string) (devreg.Caller, error) {
	u, err := s.store.SessionUser(ctx, hashToken(token), s.now())
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.Caller{}, devreg.Errorf(devreg.EUNAUTHORIZED, "your session has ended; log in again")
	}
	if err != nil {
		return devreg.Caller{}, err
	}
	return devreg.Caller{AccountID: u.AccountID, Scope: devreg.ScopeAdmin, Name: u.Email, Source: devreg.SourceConsole}, nil
}

// Logout ends a console session.
func (s *Service) Logout(ctx context.Context, token string) error {
	return s.store.DeleteSession(ctx, hashToken(token), s.now())
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}
