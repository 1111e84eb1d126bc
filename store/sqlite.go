package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"devreg"
)

// SQLite page cache sizes in KiB: each connection's, and that of the one connection writing a
// registration, which touches pages all over the unique index of device IDs. SQLite writes one
// transaction at a time, so at most one connection has the bigger cache, and it gives the memory
// back after. 64 MiB made a million devices with IDs spread like UUIDs about 8% faster than 16
// MiB, at 95 MB more peak memory; 32 MiB is the middle. The connections of a look-up share one
// connection's (beginSnapshots).
const (
	cacheKiB         = 16384
	registerCacheKiB = 32768
)

// writeNew makes file, private, with image as its content, unless file is there already. The
// image is written beside it and linked into place whole, so that another Open of the same new
// file never reads half of it.
func writeNew(file string, image []byte) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(file), ".devreg-new-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(image)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(f.Name(), file)
	}
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	return err
}

// cacheSize is PRAGMA cache_size's value for kib KiB.
func cacheSize(kib int) string { return strconv.Itoa(-kib) }

// sqliteMigrations is the directory of the embedded migrations of SQLite.
const sqliteMigrations = "migrations/sqlite"

// sqliteDialect is the embedded SQLite database, a file that one connection writes at a time:
// no other writer falls between two statements of a transaction, so its locks do nothing.
type sqliteDialect struct {
	// The turn to write. SQLite lets one connection write at a time, and one that finds the
	// database locked sleeps and retries (busy_timeout) with sleeps of up to 100ms; this
	// process's writers wait in line here instead, first come first served, so a device login's
	// small write follows a registration's transaction at once rather than at the next retry.
	writer chan struct{}

	// A registration's commit leaves the write-ahead log to be copied into the database by a
	// goroutine, not by the request that wrote it.
	checkpoints    chan struct{}
	stop           chan struct{} // closed by close
	checkpointDone chan struct{}
	closeOnce      sync.Once

	dirLock *DirLock // the shared lock on the data directory, held until close
}

// openSQLite opens the SQLite file that url names ("sqlite:" prefix optional), holding its
// directory's lock shared. With existing, a file that is not there (or empty) is an error, not a
// new database.
func openSQLite(url string, existing bool, image []byte) (dialect, *sql.DB, error) {
	file := strings.TrimPrefix(url, "sqlite:")
	if existing {
		if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
			return nil, nil, fmt.Errorf("there is no embedded database at %s (is --data right?)", file)
		}
	}
	dirLock, err := LockDataDir(filepath.Dir(file), false)
	if err != nil {
		return nil, nil, err
	}
	if len(image) > 0 {
		if err := writeNew(file, image); err != nil {
			dirLock.Release()
			return nil, nil, err
		}
	}
	// SQLite creates its files with the process's umask (often readable by everyone), and its
	// -wal and -shm files take the mode of the database file: make that one private first.
	if f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout("+strconv.Itoa(busyTimeout)+")&_pragma=journal_mode(WAL)"+
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=cache_size("+cacheSize(cacheKiB)+")&_txlock=immediate")
	if err != nil {
		dirLock.Release()
		return nil, nil, err
	}
	db.SetMaxOpenConns(8)
	d := &sqliteDialect{
		writer:      make(chan struct{}, 1),
		checkpoints: make(chan struct{}, 1), stop: make(chan struct{}), checkpointDone: make(chan struct{}),
		dirLock: dirLock,
	}
	go d.checkpointer(db)
	return d, db, nil
}

