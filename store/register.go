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

// Stage is a registration request staged in a temporary table on one connection. Writing it takes
// no lock on the registry's tables. SQLite fills it with multi-row inserts, PostgreSQL with COPY.
type Stage struct {
	s     *DB
	conn  *sql.Conn
	c     handle
	table string

	staged int      // how many entries are staged
	sample []string // the device IDs of the sampled entries (devreg.Sampled)

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

// registrations is what a DB's registrations share: a semaphore of how many may hold a
// connection at once (a quarter of the pool, at least one), so that bulk work never takes the
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

// NewStage opens a stage for one registration request. It waits while the registrations' share
// of the connection pool is taken.
func (s *DB) NewStage(ctx context.Context) (devreg.RegistrationStage, error) {
	release, err := s.regs.slot(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		release()
		return nil, err
	}
	return &Stage{s: s, conn: conn, c: handle{q: conn, d: s.d}, release: release}, nil
}

// create makes the stage's temporary table, once.
func (st *Stage) create(ctx context.Context) error {
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

// Add stages entries.
func (st *Stage) Add(ctx context.Context, entries []devreg.StagedEntry) error {
	if err := st.create(ctx); err != nil {
		return err
	}
	st.staged += len(entries)
	for _, e := range entries {
		if devreg.Sampled(e.Index) {
			st.sample = append(st.sample, e.DeviceID)
		}
	}
	return st.s.d.addToStage(ctx, st, entries)
}

// finish writes what is pending, and readies the stage to be read.
func (st *Stage) finish(ctx context.Context) error {
	if err := st.create(ctx); err != nil {
		return err
	}
	return st.s.d.finishStage(ctx, st)
}

// Duplicates calls add for every entry whose device ID came earlier in the request.
func (st *Stage) Duplicates(ctx context.Context, add func(devreg.Repeat)) error {
	if err := st.finish(ctx); err != nil {
		return err
	}
	// Only a request that may repeat an ID pays for this index.
	if _, err := st.c.ExecContext(ctx, `CREATE INDEX `+st.table+`_id ON `+st.table+` (device_id, idx)`); err != nil {
		return err
	}
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
		add(r)
	}
	return rows.Err()
}

// Apply registers the staged entries as plan says.
func (st *Stage) Apply(ctx context.Context, plan devreg.RegistrationPlan) (res devreg.RegisterResult, err error) {
	if err := st.finish(ctx); err != nil {
		return res, err
	}
	current := 1 + credential.HashSize*(len(plan.KeyIDs)-1) // where the current key's hash starts
	// A dry run reads the registry without taking the write lock; a real run holds it from the
	// first look at the registry to the commit, so what it decided on cannot change under it.
	q := st.c
	var tx *sql.Tx
	endLock := devreg.StartStage(ctx, "lock")
	defer endLock()
	if !plan.DryRun {
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
		if err := st.s.d.lockAccount(ctx, q, plan.AccountID); err != nil {
			return res, err
		}
	}

	account, err := accountNumber(ctx, q, plan.AccountID)
	if err != nil {
		return res, err
	}
	b := plan.Batch
	currentKey := plan.KeyIDs[len(plan.KeyIDs)-1]
	insertDevices := `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at)
		SELECT CAST(? AS TEXT), CAST(? AS BIGINT), device_id, CAST(? AS TEXT), CAST(? AS TEXT), 'enabled', CAST(? AS TEXT),
			substr(hashes, CAST(? AS INTEGER), CAST(? AS INTEGER)), CAST(? AS BIGINT)
		FROM ` + st.table + ` WHERE action = 0 ORDER BY idx` // a batch lists in the request's order
	insertArgs := []any{plan.AccountID, account, plan.DeviceTypeID, b.ID, currentKey, current, credential.HashSize, micros(b.CreatedAt)}

	endLock()
	endCheck := devreg.StartStage(ctx, "check")
	defer endCheck()
	inserted := int64(-1) // not yet
	// A certificate already on another device breaks a unique index that ON CONFLICT
	// (device_id) does not cover: a registration of certificates classifies first.
	if !plan.DryRun && st.s.d.insertFirst() && !isCertificates(plan) {
		if inserted, err = st.insertIfNew(ctx, q, account, insertDevices, insertArgs); err != nil {
			return res, err
		}
	}
	var conflicts, moved, connected int64
	if inserted == int64(st.staged) {
		res.Created = inserted
	} else if conflicts, moved, connected, err = st.classify(ctx, q, plan, account, &res); err != nil {
		return res, err
	}

	if err := st.certificatesTaken(ctx, q, plan, account); err != nil {
		return res, err
	}
	switch plan.OnConflict {
	case devreg.ConflictSkip:
		res.Skipped = conflicts
	case devreg.ConflictReplace:
		res.Replaced = conflicts
	default:
		if conflicts > 0 {
			return res, st.conflictError(ctx, q, plan, conflicts, res.Created+res.Unchanged+conflicts)
		}
	}
	endCheck()
	res.DryRun = plan.DryRun
	if plan.DryRun && plan.ResetCredentials && res.Replaced > 0 {
		if res.DeviceCredentialsDropped, err = st.deviceMadeCredentials(ctx, q, account); err != nil {
			return res, err
		}
	}
	if plan.DryRun || res.Created+res.Replaced == 0 {
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
	steps := batchSteps(plan, res.Created+res.Replaced, connectedIn, res.Created+movedIn)
	if inserted < 0 {
		steps = append(steps, step{sql: insertDevices, args: insertArgs})
	}
	if res.Replaced > 0 {
		steps = append(steps, []step{
			{sql: `UPDATE device_types SET device_count = device_count - m.n
				FROM (SELECT old_type, count(*) AS n FROM ` + st.table + ` WHERE action = 2 AND old_type <> ? GROUP BY old_type) AS m
				WHERE device_types.account_id = ? AND device_types.id = m.old_type`,
				args: []any{plan.DeviceTypeID, plan.AccountID}},
			{sql: `UPDATE batches SET device_count = device_count - m.n, connected_count = connected_count - m.c
				FROM (SELECT old_batch, count(*) AS n, sum(old_seen) AS c FROM ` + st.table + ` WHERE action = 2 GROUP BY old_batch) AS m
				WHERE batches.account_id = ? AND batches.id = m.old_batch`,
				args: []any{plan.AccountID}},
		}...)
		if seen, err := st.s.d.lockReplaced(ctx, q, st.table, plan.AccountID, account); err != nil {
			return res, err
		} else if seen > 0 { // seen since classify: the old batches' counts follow old_seen, the new one's this
			steps = append(steps, step{sql: `UPDATE batches SET connected_count = connected_count + ? WHERE account_id = ? AND id = ?`,
				args: []any{seen, plan.AccountID, b.ID}})
		}
		steps = append(steps, st.replaceCredentials(account, plan, &res.DeviceCredentialsDropped)...)
		steps = append(steps, step{sql: `UPDATE devices SET device_type_id = ?, batch_id = ?, key_id = ?, secret_hash = substr(s.hashes, CAST(? AS INTEGER), CAST(? AS INTEGER)),
				cred_id = NULL, cred_created_at = ?, cred_not_before = NULL, cred_not_after = NULL, cred_status = NULL, cred_last_used_at = NULL, cred_source = NULL
				FROM ` + st.table + ` AS s WHERE s.action = 2 AND devices.account_num = ? AND devices.device_id = s.device_id`,
			args: []any{plan.DeviceTypeID, b.ID, currentKey, current, credential.HashSize, micros(b.CreatedAt), account}})
	}
	endWrite := devreg.StartStage(ctx, "write")
	if err := runSteps(ctx, q, plan, steps); err != nil {
		return res, err
	}
	if err := insertCertificateDetails(ctx, q, account, plan.Certificates); err != nil {
		return res, err
	}
	endWrite()
	defer devreg.StartStage(ctx, "commit")()
	if err := st.recheck(ctx, q, plan); err != nil {
		return devreg.RegisterResult{}, err
	}
	if plan.Audit != nil {
		if err := st.s.appendAudit(ctx, q, plan.AccountID, plan.Audit(res)); err != nil {
			return res, err
		}
	}
	return res, tx.Commit()
}

// step is one statement of a registration's write.
type step struct {
	sql   string
	args  []any
	one   bool   // it must change one row
	count *int64 // if set, the rows it changes are added to it
}

// run runs steps in a registration's transaction. A step that must change one row and changes
// none finds the device type gone: deleted while the request was read.
func runSteps(ctx context.Context, q handle, plan devreg.RegistrationPlan, steps []step) error {
	for _, step := range steps {
		r, err := q.ExecContext(ctx, step.sql, step.args...)
		if err != nil {
			return fmt.Errorf("register devices: %w", err)
		}
		n, err := r.RowsAffected()
		if step.one && err == nil && n != 1 {
			return devreg.Errorf(devreg.ENOTFOUND, "device type %s was deleted while the request was read; nothing was registered (create the device type again, or choose another, and send the file again)", plan.DeviceTypeID)
		}
		if step.count != nil {
			if err != nil {
				return fmt.Errorf("register devices: %w", err)
			}
			*step.count += n
		}
	}
	return nil
}

// replaceCredentials are the steps that give the replaced devices the registered credential
// alone, except those the devices made themselves, which stay (so that re-running a factory file
// cannot lock out a device that has rotated its secret): a device-made credential in the device's
// row moves to the credentials table, every other credential and every expired one goes, and of
// the device-made ones the newest MaxCredentials-1 stay. Under plan.ResetCredentials every other
// credential goes, those the devices made included, and dropped counts those.
func (st *Stage) replaceCredentials(account int64, plan devreg.RegistrationPlan, dropped *int64) []step {
	replaced := `SELECT device_id FROM ` + st.table + ` WHERE action = 2`
	now := micros(plan.Batch.CreatedAt)
	if plan.ResetCredentials {
		// The registered credential then overwrites the one in the row; marking a device-made
		// one there first is only to count it.
		return []step{
			{sql: `DELETE FROM credentials WHERE account_num = ? AND device_id IN (` + replaced + `) AND source = ?`,
				args: []any{account, string(devreg.CredentialFromDevice)}, count: dropped},
			{sql: `UPDATE devices SET cred_source = NULL WHERE account_num = ? AND device_id IN (` + replaced + `) AND cred_source = ?`,
				args: []any{account, string(devreg.CredentialFromDevice)}, count: dropped},
			{sql: `DELETE FROM credentials WHERE account_num = ? AND device_id IN (` + replaced + `)`, args: []any{account}},
		}
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

// insertIfNew runs insert, which adds the staged devices, if none of a sample of the staged
// device IDs is registered, skipping those that turn out to be, and returns how many it added:
// -1 if it did not run. It runs where the dialect inserts first (see insertFirst).
func (st *Stage) insertIfNew(ctx context.Context, q handle, account int64, insert string, args []any) (int64, error) {
	if found, err := anyRegistered(ctx, q, account, st.sample); err != nil || found {
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
// the created and unchanged into res and returns the conflicts, how many of them are of another
// device type and how many have checked in.
func (st *Stage) classify(ctx context.Context, q handle, plan devreg.RegistrationPlan, account int64, res *devreg.RegisterResult) (conflicts, moved, connected int64, err error) {
	// The entry's hash under the key that made a stored hash: a resend is unchanged when the
	// secret is that of any of the device's credentials, the one in its row first.
	args := []any{plan.DeviceTypeID}
	hashUnder := func(keyColumn string) string {
		var b strings.Builder
		b.WriteString("CASE " + keyColumn)
		for i, id := range plan.KeyIDs {
			fmt.Fprintf(&b, " WHEN ? THEN substr(%s.hashes, %d, %d)", st.table, 1+credential.HashSize*i, credential.HashSize)
			args = append(args, id)
		}
		b.WriteString(" END")
		return b.String()
	}
	ownValid, extraValid := "", ""
	if plan.OnConflict == devreg.ConflictReplace {
		// A replace is asked to make the registered secret work: one that matches only a
		// credential that is disabled or outside its window is replaced, not left unchanged.
		ownValid = ownCredentialValid(plan)
		extraValid = ` AND ` + validAt("c.", plan.Batch.CreatedAt)
	}
	var sameSecret string
	if plan.ResetCredentials {
		sameSecret = `d.secret_hash = ` + hashUnder("d.key_id") + onlyRegisteredCredential
	} else {
		sameSecret = `(d.secret_hash = ` + hashUnder("d.key_id") + ownValid + ` OR EXISTS (SELECT 1 FROM credentials c
		WHERE c.account_num = d.account_num AND c.device_id = d.device_id AND c.secret_hash = ` + hashUnder("c.key_id") + extraValid + `))`
	}
	args = append(args, account, plan.Batch.ID)
	if _, err := q.ExecContext(ctx, `UPDATE `+st.table+` SET
		action = CASE WHEN d.device_type_id = ? AND `+sameSecret+` THEN 1 ELSE 2 END,
		old_type = d.device_type_id, old_batch = d.batch_id,
		old_seen = CASE WHEN d.last_seen_at IS NULL THEN 0 ELSE 1 END
		FROM devices AS d WHERE d.account_num = ? AND d.device_id = `+st.table+`.device_id AND d.batch_id <> ?`, args...); err != nil {
		return 0, 0, 0, fmt.Errorf("classify staged devices: %w", err)
	}
	// One pass over the stage counts every outcome (a GROUP BY would sort it first).
	err = q.QueryRowContext(ctx, `SELECT
		coalesce(sum(CASE WHEN action = 0 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 1 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 AND old_type <> ? THEN 1 ELSE 0 END), 0),
		coalesce(sum(CASE WHEN action = 2 THEN old_seen ELSE 0 END), 0)
		FROM `+st.table, plan.DeviceTypeID).Scan(&res.Created, &res.Unchanged, &conflicts, &moved, &connected)
	return conflicts, moved, connected, err
}

// ownCredentialValid is a condition (starting with AND) that the credential in the row of device
// d is valid at the plan's time. A replace asks for it: a resend is unchanged only if the secret
// it registers works.
func ownCredentialValid(plan devreg.RegistrationPlan) string {
	return ` AND ` + validAt("d.cred_", plan.Batch.CreatedAt)
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
func (st *Stage) deviceMadeCredentials(ctx context.Context, q handle, account int64) (int64, error) {
	replaced := `SELECT device_id FROM ` + st.table + ` WHERE action = 2`
	var n int64
	err := q.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM devices WHERE account_num = ? AND device_id IN (`+replaced+`) AND cred_source = ?) +
		(SELECT count(*) FROM credentials WHERE account_num = ? AND device_id IN (`+replaced+`) AND source = ?)`,
		account, string(devreg.CredentialFromDevice), account, string(devreg.CredentialFromDevice)).Scan(&n)
	return n, err
}

// conflictError lists the conflicting entries of a registration that may not touch them: the
// first MaxProblems, and every one to plan.Refused when it is set.
func (st *Stage) conflictError(ctx context.Context, q handle, plan devreg.RegistrationPlan, conflicts, total int64) error {
	limit := int64(devreg.MaxProblems)
	if plan.Refused != nil {
		limit = conflicts
	}
	rows, err := q.QueryContext(ctx, `SELECT idx, line, device_id, old_type FROM `+st.table+` WHERE action = 2 ORDER BY idx LIMIT ?`, limit)
	if err != nil {
		return err
	}
	defer rows.Close()
	e := &devreg.ConflictError{Count: conflicts, Total: total}
	for rows.Next() {
		var c devreg.Conflict
		if err := rows.Scan(&c.Index, &c.Line, &c.DeviceID, &c.RegisteredType); err != nil {
			return err
		}
		if plan.Refused != nil {
			plan.Refused(c)
		}
		if len(e.Conflicts) < devreg.MaxProblems {
			e.Conflicts = append(e.Conflicts, c)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return e
}

// Close drops the stage and hands its connection back.
func (st *Stage) Close() error {
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
