package registry

import (
	"context"
	"net/mail"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
)

// NewAccount creates an account, its owner (who logs in to the console with email and password)
// and a first API key with the admin scope, which it returns; it is not stored anywhere readable.
func (s *Service) NewAccount(ctx context.Context, name, email, password string) (devreg.Account, string, error) {
	name, email = strings.TrimSpace(name), devreg.NormalizeEmail(email)
	if err := checkName("name", name, 1, 200); err != nil {
		return devreg.Account{}, "", err
	}
	if err := checkName("email", email, 1, 320); err != nil { // the console shows it as a name
		return devreg.Account{}, "", err
	}
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email || len(email) > 320 {
		return devreg.Account{}, "", devreg.Errorf(devreg.EINVALID, "email %q is not an email address", email)
	}
	if len(password) < 8 {
		return devreg.Account{}, "", devreg.Errorf(devreg.EINVALID, "password must be at least 8 characters long")
	}
	now := s.now()
	a := devreg.Account{ID: credential.RandomID("acc", 16), Name: name, CreatedAt: now}
	u := devreg.User{ID: credential.RandomID("usr", 16), AccountID: a.ID, Email: email, PasswordHash: s.HashPassword(password), CreatedAt: now}
	key, hash := credential.NewAPIKey()
	k := devreg.APIKey{ID: credential.RandomID("key", 16), AccountID: a.ID, Name: "owner (" + email + ")", Scope: devreg.ScopeAdmin, CreatedAt: now, Hash: hash}
	ctx = s.audited(ctx, cliActor, "account.create", devreg.AuditObject{Type: "account", ID: a.ID},
		map[string]any{"name": a.Name, "email": email, "api_key_id": k.ID, "api_key_scope": string(k.Scope)})
	if err := s.store.CreateAccount(ctx, a, u, k); err != nil {
		return devreg.Account{}, "", err
	}
	return a, key, nil
}

// apiKeyTouchInterval is how stale an API key's last_used_at and last_used_ip may get, so that
// a busy factory station or broker cluster does not write to the database on every call.
const apiKeyTouchInterval = time.Minute

// AuthenticateAPIKey returns the caller an API key stands for. An expired key answers
// EKEYEXPIRED.
func (s *Service) AuthenticateAPIKey(ctx context.Context, key string) (devreg.Caller, error) {
	hash := string(credential.HashAPIKey(key))
	k, err := s.apiKeys.load(hash, func() (devreg.APIKey, error) { return s.store.APIKeyByHash(ctx, []byte(hash)) }, nil)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.Caller{}, devreg.Errorf(devreg.EUNAUTHORIZED, "the API key is not valid (revoked or mistyped)")
	}
	if err != nil {
		return devreg.Caller{}, err
	}
	now := s.now()
	if k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) {
		return devreg.Caller{}, devreg.Errorf(devreg.EKEYEXPIRED, "the API key %s (%s) expired at %s; ask an administrator for a new key or a later expiry",
			k.ID, k.Name, k.ExpiresAt.Format(time.RFC3339))
	}
	if ip := devreg.ClientIPFromContext(ctx); s.keyUsed(k, now, ip) {
		// last_used_at is a convenience for the key list: a busy database must not turn it into a
		// failed request, so a failed stamp is left for the next one, a minute later.
		_ = s.store.TouchAPIKey(ctx, k.ID, now, ip)
	}
	return devreg.Caller{AccountID: k.AccountID, Scope: k.Scope, Name: k.Name, Source: devreg.SourceAPI, KeyID: k.ID, DeviceTypeIDs: k.DeviceTypeIDs,
		TrustsBrokerTLS: k.TrustsBrokerTLS}, nil
}

// maxKeyTypes bounds the device types one key may be restricted to.
const maxKeyTypes = 100

// CreateAPIKey makes a new API key for the caller's account, optionally restricted to device
// types of the account (not with scope admin) and expiring. The returned key's Key field holds
// the key itself, which is shown this once.
func (s *Service) CreateAPIKey(ctx context.Context, nk devreg.NewAPIKey) (devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.APIKey{}, err
	}
	name := strings.TrimSpace(nk.Name)
	if err := checkName("name", name, 1, 200); err != nil {
		return devreg.APIKey{}, err
	}
	if !nk.Scope.Valid() {
		return devreg.APIKey{}, devreg.Errorf(devreg.EINVALID, "scope %q is not one of %s", nk.Scope, fmtScopes())
	}
	if nk.TrustsBrokerTLS && nk.Scope != devreg.ScopeBroker {
		return devreg.APIKey{}, devreg.Errorf(devreg.EINVALID, "trusts_broker_tls is for a key with scope broker, not %s: it lets the key's holder log devices in by a common name alone", nk.Scope)
	}
	now := s.now()
	if nk.ExpiresAt != nil && !nk.ExpiresAt.After(now) {
		return devreg.APIKey{}, devreg.Errorf(devreg.EINVALID, "expires_at (%s) must be in the future; leave it out for a key that does not expire", nk.ExpiresAt.Format(time.RFC3339))
	}
	types, err := s.keyTypes(ctx, c, nk)
	if err != nil {
		return devreg.APIKey{}, err
	}
	key, hash := credential.NewAPIKey()
	k := devreg.APIKey{ID: credential.RandomID("key", 16), AccountID: c.AccountID, Name: name, Scope: nk.Scope, CreatedAt: now, Hash: hash,
		DeviceTypeIDs: types, ExpiresAt: nk.ExpiresAt, TrustsBrokerTLS: nk.TrustsBrokerTLS}
	ctx = s.audited(ctx, actorOf(c), "apikey.create", devreg.AuditObject{Type: "apikey", ID: k.ID}, keyFields(k))
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return devreg.APIKey{}, err
	}
	k.Key = key
	return k, nil
}

