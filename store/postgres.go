package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver too

	"devreg"
	"devreg/credential"
)

// postgresMigrations is the directory of the embedded migrations of PostgreSQL.
const postgresMigrations = "migrations/postgres"

// postgresDialect is a PostgreSQL server, shared by several devreg servers: transactions run in
// parallel, so those that must not interleave lock what they decide on, and every statement is a
// round trip.
type postgresDialect struct{}

// openPostgres opens a pool of connections to the server at url.
func openPostgres(url string) (dialect, *sql.DB, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, nil, err
	}
	db.SetMaxOpenConns(20)
	return postgresDialect{}, db, nil
}

func (postgresDialect) close(db *sql.DB) error { return db.Close() }

// bind numbers the placeholders $1, $2, ...
func (postgresDialect) bind(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// oneOf passes the values as one array, which the planner looks up in the column's index one by
// one: a list of hundreds of parameters it plans, once the plan is generic, as a filter comparing
// every row of the account with every value (200 ms for 500 devices of 20,000, where the lookups
// take 2 ms).
func (postgresDialect) oneOf(column string, values []string) (string, []any) {
	return column + ` = ANY(?)`, []any{values}
}

// noIndex: PostgreSQL has no operator for text that hides a column from the planner, and needs
// none: with its statistics it walks the index that stops at the page.
func (postgresDialect) noIndex(column string) string { return column }

// merged: PostgreSQL 15 plans a Merge Append only over arms that are ordered themselves; without
// their own ORDER BY and LIMIT it appends every row of every arm and sorts them.
func (postgresDialect) merged(selects []string, orderBy string, limit int) string {
	arms := make([]string, len(selects))
	for i, q := range selects {
		arms[i] = fmt.Sprintf(`(%s ORDER BY %s LIMIT %d)`, q, orderBy, limit)
	}
	return fmt.Sprintf(`SELECT * FROM (%s) AS merged ORDER BY %s LIMIT %d`, strings.Join(arms, ` UNION ALL `), orderBy, limit)
}

func (postgresDialect) contains() string { return `strpos(device_id, ?) > 0` }

func (postgresDialect) byteOrder() string { return ` COLLATE "C"` }

// nextAccountNum: the identity column counts by itself.
func (postgresDialect) nextAccountNum() string { return `DEFAULT` }

func (postgresDialect) lockRows() string          { return ` FOR NO KEY UPDATE` }
func (postgresDialect) lockRowsExclusive() string { return ` FOR UPDATE` }
func (postgresDialect) lockRowsShared() string    { return ` FOR SHARE` }

func (postgresDialect) claimRows(alias string) string {
	return ` FOR UPDATE OF ` + alias + ` SKIP LOCKED`
}

func (postgresDialect) lock(ctx context.Context, q handle, query string, args ...any) error {
	_, err := q.ExecContext(ctx, query, args...)
	return err
}

func (d postgresDialect) lockDevices(ctx context.Context, q handle, accountID string, ids []string) error {
	in, args := d.oneOf("device_id", ids)
	_, err := q.ExecContext(ctx, `SELECT 1 FROM devices WHERE account_num = `+accountNum+` AND `+in+`
		ORDER BY device_id`+d.lockRows(), append([]any{accountID}, args...)...)
	return err
}

func (postgresDialect) queueLock(q stmtQueue, query string, args []any) { q.exec(query, args, nil) }

// lockAccountSQL takes a lock on the account for the rest of the transaction.
const lockAccountSQL = `SELECT pg_advisory_xact_lock(hashtext(?))`

func (postgresDialect) lockAccount(ctx context.Context, q handle, accountID string) error {
	_, err := q.ExecContext(ctx, lockAccountSQL, accountID)
	return err
}

func (postgresDialect) queueLockAccount(q stmtQueue, accountID string) {
	q.exec(lockAccountSQL, []any{accountID}, nil)
}

// writeLock returns at once: PostgreSQL writes in parallel.
func (postgresDialect) writeLock(context.Context) (func(), error) { return func() {}, nil }

// snapshot: REPEATABLE READ, which reads one snapshot from the transaction's first statement on.
func (postgresDialect) snapshot() sql.TxOptions {
	return sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
}

// beginSnapshots: the first transaction exports its snapshot (pg_export_snapshot), which each
// of the others takes as its own before its first read (SET TRANSACTION SNAPSHOT).
func (d postgresDialect) beginSnapshots(ctx context.Context, _ *DB, conns []*sql.Conn) ([]*sql.Tx, func(), error) {
	var id string
	txs, err := beginEach(ctx, conns, d.snapshot(), func(i int, tx *sql.Tx) error {
		switch {
		case len(conns) == 1:
			return nil
		case i == 0:
			return tx.QueryRowContext(ctx, `SELECT pg_export_snapshot()`).Scan(&id)
		case strings.Trim(id, "0123456789ABCDEF-") != "":
			return fmt.Errorf("PostgreSQL exported a snapshot named %q", id)
		default:
			// A command of its own, which takes no parameter; the name is PostgreSQL's, checked.
			_, err := tx.ExecContext(ctx, `SET TRANSACTION SNAPSHOT '`+id+`'`)
			return err
		}
	})
	return txs, func() { rollBack(txs) }, err
}

// inQueuedTx sends the statements in one pipeline: one round trip for all, where a transaction
// that runs them one by one pays one each. The BEGIN goes out with fn's first flush, and the
// COMMIT in a round trip of its own once the callbacks of the last flush have agreed (in the same
// pipeline it would commit what a callback refuses).
func (postgresDialect) inQueuedTx(ctx context.Context, s *DB, fn func(q stmtQueue) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		q := &pipelineQueue{conn: c}
		q.exec("BEGIN", nil, nil)
		err := fn(q)
		if err == nil {
			err = q.flush(ctx)
		}
		if err == nil {
			var tag pgconn.CommandTag
			if tag, err = c.Exec(ctx, "COMMIT"); err == nil && tag.String() != "COMMIT" {
				err = pgx.ErrTxCommitRollback // the transaction had failed: COMMIT rolled it back
			}
			if err == nil {
				return nil
			}
		}
		// Should the ROLLBACK fail too, the driver does not reuse a connection that comes back
		// to the pool in a transaction (stdlib.Conn.ResetSession).
		c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	})
}

