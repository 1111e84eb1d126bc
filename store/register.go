package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"devreg"
	"devreg/credential"
)

// stageChunk is how many entries one write to the stage carries: one statement per row would
// spend most of a big request's time crossing from Go into the database.
const stageChunk = 200

// stage is a registration request staged in a temporary table on one connection. Writing it takes
// no lock on the registry's tables. SQLite fills it with multi-row inserts, PostgreSQL with COPY.
type stage struct {
	s     *DB
	conn  *sql.Conn
	c     handle
	table string

	staged int // how many entries are staged

	// SQLite: a full chunk's INSERT, and the rows waiting for the next.
	insert  *sql.Stmt
	pending [][]any

	// PostgreSQL: one COPY for the whole request, fed row by row as the entries are added, and
	// whether the stage's statistics are gathered.
	copyRows chan []any
	copyDone chan struct{}
	copyErr  error
	analyzed bool

	release func() // hands back the stage's registration slot
}

// registrations is what a DB's registrations share: a semaphore of how many connections they may
// hold at once (a quarter of the pool, at least one), so that bulk work never takes the
// connections device logins and small reads need.
type registrations struct {
	slots chan struct{}
}

func newRegistrations(pool int) *registrations {
	return &registrations{slots: make(chan struct{}, max(1, pool/4))}
}

// slot waits for a registration slot, without holding a connection, until ctx ends.
func (r *registrations) slot(ctx context.Context) (release func(), err error) {
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// trySlot takes a slot if one is free now, for a registration that has one already and can use
// another connection to go faster, but needs none.
func (r *registrations) trySlot() (release func(), ok bool) {
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, true
	default:
		return nil, false
	}
}

// Register registers entries as reg says, all or nothing, in one transaction: it finds which
// entries are new, unchanged or conflicting (and, where reg asks, which repeat a device ID or
// give a certificate another device holds), hands what it found to decide, and writes what decide
// makes of it, with decide's audit entry. An error from decide writes nothing and is returned. It
// waits while the registrations' share of the connection pool is taken.
//
// Two kinds of request take no stage: a file of new devices is written straight into the
// devices table, and a file sent again is looked up (see register_direct.go). Any other is staged
// in a temporary table and classified there in one statement.
func (s *DB) Register(ctx context.Context, reg devreg.Registration, entries devreg.RegistrationEntries,
	decide func(devreg.Found) (devreg.Decision, error)) (devreg.RegisterResult, error) {
	endWait := devreg.StartStage(ctx, "wait")
	st, err := s.newStage(ctx)
	endWait()
	if err != nil {
		return devreg.RegisterResult{}, err
	}
	defer st.close()
	if reg.Refused && !reg.MayRepeat {
		// Nothing to look for. Staging the entries would leave PostgreSQL's COPY holding the
		// stage's connection, on which decide's caller is read.
		return devreg.RegisterResult{}, st.refuse(ctx, reg, devreg.Found{Total: int64(entries.Len())}, decide)
	}
	if !reg.MayRepeat && entries.Len() > 0 {
		if res, done, err := st.direct(ctx, reg, entries, decide); done || err != nil {
			return res, err
		}
	}
	endStage := devreg.StartStage(ctx, "stage")
	if err := entries.Replay(stageChunk, func(es []devreg.StagedEntry) error { return st.add(ctx, es) }); err != nil {
		return devreg.RegisterResult{}, err
	}
	entries.Release()
	if reg.MayRepeat {
		f := devreg.Found{Total: int64(st.staged)}
		if f.Repeats, err = st.repeats(ctx); err != nil {
			return devreg.RegisterResult{}, err
		}
		f.EachRepeat = func(fn func(devreg.Repeat)) error { return st.eachRepeat(ctx, fn) }
		endStage()
		if f.Repeats > 0 || reg.Refused {
			return devreg.RegisterResult{}, st.refuse(ctx, reg, f, decide)
		}
	}
	endStage()
	return st.apply(ctx, reg, decide)
}