// keyTypes checks the device types a new key is to be restricted to: only a key below admin may
// be, and only to existing types of the account, each once.
func (s *Service) keyTypes(ctx context.Context, c devreg.Caller, nk devreg.NewAPIKey) ([]string, error) {
	if nk.DeviceTypeIDs == nil {
		return nil, nil
	}
	if nk.Scope == devreg.ScopeAdmin {
		return nil, devreg.Errorf(devreg.EINVALID, "an admin key cannot be restricted to device types; use scope register, read or broker")
	}
	if len(nk.DeviceTypeIDs) == 0 || len(nk.DeviceTypeIDs) > maxKeyTypes {
		return nil, devreg.Errorf(devreg.EINVALID, "device_type_ids must list 1 to %d device types; leave it out for a key that reaches every type", maxKeyTypes)
	}
	var types []string
	for _, id := range nk.DeviceTypeIDs {
		if slices.Contains(types, id) {
			continue
		}
		if !opaqueID(id) {
			return nil, devreg.Errorf(devreg.EINVALID, "device_type_ids: there is no device type %q in this account; GET /api/v1/devicetypes lists them", id)
		}
		if _, err := s.store.DeviceType(ctx, c.AccountID, id); devreg.ErrorCode(err) == devreg.ENOTFOUND {
			return nil, devreg.Errorf(devreg.EINVALID, "device_type_ids: there is no device type %s in this account; GET /api/v1/devicetypes lists them", id)
		} else if err != nil {
			return nil, err
		}
		types = append(types, id)
	}
	return types, nil
}

// UpdateAPIKey renames an API key or changes when it expires, and returns it.
func (s *Service) UpdateAPIKey(ctx context.Context, id string, u devreg.APIKeyUpdate) (devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.APIKey{}, err
	}
	if !opaqueID(id) {
		return devreg.APIKey{}, notFound("API key", id)
	}
	k, err := s.store.APIKey(ctx, c.AccountID, id)
	if err != nil {
		return k, err
	}
	before := keyFields(k)
	if u.Name != nil {
		k.Name = strings.TrimSpace(*u.Name)
		if err := checkName("name", k.Name, 1, 200); err != nil {
			return k, err
		}
	}
	if u.ClearExpiry {
		k.ExpiresAt = nil
	} else if u.ExpiresAt != nil {
		if !u.ExpiresAt.After(s.now()) {
			return k, devreg.Errorf(devreg.EINVALID, "expires_at (%s) must be in the future; set it to null for a key that does not expire", u.ExpiresAt.Format(time.RFC3339))
		}
		k.ExpiresAt = u.ExpiresAt
	}
	diff := change(before, keyFields(k))
	if unchanged(diff) {
		return k, nil // nothing to change, nothing to record
	}
	ctx = s.audited(ctx, actorOf(c), "apikey.update", devreg.AuditObject{Type: "apikey", ID: k.ID}, diff)
	defer s.apiKeys.forget(func(kept devreg.APIKey) bool { return kept.ID == k.ID })
	return k, s.store.UpdateAPIKey(ctx, k)
}

// keyFields are an API key's fields as its audit entries show them (never the key).
func keyFields(k devreg.APIKey) map[string]any {
	var expires any
	if k.ExpiresAt != nil {
		expires = k.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	f := map[string]any{"name": k.Name, "scope": string(k.Scope), "device_type_ids": k.DeviceTypeIDs, "expires_at": expires}
	if k.TrustsBrokerTLS { // only then, so that the entries of every other key read as they did
		f["trusts_broker_tls"] = true
	}
	return f
}

// ListAPIKeys returns the caller's account's API keys (never the keys themselves).
func (s *Service) ListAPIKeys(ctx context.Context) ([]devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, err
	}
	return s.store.ListAPIKeys(ctx, c.AccountID)
}

// APIKey returns one of the caller's account's API keys (never the key itself).
func (s *Service) APIKey(ctx context.Context, id string) (devreg.APIKey, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.APIKey{}, err
	}
	if !opaqueID(id) {
		return devreg.APIKey{}, notFound("API key", id)
	}
	return s.store.APIKey(ctx, c.AccountID, id)
}

// DeleteAPIKey revokes an API key; it stops working at once here, and within hotTTL on the other
// servers of the database.
func (s *Service) DeleteAPIKey(ctx context.Context, id string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	if !opaqueID(id) {
		return notFound("API key", id)
	}
	ctx = s.audited(ctx, actorOf(c), "apikey.delete", devreg.AuditObject{Type: "apikey", ID: id}, nil)
	defer s.apiKeys.forget(func(kept devreg.APIKey) bool { return kept.ID == id })
	return s.store.DeleteAPIKey(ctx, c.AccountID, id)
}