// checkpointer copies the write-ahead log into the database whenever asked, without waiting for
// readers or holding up writers.
func (d *sqliteDialect) checkpointer(db *sql.DB) {
	defer close(d.checkpointDone)
	for {
		select {
		case <-d.checkpoints:
			db.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`)
		case <-d.stop:
			return
		}
	}
}

// checkpointSoon asks the checkpointer to run, unless it has been asked already.
func (d *sqliteDialect) checkpointSoon() {
	select {
	case d.checkpoints <- struct{}{}:
	default:
	}
}

func (d *sqliteDialect) close(db *sql.DB) error {
	d.closeOnce.Do(func() {
		if d.stop != nil {
			close(d.stop)
			<-d.checkpointDone
		}
	})
	err := db.Close()
	d.dirLock.Release()
	return err
}

func (*sqliteDialect) bind(query string) string { return query }

// oneOf writes an IN list, which SQLite looks up in the column's index itself.
func (*sqliteDialect) oneOf(column string, values []string) (string, []any) {
	args := make([]any, len(values))
	for i, v := range values {
		args[i] = v
	}
	return column + ` IN (` + placeholders(len(values)) + `)`, args
}

// noIndex is SQLite's unary plus. (With the statistics of ANALYZE, SQLite skip-scans the type
// index for a prefix search of one type, and sorts what it found.)
func (*sqliteDialect) noIndex(column string) string { return "+" + column }

// merged: SQLite merges the arms of a compound select under one ORDER BY ("MERGE (UNION ALL)" in
// its plan); an arm with an ORDER BY of its own would be read whole and sorted.
func (*sqliteDialect) merged(selects []string, orderBy string, limit int) string {
	return fmt.Sprintf(`SELECT * FROM (%s) AS merged ORDER BY %s LIMIT %d`, strings.Join(selects, ` UNION ALL `), orderBy, limit)
}

func (*sqliteDialect) contains() string { return `instr(device_id, ?) > 0` }

// byteOrder is nothing: SQLite's text compares byte by byte (BINARY) unless told otherwise.
func (*sqliteDialect) byteOrder() string { return "" }

// nextAccountNum counts from the table's highest: SQLite writes one transaction at a time.
func (*sqliteDialect) nextAccountNum() string {
	return `(SELECT coalesce(max(num), 0) + 1 FROM accounts)`
}

// queueIDsAmong looks the IDs up allowChunk at a time.
func (d *sqliteDialect) queueIDsAmong(q stmtQueue, table, lead string, arg any, ids []string, row func(scan func(...any) error) error) {
	for chunk := range slices.Chunk(ids, allowChunk) {
		in, args := d.oneOf("device_id", chunk)
		q.query(`SELECT device_id FROM `+table+` WHERE `+lead+` AND `+in, append([]any{arg}, args...), row)
	}
}

// The locks do nothing: this process's writers take turns (writeLock), and another process's
// wait for the database's write lock, so nothing falls between two statements of a transaction.
func (*sqliteDialect) lockRows() string                                            { return "" }
func (*sqliteDialect) lockRowsExclusive() string                                   { return "" }
func (*sqliteDialect) lockRowsShared() string                                      { return "" }
func (*sqliteDialect) claimRows(string) string                                     { return "" }
func (*sqliteDialect) lock(context.Context, handle, string, ...any) error          { return nil }
func (*sqliteDialect) lockDevices(context.Context, handle, string, []string) error { return nil }
func (*sqliteDialect) queueLock(stmtQueue, string, []any)                          {}
func (*sqliteDialect) lockAccount(context.Context, handle, string) error           { return nil }
func (*sqliteDialect) queueLockAccount(stmtQueue, string)                          {}

func (d *sqliteDialect) writeLock(ctx context.Context) (unlock func(), err error) {
	select {
	case d.writer <- struct{}{}:
		return func() { <-d.writer }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// snapshot: a read-only transaction begins deferred, without the write lock, and reads one
// snapshot of the write-ahead log from its first read on.
func (*sqliteDialect) snapshot() sql.TxOptions { return sql.TxOptions{ReadOnly: true} }

// beginSnapshots: a transaction's snapshot is the last commit before its first read, so the
// transactions each read once while a connection holds the database's write lock (BEGIN
// IMMEDIATE, which holds off other processes' writers too), and no commit can fall between the
// first snapshot and the last. The lock is held for those few reads, not for the transactions.
// While a writer of this process is at work, or another process's holds the write lock for
// longer than snapshotLockWait, it begins the first alone rather than wait: a look-up writes
// nothing, and one connection's read-only transaction needs no lock. The connections share one
// connection's page cache until end, so that a look-up spread over them takes the memory one
// connection's would, and the others give theirs back after.
func (d *sqliteDialect) beginSnapshots(ctx context.Context, s *DB, conns []*sql.Conn) (txs []*sql.Tx, end func(), err error) {
	if len(conns) > 1 {
		select {
		case d.writer <- struct{}{}:
			defer func() { <-d.writer }()
		default:
			conns = conns[:1]
		}
	}
	firstRead := func(_ int, tx *sql.Tx) error {
		var n int
		return tx.QueryRowContext(ctx, `SELECT count(*) FROM accounts`).Scan(&n)
	}
	if len(conns) > 1 {
		txs, end, err := d.beginUnderWriteLock(ctx, s, conns, firstRead)
		if !errors.Is(err, errWriteLockBusy) {
			return txs, end, err
		}
	}
	txs, err = beginEach(ctx, conns[:1], d.snapshot(), firstRead)
	return txs, func() { rollBack(txs) }, err
}

// snapshotLockWait is how long beginSnapshots waits for another process's writer before it
// begins one connection's snapshot alone; busyTimeout is the connections' wait otherwise (ms).
const (
	snapshotLockWait = 100
	busyTimeout      = 10000
)

// errWriteLockBusy: another process holds the database's write lock.
var errWriteLockBusy = errors.New("the database's write lock is busy")

// beginUnderWriteLock begins the snapshots of beginSnapshots while a connection of its own holds
// the database's write lock; errWriteLockBusy, having begun none, if another process holds it.
func (d *sqliteDialect) beginUnderWriteLock(ctx context.Context, s *DB, conns []*sql.Conn, firstRead func(int, *sql.Tx) error) (txs []*sql.Tx, end func(), err error) {
	wc, err := s.db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer wc.Close()
	if _, err := wc.ExecContext(ctx, `PRAGMA busy_timeout = `+strconv.Itoa(snapshotLockWait)); err != nil {
		return nil, nil, err
	}
	defer wc.ExecContext(context.Background(), `PRAGMA busy_timeout = `+strconv.Itoa(busyTimeout))
	w, err := wc.BeginTx(ctx, nil) // BEGIN IMMEDIATE
	if d.transient(err) {
		return nil, nil, errWriteLockBusy
	}
	if err != nil {
		return nil, nil, err
	}
	defer w.Rollback()
	restore := func() {
		for i, c := range conns {
			q := `PRAGMA cache_size = ` + cacheSize(cacheKiB)
			if i > 0 {
				q += `; PRAGMA shrink_memory`
			}
			c.ExecContext(context.Background(), q)
		}
	}
	err = func() error {
		for _, c := range conns {
			if _, err := c.ExecContext(ctx, `PRAGMA cache_size = `+cacheSize(cacheKiB/len(conns))); err != nil {
				return err
			}
		}
		txs, err = beginEach(ctx, conns, d.snapshot(), firstRead)
		return err
	}()
	if err != nil {
		restore()
		return nil, nil, err
	}
	return txs, func() { rollBack(txs); restore() }, nil
}

// inQueuedTx runs the statements one after another in a write transaction, which costs the same
// in the process as running them together.
func (*sqliteDialect) inQueuedTx(ctx context.Context, s *DB, fn func(q stmtQueue) error) error {
	return s.inTx(ctx, func(tx handle) error {
		q := &handleQueue{h: tx}
		if err := fn(q); err != nil {
			return err
		}
		return q.flush(ctx)
	})
}

// createStage also prepares the INSERT of a full chunk of rows. In SQLite "INTEGER PRIMARY KEY"
// is the rowid itself; any other spelling adds an index.
func (*sqliteDialect) createStage(ctx context.Context, st *stage) error {
	if _, err := st.c.ExecContext(ctx, stageTableSQL(st.table, "INTEGER", "BLOB", "TEXT")); err != nil {
		return err
	}
	var err error
	st.insert, err = st.conn.PrepareContext(ctx, st.insertSQL(stageChunk))
	return err
}

// addToStage writes entries with multi-row INSERTs, stageChunk rows each.
func (*sqliteDialect) addToStage(ctx context.Context, st *stage, entries []devreg.StagedEntry) error {
	for _, e := range entries {
		hashes := e.Hashes
		if hashes == nil {
			hashes = []byte{}
		}
		st.pending = append(st.pending, []any{int64(e.Index), int64(e.Line), e.DeviceID, hashes})
		if len(st.pending) == stageChunk {
			if err := st.flush(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

func (*sqliteDialect) finishStage(ctx context.Context, st *stage) error { return st.flush(ctx) }

func (*sqliteDialect) closeStage(st *stage) {
	if st.insert != nil {
		st.insert.Close()
	}
}

// flush writes the stage's pending rows.
func (st *stage) flush(ctx context.Context) error {
	if len(st.pending) == 0 {
		return nil
	}
	defer func() { st.pending = st.pending[:0] }()
	args := make([]any, 0, 4*len(st.pending))
	for _, row := range st.pending {
		args = append(args, row...)
	}
	var err error
	if len(st.pending) == stageChunk {
		_, err = st.insert.ExecContext(ctx, args...)
	} else {
		_, err = st.c.ExecContext(ctx, st.insertSQL(len(st.pending)), args...)
	}
	return err
}

func (st *stage) insertSQL(rows int) string {
	return `INSERT INTO ` + st.table + ` (idx, line, device_id, hashes) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?),", rows), ",")
}

// readyToWrite waits for the turn to write; the connection gets a bigger page cache while it
// writes, and its commit leaves copying the log into the database to the checkpointer.
func (d *sqliteDialect) readyToWrite(ctx context.Context, c handle) (done func(), err error) {
	turnDone, err := d.writeLock(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := c.ExecContext(ctx, `PRAGMA cache_size = `+cacheSize(registerCacheKiB)+`; PRAGMA wal_autocheckpoint = 0`); err != nil {
		turnDone()
		return nil, err
	}
	return func() {
		turnDone()
		c.ExecContext(context.Background(), `PRAGMA cache_size = `+cacheSize(cacheKiB)+`; PRAGMA wal_autocheckpoint = 1000; PRAGMA shrink_memory`)
		d.checkpointSoon()
	}, nil
}

// insertChunk is how many devices one of SQLite's INSERT statements writes: one statement per
// row would spend most of a big request's time crossing from Go into the database.
const insertChunk = 256

// insertDevices writes the entries in their order (which is the order a batch lists them in).
func (*sqliteDialect) insertDevices(ctx context.Context, _ *stage, tx *sql.Tx, reg devreg.Registration, account int64, entries devreg.RegistrationEntries) error {
	full, err := tx.PrepareContext(ctx, insertDevicesSQL(insertChunk))
	if err != nil {
		return err
	}
	defer full.Close()
	fixed := []any{reg.AccountID, account, reg.DeviceTypeID, reg.Batch.ID, reg.KeyIDs[len(reg.KeyIDs)-1], micros(reg.Batch.CreatedAt)}
	args := make([]any, 0, len(fixed)+2*insertChunk)
	return entries.Replay(insertChunk, func(es []devreg.StagedEntry) error {
		args = append(args[:0], fixed...)
		for _, e := range es {
			hash, err := currentHash(reg, e)
			if err != nil {
				return err
			}
			args = append(args, e.DeviceID, hash)
		}
		var err error
		if len(es) == insertChunk {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, insertDevicesSQL(len(es)), args...)
		}
		return err
	})
}

// insertDevicesSQL inserts rows devices. Its parameters: the account ID and number, the device
// type, the batch, the key ID, the time, then each device's ID and hash. They are anonymous
// ('?', not '?NNN'): the driver looks up each numbered parameter's name, in a list as long as
// the statement's parameters. OR ROLLBACK: a registered device (or certificate) ends the whole
// transaction, as insertNew wants anyway, so SQLite keeps no statement journal. With ABORT it
// copied every page a statement touched that an earlier one had written: few for the indexes
// that append, but a page per row for the fingerprints' index, whose keys are random (1.1 s of
// 3 s of CPU for 100,000 devices by fingerprint, from the bench's CPU profile).
func insertDevicesSQL(rows int) string {
	return `INSERT OR ROLLBACK INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at)
		SELECT ?, ?, column1, ?, ?, 'enabled', ?, column2, ? FROM (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", rows), ", ") + `)`
}

// insertFirst: looking every entry up before inserting it costs about as much as the insert, and
// more the bigger the registry; inserting first, the insert's own look into the unique index is
// the only one.
func (*sqliteDialect) insertFirst() bool { return true }

// lockReplaced has nothing to lock, and no sighting can have fallen in between: writers take
// turns.
func (*sqliteDialect) lockReplaced(context.Context, handle, string, string, int64) (int64, error) {
	return 0, nil
}

// lookUpChunk: SQLite runs in the process, so a statement costs no round trip.
func (*sqliteDialect) lookUpChunk() int { return 256 }

// lookUpFrom's parameters are anonymous: the driver looks each numbered one's name up. SQLite
// takes the left side of a CROSS JOIN as the outer loop: each entry is one look into the unique
// index.
func (*sqliteDialect) lookUpFrom(rows int) string {
	return `(VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", rows), ", ") + `) AS v CROSS JOIN devices AS d`
}

// insertAllowedIDs writes ids allowChunk at a time.
func (*sqliteDialect) insertAllowedIDs(ctx context.Context, _ *sql.Conn, q handle, groupID string, ids devreg.RegistrationEntries) (int64, error) {
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

func (*sqliteDialect) migrations() string { return sqliteMigrations }

// lockMigrations takes nothing: each migration's transaction begins IMMEDIATE, with the write
// lock, before it looks whether the migration has run.
func (*sqliteDialect) lockMigrations(context.Context, handle) (func(), error) { return func() {}, nil }

func (*sqliteDialect) schemaProblems(ctx context.Context, s *DB, version int) ([]string, error) {
	return sqliteSchemaProblems(ctx, s.h, version)
}

func (*sqliteDialect) uniqueViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// transient: a busy or locked database.
func (*sqliteDialect) transient(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	code := se.Code() & 0xff // the primary code of an extended one
	return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
}

func (*sqliteDialect) backupError() error { return nil }