// newStage takes a registration slot and a connection for a stage.
func (s *DB) newStage(ctx context.Context) (*stage, error) {
	release, err := s.regs.slot(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		release()
		return nil, err
	}
	return &stage{s: s, conn: conn, c: handle{q: conn, d: s.d}, release: release}, nil
}

// refuse hands decide what it found of a registration that cannot be registered (repeats, or
// refused already), and returns decide's error.
func (st *stage) refuse(ctx context.Context, reg devreg.Registration, f devreg.Found, decide func(devreg.Found) (devreg.Decision, error)) error {
	var err error
	if f.Caller, err = readCaller(ctx, st.c, reg, false); err != nil {
		return err
	}
	if _, err := decide(f); err != nil {
		return err
	}
	return fmt.Errorf("register devices: decide let through a registration with %d repeated device IDs, or refused already", f.Repeats)
}

// create makes the stage's temporary table, once.
func (st *stage) create(ctx context.Context) error {
	if st.table != "" {
		return nil
	}
	st.table = "stage_" + strings.ToLower(credential.RandomString(12))
	return st.s.d.createStage(ctx, st)
}

// stageTableSQL makes a stage's table, with the dialect's names of its columns' types.
func stageTableSQL(table, integer, blob, text string) string {
	return `CREATE TEMP TABLE ` + table + ` (
		idx       ` + integer + ` PRIMARY KEY,
		line      ` + integer + ` NOT NULL,
		device_id ` + text + ` NOT NULL,
		hashes    ` + blob + ` NOT NULL,
		action    INTEGER NOT NULL DEFAULT 0, -- 0 create, 1 unchanged, 2 conflict
		old_type  TEXT,
		old_batch TEXT,
		old_seen  INTEGER NOT NULL DEFAULT 0
	)`
}

// add stages entries.
func (st *stage) add(ctx context.Context, entries []devreg.StagedEntry) error {
	if err := st.create(ctx); err != nil {
		return err
	}
	st.staged += len(entries)
	return st.s.d.addToStage(ctx, st, entries)
}

// finish writes what is pending, and readies the stage to be read.
func (st *stage) finish(ctx context.Context) error {
	if err := st.create(ctx); err != nil {
		return err
	}
	return st.s.d.finishStage(ctx, st)
}

// repeats counts the staged entries whose device ID an earlier entry had.
func (st *stage) repeats(ctx context.Context) (n int64, err error) {
	if err := st.finish(ctx); err != nil {
		return 0, err
	}
	// Only a request that may repeat an ID pays for this index.
	if _, err := st.c.ExecContext(ctx, `CREATE INDEX `+st.table+`_id ON `+st.table+` (device_id, idx)`); err != nil {
		return 0, err
	}
	err = st.c.QueryRowContext(ctx, `SELECT count(*) FROM `+st.table+` s
		WHERE EXISTS (SELECT 1 FROM `+st.table+` f WHERE f.device_id = s.device_id AND f.idx < s.idx)`).Scan(&n)
	return n, err
}

// eachRepeat hands fn, in index order, every staged entry whose device ID an earlier entry had.
func (st *stage) eachRepeat(ctx context.Context, fn func(devreg.Repeat)) error {
	rows, err := st.c.QueryContext(ctx, `SELECT s.idx, s.line, s.device_id, f.idx, f.line
		FROM `+st.table+` s JOIN `+st.table+` f ON f.device_id = s.device_id
		  AND f.idx = (SELECT min(idx) FROM `+st.table+` WHERE device_id = s.device_id)
		WHERE s.idx > f.idx ORDER BY s.idx`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r devreg.Repeat
		if err := rows.Scan(&r.Index, &r.Line, &r.DeviceID, &r.FirstIndex, &r.FirstLine); err != nil {
			return err
		}
		fn(r)
	}
	return rows.Err()
}

