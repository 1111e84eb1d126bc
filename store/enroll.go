package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"devreg"
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
// transaction of hundreds costs little more than one of one; on PostgreSQL all the reads go out
// at once, and then all the writes (stmtQueue): with the COMMIT, three round trips where there
// were twenty, which every first connection of the account waited for (one more when a
// statement is new to the connection, to prepare it: the INSERTs differ by their row count).
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
	err := s.inQueuedTx(ctx, func(q stmtQueue) error {
		clear(results)
		r, err := s.readEnrollments(ctx, q, es, ids)
		if err != nil {
			return err
		}
		w := enrollWrites{accountID: accountID, account: r.account, batchCounts: map[string]int64{}, typeCounts: map[string]int64{}}
		for i, e := range es {
			res := &results[i]
			if r.registered[e.DeviceID] {
				res.Exists = true
				continue
			}
			if r.enrolled[e.DeviceID] {
				res.EnrolledBefore = true
				continue
			}
			g := r.groups[e.GroupID]
			if !g.admits(e) {
				res.GroupClosed = true
				continue
			}
			if g.allowList && !g.allowed[e.DeviceID] {
				res.NotAllowed = true
				continue
			}
			b := g.batches[enrollDay(e)]
			if b.id != "" && !b.enabled {
				res.BatchID, res.BatchDisabled = b.id, true
				continue
			}
			if g.enrolled >= g.maxDevices {
				res.Full = true
				continue
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
				q.exec(`INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status, enrollment_group_id)
					VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 'enabled', ?)`,
					[]any{b.id, accountID, g.deviceTypeID, micros(e.Now), e.Batch.CreatedBy, string(devreg.SourceEnrollment), e.Batch.Filename, e.GroupID}, nil)
			}
			res.BatchID, res.Registered = b.id, true
			g.enrolled++
			g.added++
			g.hourCount++
			r.registered[e.DeviceID] = true // a second login of the same device in this transaction finds it
			res.Device = w.add(e, g, b.id, res.BatchCreated)
		}
		for id, g := range r.groups {
			if g.added == 0 {
				continue
			}
			// The account's lock keeps every other writer of the group's count out.
			q.exec(`INSERT INTO failures (key, window_start, count) VALUES (?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET window_start = excluded.window_start, count = excluded.count`,
				[]any{g.hourKey, micros(g.hourStart), g.hourCount}, nil)
			// The group's row is locked since it was read: the count cannot have moved.
			q.exec(`UPDATE enrollment_groups SET enrolled_count = enrolled_count + ? WHERE id = ? AND enrolled_count + ? <= max_devices`,
				[]any{g.added, id, g.added}, affectsOne("enrollment group %s changed while it enrolled devices; the devices may connect again", id))
		}
		return s.queueEnrollments(q, &w, r)
	})
	if err != nil {
		return nil, fmt.Errorf("enroll %d devices: %w", len(es), err)
	}
	return results, nil
}

// enrollReads is what Enroll's transaction reads before it decides: all of it at once, in one
// round trip on PostgreSQL.
type enrollReads struct {
	account              int64
	accountFound         bool
	registered, enrolled map[string]bool // of the transaction's IDs, those registered and those enrolled before
	groups               map[string]*enrollGroup
	auditHead            auditHead // locked, if any enrollment has an audit entry
	auditHeadFound       bool
}

// readEnrollments reads, for es (of one account, device IDs ids), under the account's lock:
// which IDs are registered or enrolled before, and each group of es with its keys, its
// allow-list's entries among ids, its hour's count and its batches of es's days. It locks each
// group's type and then the group (the order in which UpdateEnrollmentGroup locks them), then
// the batches (see queueEnrollBatches), and last the account's audit head, which every writer
// takes last: before the writes, since the entries' hashes need it, and even when every
// enrollment is then refused (the head is written back unchanged), which costs a refused batch
// two statements more.
func (s *DB) readEnrollments(ctx context.Context, q stmtQueue, es []devreg.Enrollment, ids []string) (*enrollReads, error) {
	accountID := es[0].AccountID
	r := &enrollReads{registered: map[string]bool{}, enrolled: map[string]bool{}, groups: map[string]*enrollGroup{}}
	s.d.queueLockAccount(q, accountID)
	q.query(`SELECT num FROM accounts WHERE id = ?`, []any{accountID}, func(scan func(...any) error) error {
		r.accountFound = true
		return scan(&r.account)
	})
	const account = `account_num = (SELECT num FROM accounts WHERE id = ?)`
	s.queueIDsAmong(q, "devices", account, accountID, ids, r.registered)
	s.queueIDsAmong(q, "enrollments", account, accountID, ids, r.enrolled)
	first, last := enrollDay(es[0]), enrollDay(es[0])
	for _, e := range es {
		g, ok := r.groups[e.GroupID]
		if !ok {
			g = s.queueEnrollGroup(q, accountID, e.GroupID, ids)
			g.hourKey = e.HourKey
			q.query(`SELECT window_start, count FROM failures WHERE key = ?`, []any{e.HourKey}, func(scan func(...any) error) error {
				var start int64
				err := scan(&start, &g.hourCount)
				g.hourStart = fromMicros(start)
				return err
			})
			r.groups[e.GroupID] = g
		}
		if day := enrollDay(e); g.batches[day] == nil {
			g.batches[day] = &enrollBatch{}
			if day.Before(first) {
				first = day
			}
			if day.After(last) {
				last = day
			}
		}
	}
	s.queueEnrollBatches(q, accountID, r.groups, first, last)
	if slices.ContainsFunc(es, func(e devreg.Enrollment) bool { return e.Audit != nil }) {
		queueAuditHead(q, accountID, &r.auditHead, &r.auditHeadFound)
	}
	if err := q.flush(ctx); err != nil {
		return nil, err
	}
	if !r.accountFound {
		return nil, fmt.Errorf("account %s: %w", accountID, sql.ErrNoRows)
	}
	return r, nil
}

