package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"devreg"
)

const userColumns = `id, account_id, email, role, password_hash, created_at, last_login_at`

func scanUser(row interface{ Scan(...any) error }) (devreg.User, error) {
	var u devreg.User
	var created int64
	var login sql.NullInt64
	err := row.Scan(&u.ID, &u.AccountID, &u.Email, &u.Role, &u.PasswordHash, &created, &login)
	u.CreatedAt, u.LastLoginAt = fromMicros(created), fromNullMicros(login)
	return u, err
}

// MaxUsers bounds the users of one account: each change of a user locks them all (see
// lockUsers), which must stay cheap.
const MaxUsers = 1000

// lockUsers reads the account's users in tx and locks them (in one order, so that two changes
// cannot deadlock) until tx ends, so that a change that needs an admin to remain decides on the
// account's admins as they are when it commits: of two admins demoting each other at once, the
// second waits for the first and then finds itself the last. It returns them by ID.
func lockUsers(ctx context.Context, tx handle, accountID string) (map[string]devreg.User, error) {
	rows, err := tx.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE account_id = ? ORDER BY id`+tx.d.lockRowsExclusive(), accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := map[string]devreg.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users[u.ID] = u
	}
	return users, rows.Err()
}

// CreateUser stores a new user of an account, with the hash of its one-time link (nil for a
// user whose password is set already) valid until linkExpires, and e in the account's audit log.
func (s *DB) CreateUser(ctx context.Context, u devreg.User, linkHash []byte, linkExpires time.Time, e *devreg.AuditEntry) error {
	return s.inTx(ctx, func(tx handle) error {
		users, err := lockUsers(ctx, tx, u.AccountID)
		if err != nil {
			return err
		}
		if len(users) >= MaxUsers {
			return devreg.Errorf(devreg.ECONFLICT, "the account has %d users, as many as it may have; remove one first", len(users))
		}
		var expires any
		if linkHash != nil {
			expires = micros(linkExpires)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, account_id, email, role, password_hash, created_at, link_hash, link_expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.AccountID, u.Email, string(u.Role), u.PasswordHash, micros(u.CreatedAt), linkHash, expires); err != nil {
			if s.d.uniqueViolation(err) {
				return devreg.Errorf(devreg.ECONFLICT, "a user with email %s already exists", u.Email)
			}
			return err
		}
		return s.appendAudit(ctx, tx, u.AccountID, e)
	})
}

// ListUsers returns the account's users, oldest first.
func (s *DB) ListUsers(ctx context.Context, accountID string) ([]devreg.User, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE account_id = ? ORDER BY created_at, id`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	users := []devreg.User{}
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, rows.Err()
}

// User returns one user of the account.
func (s *DB) User(ctx context.Context, accountID, id string) (devreg.User, error) {
	u, err := scanUser(s.h.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE account_id = ? AND id = ?`, accountID, id))
	return u, notFound(err, "no user %s", id)
}

// ChangeUser changes user id of the account as decide says, in one transaction: decide gets the
// user and how many admins the account has, both as they are when the change commits (see
// lockUsers), and the change is written with its audit entry. It returns the user as changed.
func (s *DB) ChangeUser(ctx context.Context, accountID, id string, decide func(u devreg.User, admins int) (devreg.UserChange, error)) (devreg.User, error) {
	var out devreg.User
	err := s.inTx(ctx, func(tx handle) error {
		users, err := lockUsers(ctx, tx, accountID)
		if err != nil {
			return err
		}
		u, ok := users[id]
		if !ok {
			return devreg.Errorf(devreg.ENOTFOUND, "no user %s", id)
		}
		admins := 0
		for _, o := range users {
			if o.Role == devreg.RoleAdmin {
				admins++
			}
		}
		ch, err := decide(u, admins)
		if err != nil {
			return err
		}
		if ch.Delete || ch.EndSessions {
			q, args := `DELETE FROM sessions WHERE user_id = ?`, []any{id}
			if ch.KeepSession != nil {
				q, args = q+` AND token_hash <> ?`, append(args, ch.KeepSession)
			}
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return err
			}
		}
		if ch.Delete {
			if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, id); err != nil {
				return err
			}
		} else {
			if ch.Role != "" {
				u.Role = ch.Role
			}
			if ch.PasswordHash != "" {
				u.PasswordHash = ch.PasswordHash
			}
			q, args := `UPDATE users SET role = ?, password_hash = ?`, []any{string(u.Role), u.PasswordHash}
			// A new password or a new link ends the link there was; otherwise it stays.
			if ch.TokenHash != nil {
				q, args = q+`, link_hash = ?, link_expires_at = ?`, append(args, ch.TokenHash, micros(ch.TokenExpires))
			} else if ch.PasswordHash != "" {
				q += `, link_hash = NULL, link_expires_at = NULL`
			}
			if _, err := tx.ExecContext(ctx, q+` WHERE id = ?`, append(args, id)...); err != nil {
				return err
			}
		}
		out = u
		if ch.Audit == nil {
			return fmt.Errorf("change of user %s: no audit entry", id) // every change is recorded
		}
		return s.appendAudit(ctx, tx, accountID, ch.Audit)
	})
	return out, err
}

// LinkUser returns the user whose one-time link has the hash linkHash, if it has not been used
// and has not expired by now.
func (s *DB) LinkUser(ctx context.Context, linkHash []byte, now time.Time) (devreg.User, error) {
	u, err := scanUser(s.h.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE link_hash = ? AND link_expires_at > ?`, linkHash, micros(now)))
	return u, notFound(err, "the link is not valid: it was used already, has expired, or was never made")
}

// UseLink sets the password of the user whose one-time link has the hash linkHash, if the link
// has not been used and has not expired by now, and ends the link, in one statement: of two
// uses at once, one finds the link and the other does not. The user's sessions end with it. e
// makes the audit entry, for the user it returns.
func (s *DB) UseLink(ctx context.Context, linkHash []byte, passwordHash string, now time.Time, e func(devreg.User) *devreg.AuditEntry) (devreg.User, error) {
	var u devreg.User
	err := s.inTx(ctx, func(tx handle) error {
		var err error
		u, err = scanUser(tx.QueryRowContext(ctx, `UPDATE users SET password_hash = ?, link_hash = NULL, link_expires_at = NULL
			WHERE link_hash = ? AND link_expires_at > ? RETURNING `+userColumns, passwordHash, linkHash, micros(now)))
		if err != nil {
			return notFound(err, "the link is not valid: it was used already, has expired, or was never made")
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, u.ID); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, u.AccountID, e(u))
	})
	return u, err
}