// apply classifies the staged entries, hands decide what it found and writes what decide makes
// of it.
func (st *stage) apply(ctx context.Context, reg devreg.Registration, decide func(devreg.Found) (devreg.Decision, error)) (res devreg.RegisterResult, err error) {
	if err := st.finish(ctx); err != nil {
		return res, err
	}
	current := 1 + credential.HashSize*(len(reg.KeyIDs)-1) // where the current key's hash starts
	// A dry run reads the registry without taking the write lock; a real run holds it from the
	// first look at the registry to the commit, so what it decided on cannot change under it.
	q := st.c
	var tx *sql.Tx
	endLock := devreg.StartStage(ctx, "lock")
	defer endLock()
	if !reg.DryRun {
		var done func()
		if done, err = st.s.d.readyToWrite(ctx, st.c); err != nil {
			return res, err
		}
		defer done()
		if tx, err = st.conn.BeginTx(ctx, nil); err != nil {
			return res, err
		}
		defer tx.Rollback() // does nothing once the transaction is over
		q = handle{q: tx, d: st.s.d}
		if err := st.s.d.lockAccount(ctx, q, reg.AccountID); err != nil {
			return res, err
		}
	}

	account, err := accountNumber(ctx, q, reg.AccountID)
	if err != nil {
		return res, err
	}
	b := reg.Batch
	currentKey := reg.KeyIDs[len(reg.KeyIDs)-1]
	insertDevices := `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at)
		SELECT CAST(? AS TEXT), CAST(? AS BIGINT), device_id, CAST(? AS TEXT), CAST(? AS TEXT), 'enabled', CAST(? AS TEXT),
			substr(hashes, CAST(? AS INTEGER), CAST(? AS INTEGER)), CAST(? AS BIGINT)
		FROM ` + st.table + ` WHERE action = 0 ORDER BY idx` // a batch lists in the request's order
	insertArgs := []any{reg.AccountID, account, reg.DeviceTypeID, b.ID, currentKey, current, credential.HashSize, micros(b.CreatedAt)}

	endLock()
	endCheck := devreg.StartStage(ctx, "check")
	defer endCheck()
	inserted := int64(-1) // not yet
	// A certificate already on another device breaks a unique index that ON CONFLICT
	// (device_id) does not cover: a registration of certificates classifies first.
	if !reg.DryRun && st.s.d.insertFirst() && !isCertificates(reg) {
		if inserted, err = st.insertIfNew(ctx, q, account, reg.Sample, insertDevices, insertArgs); err != nil {
			return res, err
		}
	}
	f := devreg.Found{Total: int64(st.staged)}
	var moved, connected int64
	if inserted == int64(st.staged) {
		f.New = inserted
	} else if moved, connected, err = st.classify(ctx, q, reg, account, &f); err != nil {
		return res, err
	}
	if f.TakenNew, f.TakenConflicting, err = st.certificatesTaken(ctx, q, reg, account); err != nil {
		return res, err
	}
	// Under credentials=reset what the replaced devices made themselves is counted before the
	// decision, with those devices held (unless it is a dry run) so that the count is exact.
	locked, seen := false, int64(0)
	if reg.Unchanged == devreg.UnchangedOnlyCredential && f.Conflicting > 0 {
		if !reg.DryRun {
			if seen, err = st.s.d.lockReplaced(ctx, q, st.table, reg.AccountID, account); err != nil {
				return res, err
			}
			locked = true
		}
		if f.DeviceCredentials, err = st.deviceMadeCredentials(ctx, q, account); err != nil {
			return res, err
		}
	}
	if f.Caller, err = readCaller(ctx, q, reg, !reg.DryRun); err != nil {
		return res, err
	}
	if reg.DryRun {
		if err := dryRunType(ctx, q, reg); err != nil {
			return res, err
		}
	}
	f.EachConflict = func(fn func(devreg.Conflict)) error { return st.eachConflict(ctx, q, fn) }
	f.EachTaken = func(replace bool, fn func(devreg.Conflict)) error { return st.eachTaken(ctx, q, account, replace, fn) }
	d, err := decide(f)
	if err != nil {
		return res, err
	}
	if f.TakenNew > 0 || d.Replace && f.TakenConflicting > 0 {
		return res, fmt.Errorf("register devices: decide let %d certificates of other devices through", f.TakenNew+f.TakenConflicting)
	}
	endCheck()
	res = f.Outcome(d)
	res.DryRun = reg.DryRun
	if reg.DryRun || res.Created+res.Replaced == 0 {
		if tx != nil {
			return res, tx.Rollback()
		}
		return res, nil
	}

	res.BatchID = b.ID
	// Replaced devices bring their check-in history to the new batch, and those that came from
	// another type join this type's count.
	var movedIn, connectedIn int64
	if res.Replaced > 0 {
		movedIn, connectedIn = moved, connected
	}
	steps := batchSteps(reg, res.Created+res.Replaced, connectedIn, res.Created+movedIn)
	if inserted < 0 {
		steps = append(steps, step{sql: insertDevices, args: insertArgs})
	}
	if res.Replaced > 0 {
		steps = append(steps, []step{
			{sql: `UPDATE device_types SET device_count = device_count - m.n
				FROM (SELECT old_type, count(*) AS n FROM ` + st.table + ` WHERE action = 2 AND old_type <> ? GROUP BY old_type) AS m
				WHERE device_types.account_id = ? AND device_types.id = m.old_type`,
				args: []any{reg.DeviceTypeID, reg.AccountID}},
			{sql: `UPDATE batches SET device_count = device_count - m.n, connected_count = connected_count - m.c
				FROM (SELECT old_batch, count(*) AS n, sum(old_seen) AS c FROM ` + st.table + ` WHERE action = 2 GROUP BY old_batch) AS m
				WHERE batches.account_id = ? AND batches.id = m.old_batch`,
				args: []any{reg.AccountID}},
		}...)
		if !locked {
			if seen, err = st.s.d.lockReplaced(ctx, q, st.table, reg.AccountID, account); err != nil {
				return res, err
			}
		}
		if seen > 0 { // seen since classify: the old batches' counts follow old_seen, the new one's this
			steps = append(steps, step{sql: `UPDATE batches SET connected_count = connected_count + ? WHERE account_id = ? AND id = ?`,
				args: []any{seen, reg.AccountID, b.ID}})
		}
		steps = append(steps, st.replaceCredentials(account, reg)...)
		steps = append(steps, step{sql: `UPDATE devices SET device_type_id = ?, batch_id = ?, key_id = ?, secret_hash = substr(s.hashes, CAST(? AS INTEGER), CAST(? AS INTEGER)),
				cred_id = NULL, cred_created_at = ?, cred_not_before = NULL, cred_not_after = NULL, cred_status = NULL, cred_last_used_at = NULL, cred_source = NULL
				FROM ` + st.table + ` AS s WHERE s.action = 2 AND devices.account_num = ? AND devices.device_id = s.device_id`,
			args: []any{reg.DeviceTypeID, b.ID, currentKey, current, credential.HashSize, micros(b.CreatedAt), account}})
	}
	endWrite := devreg.StartStage(ctx, "write")
	if err := runSteps(ctx, q, steps); err != nil {
		return res, err
	}
	if err := insertCertificateDetails(ctx, q, account, reg.Certificates); err != nil {
		return res, err
	}
	endWrite()
	defer devreg.StartStage(ctx, "commit")()
	if d.Audit != nil {
		if err := st.s.appendAudit(ctx, q, reg.AccountID, d.Audit); err != nil {
			return res, err
		}
	}
	return res, tx.Commit()
}