// queueEnrollBatches queues on q the statement that reads into groups' batches (one for each
// day they are to find) the first batch each group made on that day, from first to last, locking
// the groups' batches of those days in the order of their IDs' bytes: the order in which MarkSeen
// locks batches to count first sightings (see dialect.lockReplaced). Locked in the order of the
// enrollments, two groups' batches deadlocked with it.
func (s *DB) queueEnrollBatches(q stmtQueue, accountID string, groups map[string]*enrollGroup, first, last time.Time) {
	ids := slices.Sorted(maps.Keys(groups))
	in, args := s.d.oneOf("enrollment_group_id", ids)
	q.query(`SELECT id, status, enrollment_group_id, created_at FROM batches WHERE account_id = ? AND `+in+` AND created_at >= ? AND created_at < ?
		ORDER BY id`+s.d.byteOrder()+s.d.lockRows(), append(append([]any{accountID}, args...), micros(first), micros(last.Add(24*time.Hour))),
		func(scan func(...any) error) error {
			var id, status, groupID string
			var created int64
			if err := scan(&id, &status, &groupID, &created); err != nil {
				return err
			}
			b := groups[groupID].batches[fromMicros(created).UTC().Truncate(24*time.Hour)]
			if b == nil || b.id != "" && (b.created < created || b.created == created && b.id < id) {
				return nil // a day no enrollment is for, or a later batch of the day
			}
			b.id, b.created, b.enabled = id, created, status == string(devreg.StatusEnabled)
			return nil
		})
}

// enrollDay is the UTC day whose batch of its group e's device goes into.
func enrollDay(e devreg.Enrollment) time.Time { return e.Now.UTC().Truncate(24 * time.Hour) }

// queueIDsAmong queues on q the statements that put into found which of ids are the device_id
// of a row of table whose key (lead, device_id) starts with lead, a condition that takes one
// argument, arg.
func (s *DB) queueIDsAmong(q stmtQueue, table, lead string, arg any, ids []string, found map[string]bool) {
	s.d.queueIDsAmong(q, table, lead, arg, ids, func(scan func(...any) error) error {
		var id string
		err := scan(&id)
		found[id] = true
		return err
	})
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
	created int64 // microseconds
	enabled bool
}

