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
// registry gathers those that arrive while a transaction runs into the next (group commit). Each
// is decided in order as if alone; the results are in the order of es, and nothing is written for
// one whose result does not say Registered.
//
// For each it checks again what the registry decided on (the group is open at e.Now, its pattern
// is still e.IDPattern, key e.KeyID is live), that the ID is not registered and has not enrolled
// before, and that it is on the group's allow-list when the group has one; then it counts the
// device against max_devices and max_per_hour (counted in the throttle table under e.HourKey),
// finds or makes the group's batch of e.Now's UTC day, and writes the
// device, its enrollments row, the counts and e.Audit. The derived secret is the device's
// credential of source enrollment, used now (by the login that enrols it), ending after the
// type's rotation grace (at least devreg.MinEnrollmentCredentialLife) when the group is
// temporary. The reads are a few per group and the writes a few statements for all, so that a
// transaction of hundreds costs little more than one of one.
func (s *DB) Enroll(ctx context.Context, es []devreg.Enrollment) ([]devreg.EnrollResult, error) {
	results := make([]devreg.EnrollResult, len(es))
	if len(es) == 0 {
		return results, nil
	}
	accountID := es[0].AccountID
	ids := make([]string, 0, len(es))
	for _, e := range es {
		if e.AccountID != accountID {
			return nil, devreg.Errorf(devreg.EINTERNAL, "enrollments of two accounts in one transaction")
		}
		ids = append(ids, e.DeviceID)
	}
	err := s.inTx(ctx, func(tx handle) error {
		clear(results)
		if err := s.lockAccount(ctx, tx, accountID); err != nil {
			return err
		}
		account, err := accountNumber(ctx, tx, accountID)
		if err != nil {
			return err
		}
		registered, err := idsAmong(ctx, tx, `SELECT device_id FROM devices WHERE account_num = ? AND `, account, ids)
		if err != nil {
			return err
		}
		enrolled, err := idsAmong(ctx, tx, `SELECT device_id FROM enrollments WHERE account_num = ? AND `, account, ids)
		if err != nil {
			return err
		}
		w := enrollWrites{accountID: accountID, account: account, batchCounts: map[string]int64{}, typeCounts: map[string]int64{}}
		groups := map[string]*enrollGroup{}
		for i, e := range es {
			res := &results[i]
			if registered[e.DeviceID] {
				res.Exists = true
				continue
			}
			if enrolled[e.DeviceID] {
				res.EnrolledBefore = true
				continue
			}
			g, ok := groups[e.GroupID]
			if !ok {
				if g, err = s.readEnrollGroup(ctx, tx, accountID, e.GroupID, ids); err != nil {
					return err
				}
				groups[e.GroupID] = g
			}
			if !g.admits(e) {
				res.GroupClosed = true
				continue
			}
			if g.allowList && !g.allowed[e.DeviceID] {
				res.NotAllowed = true
				continue
			}
			day := e.Now.UTC().Truncate(24 * time.Hour)
			b, ok := g.batches[day]
			if !ok {
				if b, err = readEnrollBatch(ctx, tx, e.GroupID, day); err != nil {
					return err
				}
				g.batches[day] = b
			}
			if b.id != "" && !b.enabled {
				res.BatchID, res.BatchDisabled = b.id, true
				continue
			}
			if g.enrolled >= g.maxDevices {
				res.Full = true
				continue
			}
			if !g.hourRead {
				if err := readEnrollHour(ctx, tx, g, e); err != nil {
					return err
				}
			}
			if g.hourCount <= 0 || !g.hourStart.After(e.Now.Add(-devreg.EnrollmentWindow)) { // a new window starts with this enrollment
				g.hourStart, g.hourCount = e.Now, 0
			}
			if g.hourCount >= int64(g.maxPerHour) {
				res.HourFull, res.RetryAfter = true, min(g.hourStart.Add(devreg.EnrollmentWindow).Sub(e.Now), devreg.EnrollmentWindow)
				continue
			}
			if b.id == "" {
				b.id, b.enabled = e.Batch.ID, true
				res.BatchCreated = true
				if _, err := tx.ExecContext(ctx, `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status, enrollment_group_id)
					VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 'enabled', ?)`,
					b.id, accountID, g.deviceTypeID, micros(e.Now), e.Batch.CreatedBy, string(devreg.SourceEnrollment), e.Batch.Filename, e.GroupID); err != nil {
					return err
				}
			}
			res.BatchID, res.Registered = b.id, true
			g.enrolled++
			g.added++
			g.hourCount++
			registered[e.DeviceID] = true // a second login of the same device in this transaction finds it
			res.Device = w.add(e, g, b.id, res.BatchCreated)
		}
		for id, g := range groups {
			if g.added == 0 {
				continue
			}
			// The account's lock keeps every other writer of the group's count out.
			if _, err := tx.ExecContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES (?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, count = excluded.count`,
				g.hourKey, micros(g.hourStart), g.hourCount); err != nil {
				return err
			}
			// The group's row is locked since it was read: the count cannot have moved.
			res, err := tx.ExecContext(ctx, `UPDATE enrollment_groups SET enrolled_count = enrolled_count + ? WHERE id = ? AND enrolled_count + ? <= max_devices`,
				g.added, id, g.added)
			if err := affectedOne(res, err, "enrollment group %s changed while it enrolled devices; the devices may connect again", id); err != nil {
				return err
			}
		}
		return s.writeEnrollments(ctx, tx, &w)
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

// idsAmong returns which of ids query finds: query ends in "AND " and takes one argument
// before the list, arg.
func idsAmong(ctx context.Context, tx handle, query string, arg any, ids []string) (map[string]bool, error) {
	found := map[string]bool{}
	for chunk := range slices.Chunk(ids, allowChunk) {
		in, args := tx.oneOf("device_id", chunk)
		rows, err := tx.QueryContext(ctx, query+in, append([]any{arg}, args...)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			found[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// enrollGroup is what Enroll's transaction knows of a group: as read (its row locked), and what
// the transaction did with it so far. gone: there is no such group.
type enrollGroup struct {
	gone                  bool
	deviceTypeID, pattern string
	status                devreg.DeviceStatus
	notBefore, notAfter   *time.Time
	allowList, temporary  bool
	grace                 time.Duration // the device type's rotation grace
	enrolled, maxDevices  int64
	maxPerHour            int
	hourRead              bool // the hour's count is read: hourKey, hourStart, hourCount
	hourKey               string
	hourStart             time.Time             // when the group's window of max_per_hour started
	hourCount             int64                 // devices it registered in that window, this transaction's included
	keys                  map[string]*time.Time // key ID: its end (nil: none)
	allowed               map[string]bool       // of the transaction's IDs, those on the allow-list
	batches               map[time.Time]*enrollBatch
	added                 int64 // devices this transaction enrols through it
}

// enrollBatch is a group's batch of a day: id "" if it has none yet.
type enrollBatch struct {
	id      string
	enabled bool
}

// readEnrollGroup reads group groupID of the account, locking its row, with its keys and, if it
// has an allow-list, which of ids are on it.
func (s *DB) readEnrollGroup(ctx context.Context, tx handle, accountID, groupID string, ids []string) (*enrollGroup, error) {
	g := &enrollGroup{keys: map[string]*time.Time{}, batches: map[time.Time]*enrollBatch{}}
	// The group's device type's row first, then the group's: the order in which a change of the
	// group (UpdateEnrollmentGroup) locks them. Locking both at once, in the join below, took them
	// in the planner's order, and a PATCH of the group in between deadlocked with it.
	if s.pg {
		var typeID string
		err := tx.QueryRowContext(ctx, `SELECT t.id FROM device_types t WHERE t.account_id = ?
			AND t.id = (SELECT g.device_type_id FROM enrollment_groups g WHERE g.id = ? AND g.account_id = ?)`+s.lockRows(),
			accountID, groupID, accountID).Scan(&typeID)
		if errors.Is(err, sql.ErrNoRows) {
			g.gone = true
			return g, nil
		}
		if err != nil {
			return nil, err
		}
	}
	var status string
	var notBefore, notAfter sql.NullInt64
	var graceSeconds int64
	err := tx.QueryRowContext(ctx, `SELECT g.device_type_id, g.id_pattern, g.status, g.not_before, g.not_after, g.allow_list, g.temporary,
			t.rotation_grace_seconds, g.enrolled_count, g.max_devices, g.max_per_hour
		FROM enrollment_groups g JOIN device_types t ON t.account_id = g.account_id AND t.id = g.device_type_id
		WHERE g.id = ? AND g.account_id = ?`+s.lockRows(), groupID, accountID).Scan(&g.deviceTypeID, &g.pattern, &status, &notBefore, &notAfter,
		&g.allowList, &g.temporary, &graceSeconds, &g.enrolled, &g.maxDevices, &g.maxPerHour)
	if errors.Is(err, sql.ErrNoRows) {
		g.gone = true
		return g, nil
	}
	if err != nil {
		return nil, err
	}
	g.status, g.notBefore, g.notAfter = devreg.DeviceStatus(status), fromNullMicros(notBefore), fromNullMicros(notAfter)
	g.grace = time.Duration(graceSeconds) * time.Second
	rows, err := tx.QueryContext(ctx, `SELECT id, not_after FROM enrollment_group_keys WHERE group_id = ?`, groupID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		var end sql.NullInt64
		if err := rows.Scan(&id, &end); err != nil {
			rows.Close()
			return nil, err
		}
		g.keys[id] = fromNullMicros(end)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if g.allowList {
		if g.allowed, err = idsAmong(ctx, tx, `SELECT device_id FROM enrollment_allowed_ids WHERE group_id = ? AND `, groupID, ids); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// admits reports whether group g still registers e's device: it is open at e.Now, its pattern
// is e.IDPattern and its key e.KeyID is live.
func (g *enrollGroup) admits(e devreg.Enrollment) bool {
	if g.gone || g.pattern != e.IDPattern {
		return false
	}
	end, ok := g.keys[e.KeyID]
	return ok && devreg.EnrollmentKey{NotAfter: end}.LiveAt(e.Now) &&
		devreg.EnrollmentGroup{Status: g.status, NotBefore: g.notBefore, NotAfter: g.notAfter}.OpenAt(e.Now)
}

// readEnrollHour reads the count of group g's enrollments in its current window of
// max_per_hour, kept in the throttle table under e.HourKey.
func readEnrollHour(ctx context.Context, tx handle, g *enrollGroup, e devreg.Enrollment) error {
	var start, count int64
	err := tx.QueryRowContext(ctx, `SELECT window_start, count FROM failures WHERE key = ?`, e.HourKey).Scan(&start, &count)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	g.hourRead, g.hourKey, g.hourStart, g.hourCount = true, e.HourKey, fromMicros(start), count
	return nil
}

// readEnrollBatch returns group groupID's batch of day.
func readEnrollBatch(ctx context.Context, tx handle, groupID string, day time.Time) (*enrollBatch, error) {
	var b enrollBatch
	var status string
	err := tx.QueryRowContext(ctx, `SELECT id, status FROM batches WHERE enrollment_group_id = ? AND created_at >= ? AND created_at < ?
		ORDER BY created_at, id LIMIT 1`, groupID, micros(day), micros(day.Add(24*time.Hour))).Scan(&b.id, &status)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	b.enabled = status == string(devreg.StatusEnabled)
	return &b, nil
}

// enrollWrites gathers the rows Enroll's transaction writes, to write them together.
type enrollWrites struct {
	accountID   string
	account     int64
	devices     []any // enrollDeviceColumns per device
	enrollments []any // account_num, device_id, group_id, enrolled_at per device
	batchCounts map[string]int64
	typeCounts  map[string]int64
	audits      []*devreg.AuditEntry
}

// enrollDeviceColumns are the columns of devices an enrollment writes.
const enrollDeviceColumns = `account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at, cred_not_after, cred_last_used_at, cred_source`

// add records the writes of e's enrollment through g into batchID, and returns the device as
// DeviceAuth will read it once they are written.
func (w *enrollWrites) add(e devreg.Enrollment, g *enrollGroup, batchID string, batchCreated bool) devreg.DeviceAuth {
	var notAfter any
	var end *time.Time
	if g.temporary {
		t := e.Now.Add(max(g.grace, devreg.MinEnrollmentCredentialLife))
		notAfter, end = micros(t), &t
	}
	used := e.Now
	d := devreg.DeviceAuth{DeviceTypeID: g.deviceTypeID, BatchID: batchID, Enabled: true, Credentials: []devreg.StoredCredential{{
		Credential: devreg.Credential{ID: registrationCredentialID(batchID), Kind: devreg.CredentialSecret, CreatedAt: e.Now, NotAfter: end,
			Status: devreg.StatusEnabled, LastUsedAt: &used, Source: devreg.CredentialFromEnrollment},
		KeyID: e.HashKeyID, Hash: e.SecretHash, InDevice: true,
	}}}
	w.devices = append(w.devices, w.accountID, w.account, e.DeviceID, g.deviceTypeID, batchID, string(devreg.StatusEnabled), e.HashKeyID, e.SecretHash,
		micros(e.Now), notAfter, micros(e.Now), string(devreg.CredentialFromEnrollment))
	w.enrollments = append(w.enrollments, w.account, e.DeviceID, e.GroupID, micros(e.Now))
	w.batchCounts[batchID]++
	w.typeCounts[g.deviceTypeID]++
	if e.Audit != nil {
		if e.Audit.Details == nil {
			e.Audit.Details = map[string]any{}
		}
		e.Audit.Details["device_type_id"], e.Audit.Details["batch_id"], e.Audit.Details["batch_created"] = g.deviceTypeID, batchID, batchCreated
		w.audits = append(w.audits, e.Audit)
	}
	return d
}

// enrollChunk is how many devices one INSERT of an enrollment transaction writes: 12 parameters
// each, well below both databases' limits.
const enrollChunk = 256

// writeEnrollments writes what w gathered.
func (s *DB) writeEnrollments(ctx context.Context, tx handle, w *enrollWrites) error {
	const deviceParams, enrollmentParams = 12, 4
	for chunk := range slices.Chunk(w.devices, deviceParams*enrollChunk) {
		row := "(" + placeholders(deviceParams) + ")"
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (`+enrollDeviceColumns+`) VALUES `+
			strings.TrimSuffix(strings.Repeat(row+", ", len(chunk)/deviceParams), ", "), chunk...); err != nil {
			return fmt.Errorf("enroll devices: %w", err)
		}
	}
	for chunk := range slices.Chunk(w.enrollments, enrollmentParams*enrollChunk) {
		row := "(" + placeholders(enrollmentParams) + ")"
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at) VALUES `+
			strings.TrimSuffix(strings.Repeat(row+", ", len(chunk)/enrollmentParams), ", "), chunk...); err != nil {
			return fmt.Errorf("record enrollments: %w", err)
		}
	}
	// The batches and types are locked since they were read (the groups' rows lock their types).
	for id, n := range w.batchCounts {
		res, err := tx.ExecContext(ctx, `UPDATE batches SET device_count = device_count + ? WHERE id = ?`, n, id)
		if err := affectedOne(res, err, "batch %s was deleted while devices enrolled into it; the devices may connect again", id); err != nil {
			return err
		}
	}
	for id, n := range w.typeCounts {
		res, err := tx.ExecContext(ctx, `UPDATE device_types SET device_count = device_count + ? WHERE account_id = ? AND id = ?`, n, w.accountID, id)
		if err := affectedOne(res, err, "device type %s was deleted while devices enrolled into it", id); err != nil {
			return err
		}
	}
	return s.appendAudits(ctx, tx, w.accountID, w.audits)
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
// enrolled through a group that has since been deleted are re-allowed too (no other group can);
// IDs that enrolled through another group that exists are left alone, to that group's type.
// ENOTFOUND if there is no such group.
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
			r, err := tx.ExecContext(ctx, `DELETE FROM enrollments WHERE account_num = ? AND `+in+`
				AND (group_id = ? OR NOT EXISTS (SELECT 1 FROM enrollment_groups g WHERE g.id = enrollments.group_id))`,
				append(append([]any{account}, args...), groupID)...)
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

// EnrollingGroups returns the account's enrollment groups as EnrollmentGroups(ctx, accountID, "")
// does (oldest first, each with its keys, sealed), in one query: a first connection asks it
// before anything else, so that the account's groups cost one round trip.
func (s *DB) EnrollingGroups(ctx context.Context, accountID string) ([]devreg.EnrollmentGroup, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT g.id, g.account_id, g.device_type_id, g.name, g.id_pattern, g.max_devices, g.max_per_hour, g.not_before, g.not_after,
			g.status, g.temporary, g.allow_list, g.enrolled_count, g.created_at,
			k.id, k.seal_key_id, k.sealed, k.created_at, k.not_after
		FROM enrollment_groups g LEFT JOIN enrollment_group_keys k ON k.group_id = g.id
		WHERE g.account_id = ? ORDER BY g.created_at, g.id, k.created_at, k.id`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	groups := []devreg.EnrollmentGroup{}
	for rows.Next() {
		var g devreg.EnrollmentGroup
		var notBefore, notAfter, keyCreated, keyEnd sql.NullInt64
		var status string
		var created int64
		var keyID, sealKeyID sql.NullString
		var sealed []byte
		if err := rows.Scan(&g.ID, &g.AccountID, &g.DeviceTypeID, &g.Name, &g.IDPattern, &g.MaxDevices, &g.MaxPerHour, &notBefore, &notAfter,
			&status, &g.Temporary, &g.AllowList, &g.EnrolledCount, &created, &keyID, &sealKeyID, &sealed, &keyCreated, &keyEnd); err != nil {
			return nil, err
		}
		if n := len(groups); n == 0 || groups[n-1].ID != g.ID {
			g.NotBefore, g.NotAfter, g.Status, g.CreatedAt = fromNullMicros(notBefore), fromNullMicros(notAfter), devreg.DeviceStatus(status), fromMicros(created)
			g.Keys = []devreg.EnrollmentKey{}
			groups = append(groups, g)
		}
		if keyID.Valid {
			last := &groups[len(groups)-1]
			last.Keys = append(last.Keys, devreg.EnrollmentKey{ID: keyID.String, CreatedAt: fromMicros(keyCreated.Int64), NotAfter: fromNullMicros(keyEnd),
				SealKeyID: sealKeyID.String, Sealed: sealed})
		}
	}
	return groups, rows.Err()
}