// step is one statement of a registration's write.
type step struct {
	sql  string
	args []any
	one  bool // it must change one row
}

// runSteps runs steps in a registration's transaction. A step that must change one row and
// changes none finds the device type gone: deleted while the request was read.
func runSteps(ctx context.Context, q handle, steps []step) error {
	for _, step := range steps {
		r, err := q.ExecContext(ctx, step.sql, step.args...)
		if err != nil {
			return fmt.Errorf("register devices: %w", err)
		}
		if !step.one {
			continue
		}
		if n, err := r.RowsAffected(); err == nil && n != 1 {
			return devreg.ErrDeviceTypeDeleted
		}
	}
	return nil
}

// replaceCredentials are the steps that give the replaced devices the registered credential
// alone, except those the devices made themselves, which stay (so that re-running a factory file
// cannot lock out a device that has rotated its secret): a device-made credential in the device's
// row moves to the credentials table, every other credential and every expired one goes, and of
// the device-made ones the newest MaxCredentials-1 stay. Under UnchangedOnlyCredential (a reset)
// every other credential goes, those the devices made included (Found.DeviceCredentials counted
// them).
func (st *stage) replaceCredentials(account int64, reg devreg.Registration) []step {
	replaced := `SELECT device_id FROM ` + st.table + ` WHERE action = 2`
	now := micros(reg.Batch.CreatedAt)
	if reg.Unchanged == devreg.UnchangedOnlyCredential {
		// The registered credential then overwrites the one in the row.
		return []step{{sql: `DELETE FROM credentials WHERE account_num = ? AND device_id IN (` + replaced + `)`, args: []any{account}}}
	}
	return []step{
		{sql: `INSERT INTO credentials (account_num, device_id, id, key_id, secret_hash, created_at, not_before, not_after, status, last_used_at, source)
			SELECT account_num, device_id, cred_id, key_id, secret_hash, cred_created_at, cred_not_before, cred_not_after,
				coalesce(cred_status, 'enabled'), cred_last_used_at, cred_source
			FROM devices WHERE account_num = ? AND device_id IN (` + replaced + `) AND cred_source = ?`,
			args: []any{account, string(devreg.CredentialFromDevice)}},
		{sql: `DELETE FROM credentials WHERE account_num = ? AND device_id IN (` + replaced + `) AND (source <> ? OR not_after <= ?)`,
			args: []any{account, string(devreg.CredentialFromDevice), now}},
		{sql: `DELETE FROM credentials WHERE account_num = ? AND device_id IN (` + replaced + `) AND id NOT IN (
				SELECT k.id FROM credentials k WHERE k.account_num = credentials.account_num AND k.device_id = credentials.device_id
				ORDER BY k.created_at DESC, k.id DESC LIMIT ?)`,
			args: []any{account, devreg.MaxCredentials - 1}},
	}
}