// pipelineQueue sends its statements to PostgreSQL in one pipeline.
type pipelineQueue struct {
	stmtList
	conn *pgx.Conn
}

func (q *pipelineQueue) flush(ctx context.Context) error {
	if len(q.stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, st := range q.stmts {
		b.Queue(postgresDialect{}.bind(st.query), st.args...)
	}
	br := q.conn.SendBatch(ctx, b)
	err := q.run(func(queued) (int64, error) {
		tag, err := br.Exec()
		return tag.RowsAffected(), err
	}, func(st queued) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		return eachRow(rows, st.row)
	})
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return err
}

// queueIDsAmong looks the IDs up in the key's index one by one. Asked for device_id = ANY(ids),
// PostgreSQL planned, on a table without statistics yet (enrollments, as a group's first devices
// enrol; devices, after a large registration), a scan of every row of the account comparing each
// with every ID: 4 ms for 30 IDs among 10,000 rows, and more as the table grew. The LIMIT keeps
// it from turning the lookups into a join, which it planned the same.
func (postgresDialect) queueIDsAmong(q stmtQueue, table, lead string, arg any, ids []string, row func(scan func(...any) error) error) {
	q.query(`SELECT t.device_id FROM unnest(?::text[]) AS x(id),
		LATERAL (SELECT device_id FROM `+table+` WHERE `+lead+` AND device_id = x.id LIMIT 1) t`, []any{ids, arg}, row)
}

// createStage orders device IDs byte by byte, as devices.device_id does.
func (postgresDialect) createStage(ctx context.Context, st *stage) error {
	_, err := st.c.ExecContext(ctx, stageTableSQL(st.table, "BIGINT", "BYTEA", `TEXT COLLATE "C"`))
	return err
}

