package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"devreg"
	"devreg/credential"
)

// Enroll registers devices through enrollment groups at their first connections, in one
// transaction under the account's lock, the one registrations take: so that two first
// connections of the same device (on any servers) register it once, two first devices of a day
// make one batch, and a group's max_devices holds exactly. All es are of one account; the
// registry gathers those that arrive while a transaction runs into the next (group commit), which
// costs little more than one alone. Each is decided as if alone, in order (see enrollOne); the
// results are in the order of es.
func (s *DB) Enroll(ctx context.Context, es []devreg.Enrollment) ([]devreg.EnrollResult, error) {
	results := make([]devreg.EnrollResult, len(es))
	if len(es) == 0 {
		return results, nil
	}
	err := s.inTx(ctx, func(tx handle) error {
		clear(results)
		if err := s.lockAccount(ctx, tx, es[0].AccountID); err != nil {
			return err
		}
		account, err := accountNumber(ctx, tx, es[0].AccountID)
		if err != nil {
			return err
		}
		for i, e := range es {
			if e.AccountID != es[0].AccountID {
				return devreg.Errorf(devreg.EINTERNAL, "enrollments of two accounts in one transaction")
			}
			if err := s.enrollOne(ctx, tx, account, e, &results[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// enrollOne registers one device through a group, in Enroll's transaction. It checks again what
// the registry decided on (the group is open at e.Now, its pattern is still e.IDPattern, key
// e.KeyID is live), and that the ID has not enrolled before and is on the group's allow-list when
// it has one; then it counts the device in enrolled_count (only below max_devices), finds or makes
// the group's batch of e.Now's UTC day and writes the device, its enrollments row, the batch's and
// the type's device counts and e.Audit. The derived secret is the device's credential of source
// enrollment, ending after the type's rotation grace (at least devreg.MinEnrollmentCredentialLife)
// when the group is temporary. It writes nothing when the result says why not: every refusal
// comes before the first write.
func (s *DB) enrollOne(ctx context.Context, tx handle, account int64, e devreg.Enrollment, res *devreg.EnrollResult) error {
	var exists, enrolled bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE account_num = ? AND device_id = ?),
		EXISTS (SELECT 1 FROM enrollments WHERE account_num = ? AND device_id = ?)`, account, e.DeviceID, account, e.DeviceID).Scan(&exists, &enrolled); err != nil {
		return err
	}
	if exists || enrolled {
		res.Exists, res.EnrolledBefore = exists, !exists
		return nil
	}
	g, err := enrollingGroup(ctx, tx, e)
	if err != nil || g == nil {
		res.GroupClosed = g == nil
		return err
	}
	res.DeviceTypeID = g.DeviceTypeID
	if g.AllowList {
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM enrollment_allowed_ids WHERE group_id = ? AND device_id = ?`, e.GroupID, e.DeviceID).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			res.NotAllowed = true
			return nil
		case err != nil:
			return err
		}
	}
	day := e.Now.UTC().Truncate(24 * time.Hour)
	var status string
	err = tx.QueryRowContext(ctx, `SELECT id, status FROM batches WHERE enrollment_group_id = ? AND created_at >= ? AND created_at < ?
		ORDER BY created_at, id LIMIT 1`, e.GroupID, micros(day), micros(day.Add(24*time.Hour))).Scan(&res.BatchID, &status)
	switch {
	case err == nil && status != string(devreg.StatusEnabled):
		res.BatchDisabled = true
		return nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return err
	}
	// Counted only below the limit, in the statement that decides it: the account's lock
	// makes the servers take turns, and the condition makes the count the limit's judge.
	r, err := tx.ExecContext(ctx, `UPDATE enrollment_groups SET enrolled_count = enrolled_count + 1 WHERE id = ? AND enrolled_count < max_devices`, e.GroupID)
	if err != nil {
		return err
	}
	if n, err := r.RowsAffected(); err != nil || n != 1 {
		res.Full = err == nil
		return err
	}
	if res.BatchID == "" {
		b := e.Batch
		res.BatchID, res.BatchCreated = b.ID, true
		if _, err := tx.ExecContext(ctx, `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status, enrollment_group_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 'enabled', ?)`,
			b.ID, e.AccountID, g.DeviceTypeID, micros(e.Now), b.CreatedBy, string(devreg.SourceEnrollment), b.Filename, e.GroupID); err != nil {
			return err
		}
	}
	var notAfter any
	if g.Temporary {
		notAfter = micros(e.Now.Add(max(g.grace, devreg.MinEnrollmentCredentialLife)))
	}
	// Used now, by the login that enrols it: recorded here, so that the login writes nothing more.
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at,
			cred_not_after, cred_last_used_at, cred_source)
		VALUES (?, ?, ?, ?, ?, 'enabled', ?, ?, ?, ?, ?, ?)`,
		e.AccountID, account, e.DeviceID, g.DeviceTypeID, res.BatchID, e.HashKeyID, e.SecretHash, micros(e.Now),
		notAfter, micros(e.Now), string(devreg.CredentialFromEnrollment)); err != nil {
		return fmt.Errorf("enroll device %s: %w", e.DeviceID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at) VALUES (?, ?, ?, ?)`,
		account, e.DeviceID, e.GroupID, micros(e.Now)); err != nil {
		return err
	}
	if err := runSteps(ctx, tx, devreg.RegistrationPlan{DeviceTypeID: g.DeviceTypeID}, []step{
		{sql: `UPDATE batches SET device_count = device_count + 1 WHERE id = ?`, args: []any{res.BatchID}, one: true},
		{sql: `UPDATE device_types SET device_count = device_count + 1 WHERE account_id = ? AND id = ?`, args: []any{e.AccountID, g.DeviceTypeID}, one: true},
	}); err != nil {
		return err
	}
	if e.Audit != nil {
		if e.Audit.Details == nil {
			e.Audit.Details = map[string]any{}
		}
		e.Audit.Details["device_type_id"], e.Audit.Details["batch_id"], e.Audit.Details["batch_created"] = g.DeviceTypeID, res.BatchID, res.BatchCreated
		if err := s.appendAudit(ctx, tx, e.AccountID, e.Audit); err != nil {
			return err
		}
	}
	res.Registered = true
	return nil
}