// insertIfNew runs insert, which adds the staged devices, if none of the sample (reg.Sample) is
// registered, skipping those that turn out to be, and returns how many it added:
// -1 if it did not run. It runs where the dialect inserts first (see insertFirst).
func (st *stage) insertIfNew(ctx context.Context, q handle, account int64, sample []string, insert string, args []any) (int64, error) {
	if found, err := anyRegistered(ctx, q, account, sample); err != nil || found {
		return -1, err
	}
	r, err := q.ExecContext(ctx, insert+` ON CONFLICT (account_num, device_id) DO NOTHING`, args...)
	if err != nil {
		return -1, fmt.Errorf("register staged devices: %w", err)
	}
	return r.RowsAffected()
}

// classify marks every staged entry as created, unchanged or conflicting with what is
// registered, in one statement, leaving alone what this registration inserted already. It counts
// them into f and returns how many of the conflicting are of another device type and how many
// have checked in.
func (st *stage) classify(ctx context.Context, q handle, reg devreg.Registration, account int64, f *devreg.Found) (moved, connected int64, err error) {
	// The entry's hash under the key that made a stored hash: a resend is unchanged when the
	// secret is that of any of the device's credentials, the one in its row first.
	args := []any{reg.DeviceTypeID}
	hashUnder := func(keyColumn string) string {
		var b strings.Builder
		b.WriteString("CASE " + keyColumn)
		for i, id := range reg.KeyIDs {
			fmt.Fprintf(&b, " WHEN ? THEN substr(%s.hashes, %d, %d)", st.table, 1+credential.HashSize*i, credential.HashSize)
			args = append(args, id)
		}
		b.WriteString(" END")
		return b.String()
	}
	ownValid, extraValid := "", ""
	if reg.Unchanged == devreg.UnchangedValidCredential {
		// A replace is asked to make the registered secret work: one that matches only a
		// credential that is disabled or outside its window is replaced, not left unchanged.
		ownValid = ownCredentialValid(reg)
		extraValid = ` AND ` + validAt("c.", reg.Batch.CreatedAt)
	}
	var sameSecret string
	if reg.Unchanged == devreg.UnchangedOnlyCredential {
		sameSecret = `d.secret_hash = ` + hashUnder("d.key_id") + onlyRegisteredCredential
	} else {
		sameSecret = `(d.secret_hash = ` + hashUnder("d.key_id") + ownValid + ` OR EXISTS (SELECT 1 FROM credentials c
		WHERE c.account_num = d.account_num AND c.device_id = d.device_id AND c.secret_hash = ` + hashUnder("c.key_id") + extraValid + `))`
	}
	args = append(args, account, reg.Batch.ID)
	if _, err := q.ExecContext(ctx, `UPDATE `+st.table+` SET
		action = CASE WHEN d.device_type_id = ? AND `+sameSecret+` THEN 1 ELSE 2 END,
		old_type = d.device_type_id, old_batch = d.batch_id,
		old_seen = CASE WHEN d.last_seen_at IS NULL THEN 0 ELSE 1 END
		FROM devices AS d WHERE d.account_num = ? AND d.device_id = `+st.table+`.device_id AND d.batch_id <> ?`, args...); err != nil {
		return 0, 0, fmt.Errorf("classify staged devices: %w", err)
	}
	// One pass over the stage counts every outcome (a GROUP BY would sort it first).
	err = q.QueryRowContext(ctx, `SELECT
		coalesce(sum(CASE WHEN action = 0 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 1 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 AND old_type <> ? THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 THEN old_seen ELSE 0 END), 0)
		FROM `+st.table, reg.DeviceTypeID).Scan(&f.New, &f.Unchanged, &f.Conflicting, &moved, &connected)
	return moved, connected, err
}

