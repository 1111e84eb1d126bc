package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"devreg"
)

// CreateAccount stores a new account with its owner (an admin) and first API key, all or nothing.
func (s *DB) CreateAccount(ctx context.Context, a devreg.Account, u devreg.User, k devreg.APIKey) error {
	return s.inTx(ctx, func(tx handle) error {
		// Accounts are numbered in order.
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, name, created_at, num) VALUES (?, ?, ?, `+s.d.nextAccountNum()+`)`,
			a.ID, a.Name, micros(a.CreatedAt)); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, account_id, email, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			u.ID, u.AccountID, u.Email, string(devreg.RoleAdmin), u.PasswordHash, micros(u.CreatedAt)); err != nil {
			if s.d.uniqueViolation(err) {
				return devreg.Errorf(devreg.ECONFLICT, "a user with email %s already exists", u.Email)
			}
			return err
		}
		if err := insertAPIKey(ctx, tx, k); err != nil {
			return err
		}
		return s.audit(ctx, tx, a.ID)
	})
}

// UserByEmail returns the user with the given email.
func (s *DB) UserByEmail(ctx context.Context, email string) (devreg.User, error) {
	u, err := scanUser(s.h.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email = ?`, email))
	return u, notFound(err, "no user with email %s", email)
}

func insertAPIKey(ctx context.Context, db handle, k devreg.APIKey) error {
	_, err := db.ExecContext(ctx, `INSERT INTO api_keys (id, account_id, name, scope, key_hash, created_at, device_type_ids, expires_at, trusts_broker_tls)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.AccountID, k.Name, string(k.Scope), k.Hash, micros(k.CreatedAt), typeList(k.DeviceTypeIDs), nullTime(k.ExpiresAt), k.TrustsBrokerTLS)
	return keyNameTaken(db.d, err, k.Name)
}

// keyNameTaken says that a key of the account has name already when err broke the unique index
// on (account_id, name). The other unique columns, the ID and the key's hash, are random.
func keyNameTaken(d dialect, err error, name string) error {
	if d.uniqueViolation(err) {
		return devreg.Errorf(devreg.ECONFLICT, "this account has an API key named %q already; choose another name", name)
	}
	return err
}

// typeList is a key's device types as the database keeps them: a JSON array, or NULL for all.
func typeList(ids []string) any {
	if ids == nil {
		return nil
	}
	return jsonList(ids)
}

// CreateAPIKey stores a new API key.
func (s *DB) CreateAPIKey(ctx context.Context, k devreg.APIKey) error {
	return s.inTx(ctx, func(tx handle) error {
		if err := insertAPIKey(ctx, tx, k); err != nil {
			return err
		}
		return s.audit(ctx, tx, k.AccountID)
	})
}

const apiKeyColumns = `id, account_id, name, scope, created_at, last_used_at, device_type_ids, expires_at, last_used_ip, trusts_broker_tls`

func scanAPIKey(row interface{ Scan(...any) error }) (devreg.APIKey, error) {
	var k devreg.APIKey
	var created int64
	var used, expires sql.NullInt64
	var types, ip sql.NullString
	if err := row.Scan(&k.ID, &k.AccountID, &k.Name, &k.Scope, &created, &used, &types, &expires, &ip, &k.TrustsBrokerTLS); err != nil {
		return k, err
	}
	k.CreatedAt, k.LastUsedAt, k.ExpiresAt = fromMicros(created), fromNullMicros(used), fromNullMicros(expires)
	if ip.Valid {
		k.LastUsedIP = &ip.String
	}
	if types.Valid {
		if err := json.Unmarshal([]byte(types.String), &k.DeviceTypeIDs); err != nil {
			return k, fmt.Errorf("API key %s: device_type_ids: %w", k.ID, err)
		}
		if k.DeviceTypeIDs == nil {
			k.DeviceTypeIDs = []string{}
		}
	}
	return k, nil
}

// APIKeyByHash returns the API key whose stored hash is hash.
func (s *DB) APIKeyByHash(ctx context.Context, hash []byte) (devreg.APIKey, error) {
	k, err := scanAPIKey(s.h.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE key_hash = ?`, hash))
	return k, notFound(err, "no such API key")
}

// TouchAPIKey records that the key was used at t from the client address ip, unless a later
// use is recorded already (servers write the uses they saw in turn, each a while after it).
func (s *DB) TouchAPIKey(ctx context.Context, id string, t time.Time, ip string) error {
	var addr any // NULL when the address is not known
	if ip != "" {
		addr = ip
	}
	_, err := s.exec(ctx, `UPDATE api_keys SET last_used_at = ?, last_used_ip = coalesce(?, last_used_ip)
		WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)`, micros(t), addr, id, micros(t))
	return err
}

// UpdateAPIKey stores a key's changed name and expiry.
func (s *DB) UpdateAPIKey(ctx context.Context, k devreg.APIKey) error {
	return keyNameTaken(s.d, s.changeOne(ctx, k.AccountID, `UPDATE api_keys SET name = ?, expires_at = ? WHERE account_id = ? AND id = ?`,
		[]any{k.Name, nullTime(k.ExpiresAt), k.AccountID, k.ID}, "no API key %s", k.ID), k.Name)
}

// APIKey returns one API key of the account.
func (s *DB) APIKey(ctx context.Context, accountID, id string) (devreg.APIKey, error) {
	k, err := scanAPIKey(s.h.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE account_id = ? AND id = ?`, accountID, id))
	return k, notFound(err, "no API key %s", id)
}

// ListAPIKeys returns the account's API keys, oldest first.
func (s *DB) ListAPIKeys(ctx context.Context, accountID string) ([]devreg.APIKey, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE account_id = ? ORDER BY created_at, id`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	keys := []devreg.APIKey{}
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// DeleteAPIKey removes an API key of the account.
func (s *DB) DeleteAPIKey(ctx context.Context, accountID, id string) error {
	return s.changeOne(ctx, accountID, `DELETE FROM api_keys WHERE account_id = ? AND id = ?`, []any{accountID, id}, "no API key %s", id)
}

// affectedOne turns an update that touched no row into a not-found error.
func affectedOne(res sql.Result, err error, format string, args ...any) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	return affectsOne(format, args...)(n)
}

// affectsOne is a stmtQueue's callback that turns an update that touched no row into a
// not-found error.
func affectsOne(format string, args ...any) func(n int64) error {
	return func(n int64) error {
		if n == 0 {
			return devreg.Errorf(devreg.ENOTFOUND, format, args...)
		}
		return nil
	}
}