// addToStage hands entries to the request's one COPY, fed row by row as they are added.
func (postgresDialect) addToStage(ctx context.Context, st *stage, entries []devreg.StagedEntry) error {
	return st.copyAdd(ctx, entries)
}

// finishStage ends the COPY and gathers the stage's statistics, once, so that the planner joins
// it the right way round.
func (postgresDialect) finishStage(ctx context.Context, st *stage) error {
	if err := st.endCopy(); err != nil || st.analyzed {
		return err
	}
	st.analyzed = true
	_, err := st.c.ExecContext(ctx, `ANALYZE `+st.table)
	return err
}

func (postgresDialect) closeStage(st *stage) { st.endCopy() }

// readyToWrite has nothing to do: PostgreSQL writes in parallel.
func (postgresDialect) readyToWrite(context.Context, handle) (func(), error) { return func() {}, nil }

// insertFirst: a registration classifies first (see sqliteDialect.insertFirst).
func (postgresDialect) insertFirst() bool { return false }

// lockReplaced locks the replaced devices' rows before the registration touches their
// credentials, so that a credential change of one of them (which locks its row) comes wholly
// before or after the replace; the statements after the lock see what it committed.
//
// It then counts again which of them have been seen, and returns how many more there are than
// classify found. MarkSeen does not take the account's lock, so a first sighting may be written
// between classify's look and the lock; it is then counted in the old batch, and the
// registration, which takes it out of there, must count it. Last it locks the old batches, in
// order, before the registration changes their counts: MarkSeen takes batches in that order,
// byte by byte as Go sorts them, so the order here is by bytes too (COLLATE "C"), whatever the
// database's collation (in en-US, "bat_d…" comes before "bat_Z…", and the two deadlocked).
func (postgresDialect) lockReplaced(ctx context.Context, q handle, table, accountID string, account int64) (int64, error) {
	if _, err := q.ExecContext(ctx, `SELECT 1 FROM devices WHERE account_num = ? AND device_id IN (SELECT device_id FROM `+table+` WHERE action = 2)
		ORDER BY device_id FOR UPDATE`, account); err != nil {
		return 0, err
	}
	r, err := q.ExecContext(ctx, `UPDATE `+table+` SET old_seen = 1 WHERE action = 2 AND old_seen = 0 AND EXISTS (
		SELECT 1 FROM devices d WHERE d.account_num = ? AND d.device_id = `+table+`.device_id AND d.last_seen_at IS NOT NULL)`, account)
	if err != nil {
		return 0, err
	}
	more, err := r.RowsAffected()
	if err != nil {
		return 0, err
	}
	_, err = q.ExecContext(ctx, `SELECT 1 FROM batches WHERE account_id = ? AND id IN (SELECT old_batch FROM `+table+` WHERE action = 2)
		ORDER BY id COLLATE "C" FOR UPDATE`, accountID)
	return more, err
}

// lookUpChunk: each statement is a round trip.
func (postgresDialect) lookUpChunk() int { return 1000 }

// lookUpFrom types the pairs, which PostgreSQL cannot infer from VALUES.
func (postgresDialect) lookUpFrom(rows int) string {
	return `(VALUES ` + strings.TrimSuffix(strings.Repeat("(?::text, ?::bytea), ", rows), ", ") + `) AS v, devices AS d`
}

// insertAllowedIDs writes ids with one COPY into a temporary table of the transaction, then one
// INSERT of its distinct IDs.
func (postgresDialect) insertAllowedIDs(ctx context.Context, conn *sql.Conn, q handle, groupID string, ids devreg.RegistrationEntries) (int64, error) {
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

func (postgresDialect) migrations() string { return postgresMigrations }

// migrationLock is the advisory lock that lets one of several servers starting at once migrate
// while the others wait.
const migrationLock = 7_201_733_001

func (postgresDialect) lockMigrations(ctx context.Context, c handle) (func(), error) {
	if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, migrationLock); err != nil {
		return nil, err
	}
	return func() { c.ExecContext(context.Background(), `SELECT pg_advisory_unlock(?)`, migrationLock) }, nil
}

