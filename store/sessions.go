package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"devreg"
)

// CreateSession stores a console session for a user until expires, and the login's time as the
// user's last, if the user's password hash is still passwordHash, the one the login checked:
// else EUNAUTHORIZED, and nothing is stored. A reset or change of the password that commits while
// the login checks it (which takes a while, and waits for a slot) ends the sessions there are;
// the login must not add one after it.
func (s *DB) CreateSession(ctx context.Context, tokenHash []byte, userID, passwordHash string, created, expires time.Time) error {
	return s.inTx(ctx, func(tx handle) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, created_at, expires_at) SELECT ?, ?, ?, ?
			WHERE EXISTS (SELECT 1 FROM users WHERE id = ? AND password_hash = ?)`,
			tokenHash, userID, micros(created), micros(expires), userID, passwordHash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return devreg.Errorf(devreg.EUNAUTHORIZED, "the user's password changed, or the user was removed, while the login checked it")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET last_login_at = ? WHERE id = ?`, micros(created), userID); err != nil {
			return err
		}
		if devreg.AuditFromContext(ctx) == nil {
			return nil
		}
		var accountID string
		if err := tx.QueryRowContext(ctx, `SELECT account_id FROM users WHERE id = ?`, userID).Scan(&accountID); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}

// SessionUser returns the user of an unexpired session, as it is now: its role is read on every
// request, so that a change of role holds from the user's next request on, on every server.
func (s *DB) SessionUser(ctx context.Context, tokenHash []byte, now time.Time) (devreg.User, error) {
	u, err := scanUser(s.h.QueryRowContext(ctx, `SELECT u.id, u.account_id, u.email, u.role, u.password_hash, u.created_at, u.last_login_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?`, tokenHash, micros(now)))
	return u, notFound(err, "session expired; log in again")
}

// DeleteSession ends a session, and any that have expired by now.
func (s *DB) DeleteSession(ctx context.Context, tokenHash []byte, now time.Time) error {
	_, err := s.exec(ctx, `DELETE FROM sessions WHERE token_hash = ? OR expires_at <= ?`, tokenHash, micros(now))
	return err
}

// Failures returns how many attempts key has counted in its current window, and when that
// window started; a window that has passed counts none.
func (s *DB) Failures(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	var start int64
	var count int
	err := s.h.QueryRowContext(ctx, `SELECT window_start, count FROM failures WHERE key = ? AND window_start > ?`,
		key, micros(now.Add(-window))).Scan(&start, &count)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, time.Time{}, nil
	}
	return count, fromMicros(start), err
}

// ReserveAttempt counts an attempt for key before it is checked, in one statement, so that
// parallel attempts cannot all read a count below the limit and all be checked. It returns how
// many attempts the window now holds, this one included, and when the window started. A window
// that has passed, or holds nothing (its attempts all succeeded), starts afresh at now, so that a
// window always starts with the first of its failures. A success gives its attempt back with
// ReleaseAttempt.
func (s *DB) ReserveAttempt(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	s.sweepFailures(ctx, key, now, window)
	expired := micros(now.Add(-window))
	var count int
	var start int64
	unlock, err := s.d.writeLock(ctx)
	if err != nil {
		return 0, time.Time{}, err
	}
	defer unlock()
	err = s.h.QueryRowContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES (?, ?, 1)
		ON CONFLICT (key) DO UPDATE SET
			count = CASE WHEN failures.window_start <= ? OR failures.count <= 0 THEN 1 ELSE failures.count + 1 END,
			window_start = CASE WHEN failures.window_start <= ? OR failures.count <= 0 THEN excluded.window_start ELSE failures.window_start END
		RETURNING count, window_start`, key, micros(now), expired, expired).Scan(&count, &start)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("count an attempt: %w", err)
	}
	return count, fromMicros(start), nil
}

// ReleaseAttempt gives back an attempt that ReserveAttempt counted in the window that started
// at windowStart, because it succeeded. If that window has been replaced by a newer one, the
// attempt is not in it and nothing changes.
func (s *DB) ReleaseAttempt(ctx context.Context, key string, windowStart time.Time) error {
	_, err := s.exec(ctx, `UPDATE failures SET count = count - 1 WHERE key = ? AND window_start = ? AND count > 0`,
		key, micros(windowStart))
	return err
}

// sweepOdds is one in how many attempts also sweeps: often enough that the table holds little
// more than one window's worth of keys, rarely enough that sweeping costs nothing next to the
// attempts. Chance rather than a timer keeps the store free of state, and several servers on one
// database sweep in proportion to the attempts each takes.
const sweepOdds = 64

// sweepFailures deletes now and then the windows of key's kind (the part before the first ':',
// such as "login") that have passed, so that the memory the throttles take stays bounded by what
// one window brings in. Kinds may have windows of different lengths, so each kind sweeps only its
// own keys. A failed sweep is left to the next one: it must not turn an attempt into an error.
func (s *DB) sweepFailures(ctx context.Context, key string, now time.Time, window time.Duration) {
	if rand.IntN(sweepOdds) != 0 {
		return
	}
	kind, _, _ := strings.Cut(key, ":")
	// The keys of a kind run from "kind:" up to, not including, "kind;".
	s.exec(ctx, `DELETE FROM failures WHERE window_start <= ? AND key >= ? AND key < ?`,
		micros(now.Add(-window)), kind+":", kind+";")
}