// enrollGroup is what an enrollment needs of its group.
type enrollGroup struct {
	DeviceTypeID string
	AllowList    bool
	Temporary    bool
	grace        time.Duration // the device type's rotation grace
}

// enrollingGroup returns the group of e if it still registers e's device: it is open at e.Now,
// its pattern is e.IDPattern and its key e.KeyID is live; else nil.
func enrollingGroup(ctx context.Context, tx handle, e devreg.Enrollment) (*enrollGroup, error) {
	var g enrollGroup
	var pattern, status string
	var notBefore, notAfter sql.NullInt64
	var graceSeconds int64
	var keyFound bool
	var keyEnd sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT g.device_type_id, g.id_pattern, g.status, g.not_before, g.not_after, g.allow_list, g.temporary, t.rotation_grace_seconds,
			k.id IS NOT NULL, k.not_after
		FROM enrollment_groups g JOIN device_types t ON t.account_id = g.account_id AND t.id = g.device_type_id
		LEFT JOIN enrollment_group_keys k ON k.group_id = g.id AND k.id = ?
		WHERE g.id = ? AND g.account_id = ?`, e.KeyID, e.GroupID, e.AccountID).Scan(&g.DeviceTypeID, &pattern, &status, &notBefore, &notAfter,
		&g.AllowList, &g.Temporary, &graceSeconds, &keyFound, &keyEnd)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	open := devreg.EnrollmentGroup{Status: devreg.DeviceStatus(status), NotBefore: fromNullMicros(notBefore), NotAfter: fromNullMicros(notAfter)}.OpenAt(e.Now)
	if !open || pattern != e.IDPattern || !keyFound || !(devreg.EnrollmentKey{NotAfter: fromNullMicros(keyEnd)}).LiveAt(e.Now) {
		return nil, nil
	}
	g.grace = time.Duration(graceSeconds) * time.Second
	return &g, nil
}

// allowChunk is how many device IDs one of SQLite's INSERT statements puts on an allow-list.
const allowChunk = 500

// SetAllowedIDs replaces the allow-list of enrollment group groupID of device type deviceTypeID
// of the account with ids, all at once in one transaction, turns the group's allow_list on and
// appends the audit entry audit makes of the number of distinct IDs now on the list (repeats
// count once), which it returns. ENOTFOUND if there is no such group. A million IDs go in one
// COPY on PostgreSQL and in statements of allowChunk rows on SQLite, read from ids as they are
// written: memory stays bounded.
func (s *DB) SetAllowedIDs(ctx context.Context, accountID, deviceTypeID, groupID string, ids devreg.RegistrationEntries,
	audit func(allowed int64) *devreg.AuditEntry) (int64, error) {
	unlock, err := s.writeLock(ctx)
	if err != nil {
		return 0, err
	}
	defer unlock()
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // does nothing once committed
	q := handle{q: tx, pg: s.pg}
	if err := lockEnrollmentGroup(ctx, q, s.lockRows(), accountID, deviceTypeID, groupID); err != nil {
		return 0, err
	}
	if _, err := q.ExecContext(ctx, `DELETE FROM enrollment_allowed_ids WHERE group_id = ?`, groupID); err != nil {
		return 0, err
	}
	var n int64
	if s.pg {
		n, err = copyAllowedIDs(ctx, conn, q, groupID, ids)
	} else {
		n, err = insertAllowedIDs(ctx, q, groupID, ids)
	}
	if err != nil {
		return 0, fmt.Errorf("write the allow-list: %w", err)
	}
	if _, err := q.ExecContext(ctx, `UPDATE enrollment_groups SET allow_list = ? WHERE id = ?`, true, groupID); err != nil {
		return 0, err
	}
	if audit != nil {
		if err := s.appendAudit(ctx, q, accountID, audit(n)); err != nil {
			return 0, err
		}
	}
	return n, tx.Commit()
}

// lockEnrollmentGroup locks the row of an enrollment group of a device type of the account
// (lock: lockRows), or returns ENOTFOUND.
func lockEnrollmentGroup(ctx context.Context, q handle, lock, accountID, deviceTypeID, groupID string) error {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM enrollment_groups WHERE id = ? AND device_type_id = ? AND account_id = ?`+lock,
		groupID, deviceTypeID, accountID).Scan(&id)
	return notFound(err, "device type %s has no enrollment group %s", deviceTypeID, groupID)
}