func (postgresDialect) schemaProblems(ctx context.Context, s *DB, version int) ([]string, error) {
	return s.pgSchemaProblems(ctx, version)
}

func (postgresDialect) uniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// transient: a deadlock or serialization failure, or trouble with the connection (a failed
// statement's transaction is rolled back, or its commit is in doubt). An ended context is not,
// though a deadline is a net.Error too.
func (postgresDialect) transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 40 is a transaction rollback (40001 serialization failure, 40P01 deadlock),
		// class 08 a connection exception, 57P0x the server going away, 53300 too many connections.
		return strings.HasPrefix(pe.Code, "40") || strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P0") || pe.Code == "53300"
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.As(err, &ne) || errors.As(err, &ce) || pgconn.SafeToRetry(err)
}

func (postgresDialect) backupError() error { return ErrBackupPostgres }

// insertDevices writes the entries with one COPY, in the transaction open on the stage's
// connection.
func (postgresDialect) insertDevices(ctx context.Context, st *stage, _ *sql.Tx, reg devreg.Registration, account int64, entries devreg.RegistrationEntries) error {
	rows, stop := make(chan []any, 4*stageChunk), make(chan struct{})
	src := &copySource{rows: rows}
	key, created := reg.KeyIDs[len(reg.KeyIDs)-1], micros(reg.Batch.CreatedAt)
	go func() {
		defer close(rows)
		err := entries.Replay(4*stageChunk, func(es []devreg.StagedEntry) error {
			for _, e := range es {
				hash, err := currentHash(reg, e)
				if err != nil {
					return err
				}
				select {
				case rows <- []any{reg.AccountID, account, e.DeviceID, reg.DeviceTypeID, reg.Batch.ID, "enabled", key, hash, created}:
				case <-stop:
					return context.Canceled
				}
			}
			return nil
		})
		src.setErr(err)
	}()
	err := st.conn.Raw(func(dc any) error {
		_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"},
			[]string{"account_id", "account_num", "device_id", "device_type_id", "batch_id", "status", "key_id", "secret_hash", "created_at"}, src)
		return err
	})
	close(stop)
	for range rows { // until the replay has ended
	}
	if err != nil {
		return err
	}
	return src.Err()
}

// copyAdd hands entries to the request's COPY, starting it with the first ones.
func (st *stage) copyAdd(ctx context.Context, entries []devreg.StagedEntry) error {
	if st.copyRows == nil {
		st.copyRows, st.copyDone = make(chan []any, 4*stageChunk), make(chan struct{})
		go func() {
			defer close(st.copyDone)
			st.copyErr = st.conn.Raw(func(dc any) error {
				_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{st.table},
					[]string{"idx", "line", "device_id", "hashes"}, &copySource{rows: st.copyRows})
				return err
			})
		}()
	}
	for _, e := range entries {
		hashes := e.Hashes
		if hashes == nil {
			hashes = []byte{}
		}
		select {
		case st.copyRows <- []any{int64(e.Index), int64(e.Line), e.DeviceID, hashes}:
		case <-st.copyDone:
			return st.endCopy()
		}
	}
	return nil
}

// endCopy ends the COPY, if one runs, and returns how it went.
func (st *stage) endCopy() error {
	if st.copyRows == nil {
		return nil
	}
	select {
	case <-st.copyDone:
	default:
		close(st.copyRows)
		<-st.copyDone
	}
	st.copyRows = nil
	if st.copyErr != nil {
		return fmt.Errorf("copy into the stage: %w", st.copyErr)
	}
	return nil
}

// copySource feeds pgx's CopyFrom from a channel until it is closed.
type copySource struct {
	rows <-chan []any
	row  []any

	mu  sync.Mutex
	err error // why the rows ended early, if they did
}

func (c *copySource) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

func (c *copySource) Next() bool {
	row, ok := <-c.rows
	c.row = row
	return ok
}

func (c *copySource) Values() ([]any, error) { return c.row, nil }

// Err is asked when the rows end, and also when the COPY fails before they do.
func (c *copySource) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
