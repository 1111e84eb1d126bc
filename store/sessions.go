package store

import (
	"context"
	"database/sql"
	"time"

	"devreg"
)

// CreateSession stores a console session for a user until expires.
func (s *DB) CreateSession(ctx context.Context, tokenHash []byte, userID string, created, expires time.Time) error {
	_, err := s.h.ExecContext(ctx, `INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		tokenHash, userID, micros(created), micros(expires))
	return err
}

// SessionUser returns the user of an unexpired session.
func (s *DB) SessionUser(ctx context.Context, tokenHash []byte, now time.Time) (devreg.User, error) {
	var u devreg.User
	var created int64
	err := s.h.QueryRowContext(ctx, `SELECT u.id, u.account_id, u.email, u.password_hash, u.created_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?`, tokenHash, micros(now)).
		Scan(&u.ID, &u.AccountID, &u.Email, &u.PasswordHash, &created)
	u.CreatedAt = fromMicros(created)
	return u, notFound(err, "session expired; log in again")
}

// DeleteSession ends a session, and any that have expired by now.
func (s *DB) DeleteSession(ctx context.Context, tokenHash []byte, now time.Time) error {
	_, err := s.h.ExecContext(ctx, `DELETE FROM sessions WHERE token_hash = ? OR expires_at <= ?`, tokenHash, micros(now))
	return err
}

// Failures returns how many failures key has in the window that started with its first failure,
// and when that window started; an expired window counts as none.
func (s *DB) Failures(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	var start int64
	var count int
	err := s.h.QueryRowContext(ctx, `SELECT window_start, count FROM failures WHERE key = ? AND window_start > ?`,
		key, micros(now.Add(-window))).Scan(&start, &count)
	if err == sql.ErrNoRows {
		return 0, time.Time{}, nil
	}
	return count, fromMicros(start), err
}

// AddFailure records a failure for key: it opens a new window at now if the last one has passed.
// It also forgets windows that have passed for any key, so the table stays small.
func (s *DB) AddFailure(ctx context.Context, key string, now time.Time, window time.Duration) error {
	return s.inTx(ctx, func(tx handle) error {
		expired := micros(now.Add(-window))
		if _, err := tx.ExecContext(ctx, `DELETE FROM failures WHERE window_start <= ?`, expired); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES (?, ?, 1)
			ON CONFLICT (key) DO UPDATE SET count = failures.count + 1`, key, micros(now))
		return err
	})
}