// insertAllowedIDs writes ids on SQLite, allowChunk at a time; a repeat is written once.
func insertAllowedIDs(ctx context.Context, q handle, groupID string, ids devreg.RegistrationEntries) (int64, error) {
	var n int64
	args := make([]any, 0, 1+allowChunk)
	err := ids.Replay(allowChunk, func(es []devreg.StagedEntry) error {
		args = append(args[:0], groupID)
		for _, e := range es {
			args = append(args, e.DeviceID)
		}
		r, err := q.ExecContext(ctx, `INSERT OR IGNORE INTO enrollment_allowed_ids (group_id, device_id)
			SELECT ?, column1 FROM (VALUES `+strings.TrimSuffix(strings.Repeat("(?), ", len(es)), ", ")+`)`, args...)
		if err != nil {
			return err
		}
		added, err := r.RowsAffected()
		n += added
		return err
	})
	return n, err
}

// copyAllowedIDs writes ids on PostgreSQL: one COPY into a temporary table of the transaction,
// then one INSERT of its distinct IDs.
func copyAllowedIDs(ctx context.Context, conn *sql.Conn, q handle, groupID string, ids devreg.RegistrationEntries) (int64, error) {
	table := "allowed_" + strings.ToLower(credential.RandomString(12))
	if _, err := q.ExecContext(ctx, `CREATE TEMPORARY TABLE `+table+` (device_id TEXT COLLATE "C" NOT NULL) ON COMMIT DROP`); err != nil {
		return 0, err
	}
	rows, stop := make(chan []any, 4*allowChunk), make(chan struct{})
	src := &copySource{rows: rows}
	go func() {
		defer close(rows)
		src.setErr(ids.Replay(allowChunk, func(es []devreg.StagedEntry) error {
			for _, e := range es {
				select {
				case rows <- []any{e.DeviceID}:
				case <-stop:
					return context.Canceled
				}
			}
			return nil
		}))
	}()
	err := conn.Raw(func(dc any) error {
		_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{table}, []string{"device_id"}, src)
		return err
	})
	close(stop)
	for range rows { // until the replay has ended
	}
	if err == nil {
		err = src.Err()
	}
	if err != nil {
		return 0, err
	}
	r, err := q.ExecContext(ctx, `INSERT INTO enrollment_allowed_ids (group_id, device_id) SELECT DISTINCT ?::text, device_id FROM `+table, groupID)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// Reenroll deletes the enrollments rows of deviceIDs made through enrollment group groupID of
// device type deviceTypeID of the account, so that those IDs may enrol through a group again,
// and appends the audit entry audit makes of how many it deleted, which it returns. IDs that
// did not enrol through the group are left alone. ENOTFOUND if there is no such group.
func (s *DB) Reenroll(ctx context.Context, accountID, deviceTypeID, groupID string, deviceIDs []string,
	audit func(reenrolled int64) *devreg.AuditEntry) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx handle) error {
		n = 0
		if err := lockEnrollmentGroup(ctx, tx, s.lockRows(), accountID, deviceTypeID, groupID); err != nil {
			return err
		}
		account, err := accountNumber(ctx, tx, accountID)
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(deviceIDs, allowChunk) {
			in, args := tx.oneOf("device_id", chunk)
			r, err := tx.ExecContext(ctx, `DELETE FROM enrollments WHERE account_num = ? AND group_id = ? AND `+in, append([]any{account, groupID}, args...)...)
			if err != nil {
				return err
			}
			deleted, err := r.RowsAffected()
			if err != nil {
				return err
			}
			n += deleted
		}
		if audit != nil {
			return s.appendAudit(ctx, tx, accountID, audit(n))
		}
		return nil
	})
	return n, err
}