// queueEnrollGroup queues on q the statements that read group groupID of the account into the
// group it returns, locking its device type's row and then its own, with its keys and which of
// ids are on its allow-list.
func (s *DB) queueEnrollGroup(q stmtQueue, accountID, groupID string, ids []string) *enrollGroup {
	g := &enrollGroup{gone: true, keys: map[string]*time.Time{}, allowed: map[string]bool{}, batches: map[time.Time]*enrollBatch{}}
	// The group's device type's row first, then the group's: the order in which a change of the
	// group (UpdateEnrollmentGroup) locks them. Locking both at once, in the join below, took them
	// in the planner's order, and a PATCH of the group in between deadlocked with it.
	s.d.queueLock(q, `SELECT t.id FROM device_types t WHERE t.account_id = ?
		AND t.id = (SELECT g.device_type_id FROM enrollment_groups g WHERE g.id = ? AND g.account_id = ?)`+s.d.lockRows(),
		[]any{accountID, groupID, accountID})
	q.query(`SELECT g.device_type_id, g.id_pattern, g.status, g.not_before, g.not_after, g.allow_list, g.temporary,
			t.rotation_grace_seconds, g.enrolled_count, g.max_devices, g.max_per_hour
		FROM enrollment_groups g JOIN device_types t ON t.account_id = g.account_id AND t.id = g.device_type_id
		WHERE g.id = ? AND g.account_id = ?`+s.d.lockRows(), []any{groupID, accountID}, func(scan func(...any) error) error {
		var status string
		var notBefore, notAfter sql.NullInt64
		var graceSeconds int64
		if err := scan(&g.deviceTypeID, &g.pattern, &status, &notBefore, &notAfter,
			&g.allowList, &g.temporary, &graceSeconds, &g.enrolled, &g.maxDevices, &g.maxPerHour); err != nil {
			return err
		}
		g.gone = false
		g.status, g.notBefore, g.notAfter = devreg.DeviceStatus(status), fromNullMicros(notBefore), fromNullMicros(notAfter)
		g.grace = time.Duration(graceSeconds) * time.Second
		return nil
	})
	q.query(`SELECT id, not_after FROM enrollment_group_keys WHERE group_id = ?`, []any{groupID}, func(scan func(...any) error) error {
		var id string
		var end sql.NullInt64
		err := scan(&id, &end)
		g.keys[id] = fromNullMicros(end)
		return err
	})
	// Read whether or not the group has an allow-list (known only once read): a group without
	// one has no entries.
	s.queueIDsAmong(q, "enrollment_allowed_ids", "group_id = ?", groupID, ids, g.allowed)
	return g
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

// queueEnrollments queues on q the statements that write what w gathered, and w's audit entries
// after the head r read.
func (s *DB) queueEnrollments(q stmtQueue, w *enrollWrites, r *enrollReads) error {
	const deviceParams, enrollmentParams = 12, 4
	for chunk := range slices.Chunk(w.devices, deviceParams*enrollChunk) {
		row := "(" + placeholders(deviceParams) + ")"
		q.exec(`INSERT INTO devices (`+enrollDeviceColumns+`) VALUES `+strings.TrimSuffix(strings.Repeat(row+", ", len(chunk)/deviceParams), ", "), chunk, nil)
	}
	for chunk := range slices.Chunk(w.enrollments, enrollmentParams*enrollChunk) {
		row := "(" + placeholders(enrollmentParams) + ")"
		q.exec(`INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at) VALUES `+
			strings.TrimSuffix(strings.Repeat(row+", ", len(chunk)/enrollmentParams), ", "), chunk, nil)
	}
	// The batches and types are locked since they were read (the groups' rows lock their types).
	for id, n := range w.batchCounts {
		q.exec(`UPDATE batches SET device_count = device_count + ? WHERE id = ?`, []any{n, id},
			affectsOne("batch %s was deleted while devices enrolled into it; the devices may connect again", id))
	}
	for id, n := range w.typeCounts {
		q.exec(`UPDATE device_types SET device_count = device_count + ? WHERE account_id = ? AND id = ?`, []any{n, w.accountID, id},
			affectsOne("device type %s was deleted while devices enrolled into it", id))
	}
	if !r.auditHeadFound {
		if len(w.audits) > 0 {
			return devreg.Errorf(devreg.EINTERNAL, "account %s has no audit head", w.accountID)
		}
		return nil
	}
	return queueAudits(q, w.accountID, r.auditHead, w.audits)
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
	unlock, err := s.d.writeLock(ctx)
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
	q := handle{q: tx, d: s.d}
	if err := lockEnrollmentGroup(ctx, q, accountID, deviceTypeID, groupID); err != nil {
		return 0, err
	}
	if _, err := q.ExecContext(ctx, `DELETE FROM enrollment_allowed_ids WHERE group_id = ?`, groupID); err != nil {
		return 0, err
	}
	n, err := s.d.insertAllowedIDs(ctx, conn, q, groupID, ids)
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
// (lockRows), or returns ENOTFOUND.
func lockEnrollmentGroup(ctx context.Context, q handle, accountID, deviceTypeID, groupID string) error {
	var id string
	err := q.QueryRowContext(ctx, `SELECT id FROM enrollment_groups WHERE id = ? AND device_type_id = ? AND account_id = ?`+q.d.lockRows(),
		groupID, deviceTypeID, accountID).Scan(&id)
	return notFound(err, "device type %s has no enrollment group %s", deviceTypeID, groupID)
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
		if err := lockEnrollmentGroup(ctx, tx, accountID, deviceTypeID, groupID); err != nil {
			return err
		}
		account, err := accountNumber(ctx, tx, accountID)
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(deviceIDs, allowChunk) {
			in, args := s.d.oneOf("device_id", chunk)
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