// ownCredentialValid is a condition (starting with AND) that the credential in the row of device
// d is valid at the batch's time. A replace asks for it: a resend is unchanged only if the secret
// it registers works.
func ownCredentialValid(reg devreg.Registration) string {
	return ` AND ` + validAt("d.cred_", reg.Batch.CreatedAt)
}

// onlyRegisteredCredential is a condition (starting with AND) that device d holds one credential,
// the one in its row, as a registration leaves it: enabled, without a window, from the
// registration. Under credentials=reset a resend is unchanged only then, so that sending the
// factory file again resets every device whose credentials someone else has changed.
const onlyRegisteredCredential = ` AND coalesce(d.cred_status, 'enabled') = 'enabled' AND d.cred_not_before IS NULL AND d.cred_not_after IS NULL
	AND coalesce(d.cred_source, 'registration') = 'registration'
	AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.account_num = d.account_num AND c.device_id = d.device_id)`

// deviceMadeCredentials counts the credentials the devices a registration replaces have made
// themselves: what a replace with credentials=reset drops.
func (st *stage) deviceMadeCredentials(ctx context.Context, q handle, account int64) (int64, error) {
	replaced := `SELECT device_id FROM ` + st.table + ` WHERE action = 2`
	var n int64
	err := q.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM devices WHERE account_num = ? AND device_id IN (`+replaced+`) AND cred_source = ?) +
		(SELECT count(*) FROM credentials WHERE account_num = ? AND device_id IN (`+replaced+`) AND source = ?)`,
		account, string(devreg.CredentialFromDevice), account, string(devreg.CredentialFromDevice)).Scan(&n)
	return n, err
}

// eachConflict hands fn every conflicting entry, in index order.
func (st *stage) eachConflict(ctx context.Context, q handle, fn func(devreg.Conflict)) error {
	rows, err := q.QueryContext(ctx, `SELECT idx, line, device_id, old_type FROM `+st.table+` WHERE action = 2 ORDER BY idx`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var c devreg.Conflict
		if err := rows.Scan(&c.Index, &c.Line, &c.DeviceID, &c.RegisteredType); err != nil {
			return err
		}
		fn(c)
	}
	return rows.Err()
}

// close drops the stage and hands its connection back.
func (st *stage) close() error {
	st.s.d.closeStage(st)
	var err error
	if st.table != "" {
		_, err = st.c.ExecContext(context.Background(), `DROP TABLE IF EXISTS `+st.table)
	}
	if cerr := st.conn.Close(); err == nil {
		err = cerr
	}
	st.release()
	return err
}
