package registry

import (
	"context"
	"net/mail"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
)

// NewAccount creates an account, its owner (who logs in to the console with email and password)
// and a first API key with the admin scope, which it returns; it is not stored anywhere readable.
func (s *Service) NewAccount(ctx context.Context, name, email, password string) (devreg.Account, string, error) {
	name, email = strings.TrimSpace(name), devreg.NormalizeEmail(email)
	if err := checkLength("name", name, 1, 200); err != nil {
		return devreg.Account{}, "", err
	}
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email {
		return devreg.Account{}, "", devreg.Errorf(devreg.EINVALID, "email %q is not an email address", email)
	}
	if len(password) < 8 {
		return devreg.Account{}, "", devreg.Errorf(devreg.EINVALID, "password must be at least 8 characters long")
	}
	now := s.now()
	a := devreg.Account{ID: credential.RandomID("acc", 16), Name: name, CreatedAt: now}
	u := devreg.User{ID: credential.RandomID("usr", 16), AccountID: a.ID, Email: email, PasswordHash: credential.HashPassword(password), CreatedAt: now}
	key, hash := credential.NewAPIKey()
	k := devreg.APIKey{ID: credential.RandomID("key", 16), AccountID: a.ID, Name: "owner (" + email + ")", Scope: devreg.ScopeAdmin, CreatedAt: now, Hash: hash}
	if err := s.store.CreateAccount(ctx, a, u, k); err != nil {
		return devreg.Account{}, "", err
	}
	return a, key, nil
}

// apiKeyTouchInterval is how stale an API key's last_used_at may get, so that a busy factory
// station does not write to the database on every call.
const apiKeyTouchInterval = time.Minute

// AuthenticateAPIKey returns the caller an API key stands for.
func (s *Service) AuthenticateAPIKey(ctx context.Context, key string) (devreg.Caller, error) {
	k, err := s.store.APIKeyByHash(ctx, credential.HashAPIKey(key))
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.Caller{}, devreg.Errorf(devreg.EUNAUTHORIZED, "the API key is not valid (revoked or mistyped)")
	}
	if err != nil {
		return devreg.Caller{}, err
	}
	if now := s.now(); k.LastUsedAt == nil || now.Sub(*k.LastUsedAt) > apiKeyTouchInterval {
		// last_used_at is a convenience for the key list: a busy database must not turn it into a
		// failed request, so a failed stamp is left for the next call to retry.
		_ = s.store.TouchAPIKey(ctx, k.ID, now)
	}
	return devreg.Caller{AccountID: k.AccountID, Scope: k.Scope, Name: k.Name, Source: devreg.SourceAPI}, nil
}

// CreateAPIKey makes a new API key for the caller's account. The returned key's Key field holds
// the key itself, which is shown this once.
func (s *Service) CreateAPIKey(ctx context.Context, name string, scope devreg.Scope) (devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.APIKey{}, err
	}
	name = strings.TrimSpace(name)
	if err := checkLength("name", name, 1, 200); err != nil {
		return devreg.APIKey{}, err
	}
	if !scope.Valid() {
		return devreg.APIKey{}, devreg.Errorf(devreg.EINVALID, "scope %q is not one of %s", scope, fmtScopes())
	}
	key, hash := credential.NewAPIKey()
	k := devreg.APIKey{ID: credential.RandomID("key", 16), AccountID: c.AccountID, Name: name, Scope: scope, CreatedAt: s.now(), Hash: hash}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return devreg.APIKey{}, err
	}
	k.Key = key
	return k, nil
}

// ListAPIKeys returns the caller's account's API keys (never the keys themselves).
func (s *Service) ListAPIKeys(ctx context.Context) ([]devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, err
	}
	return s.store.ListAPIKeys(ctx, c.AccountID)
}

// DeleteAPIKey revokes an API key; it stops working at once.
func (s *Service) DeleteAPIKey(ctx context.Context, id string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	if !opaqueID(id) {
		return notFound("API key", id)
	}
	return s.store.DeleteAPIKey(ctx, c.AccountID, id)
}
