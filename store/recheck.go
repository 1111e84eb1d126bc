package store

import (
	"context"
	"database/sql"
	"errors"

	"devreg"
)

// CallerNow reads, as it is now, whom a long request runs for: the account's API key keyID, or
// for a console caller (keyID empty) whether user userID still exists, with the scope of its role
// as the key's Scope. found is false once the key or user is gone.
func (s *DB) CallerNow(ctx context.Context, accountID, keyID, userID string) (key devreg.APIKey, found bool, err error) {
	return callerNow(ctx, s.h, accountID, keyID, userID, false)
}

// callerNow is CallerNow in q. With lock, it holds the row it read until q's transaction ends,
// so that a concurrent delete or change of it waits for the commit and comes after it.
func callerNow(ctx context.Context, q handle, accountID, keyID, userID string, lock bool) (devreg.APIKey, bool, error) {
	forShare := ""
	if lock {
		forShare = q.d.lockRowsShared()
	}
	var k devreg.APIKey
	var err error
	if keyID != "" {
		k, err = scanAPIKey(q.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE account_id = ? AND id = ?`+forShare, accountID, keyID))
	} else {
		var role devreg.Role
		err = q.QueryRowContext(ctx, `SELECT role FROM users WHERE account_id = ? AND id = ?`+forShare, accountID, userID).Scan(&role)
		k.Scope = role.Scope()
	}
	if errors.Is(err, sql.ErrNoRows) {
		return devreg.APIKey{}, false, nil
	}
	if err != nil {
		return devreg.APIKey{}, false, err
	}
	return k, true, nil
}

// readCaller reads, in q, the caller reg names (nil if it names none, or once it is gone), for
// the registration's decide. With lock, the row read is held until q's transaction ends: a
// registration reads it before its audit entry, and a revocation deletes the key's row and then
// appends to the audit chain, so taking the two locks in the same order cannot deadlock with it.
func readCaller(ctx context.Context, q handle, reg devreg.Registration, lock bool) (*devreg.APIKey, error) {
	if reg.KeyID == "" && reg.UserID == "" {
		return nil, nil
	}
	k, found, err := callerNow(ctx, q, reg.AccountID, reg.KeyID, reg.UserID, lock)
	if err != nil || !found {
		return nil, err
	}
	return &k, nil
}
