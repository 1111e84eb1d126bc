// Package store keeps devreg's data in SQL: the embedded SQLite database by default, PostgreSQL in
// production. One implementation serves both; what the two do differently is a dialect, written
// whole in sqlite.go and postgres.go, with the embedded migrations of each.
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"devreg"
)

//go:embed migrations
var migrations embed.FS

// DB is devreg's store.
type DB struct {
	db *sql.DB
	d  dialect
	h  handle // db, with placeholders for the dialect

	regs *registrations // what registrations share: their slots of the pool

	deviceLogin    preparedQuery // DeviceLogin's query
	deviceAuthStmt preparedQuery // DeviceAuth's query
}

// dialect is what the store does differently on SQLite and on PostgreSQL, as database/sql's
// driver is for the connection: chosen once in open, and implemented whole by sqliteDialect
// (sqlite.go) and postgresDialect (postgres.go). The rest of the package writes its SQL once,
// with '?' placeholders, and asks the dialect where the two part. SQLite writes one transaction
// at a time, so that no other writer falls between two statements of one: its locks do nothing,
// and a process's writers take turns instead (writeLock).
type dialect interface {
	// bind rewrites the '?' placeholders of query as the database takes them.
	bind(query string) string
	// oneOf is a condition that column is one of values, and its arguments: the one way the
	// store writes a list of values into a query.
	oneOf(column string, values []string) (string, []any)
	// noIndex returns column as a condition's operand that the planner will not look up in an
	// index, for a condition that only filters the rows of another index's walk.
	noIndex(column string) string
	// merged returns a query of the first limit rows of several selects (each a SELECT ...
	// WHERE with its own placeholders, in order) in the order of orderBy, which each select can
	// read along an index: the merge reads each select only as far as the page takes it, so the
	// page costs its rows and one more per select, not a page per select.
	merged(selects []string, orderBy string, limit int) string
	// contains is the condition that device_id contains the argument, a plain substring (LIKE
	// would read "_" in a device ID as a wildcard).
	contains() string
	// byteOrder is what an ORDER BY of a text column ends with to order it byte by byte, as Go
	// sorts strings, whatever the database's collation.
	byteOrder() string
	// nextAccountNum is the num of an account being inserted: the next in order.
	nextAccountNum() string
	// queueIDsAmong queues on q the statements whose rows (one column, device_id) are those of
	// ids that are the device_id of a row of table whose key (lead, device_id) starts with
	// lead, a condition that takes one argument, arg.
	queueIDsAmong(q stmtQueue, table, lead string, arg any, ids []string, row func(scan func(...any) error) error)

	// lockRows is what a SELECT ends with to lock the rows it reads for an UPDATE that changes
	// no key, until the transaction ends.
	lockRows() string
	// lockRowsExclusive is what a SELECT ends with to lock the rows it reads against every other
	// lock, a foreign key's check included, as a DELETE does.
	lockRowsExclusive() string
	// lockRowsShared is what a SELECT ends with to keep the rows it reads from changing until
	// the transaction ends, while others may read and hold them too.
	lockRowsShared() string
	// claimRows is what a SELECT ends with to lock the rows of alias it reads, passing over
	// those another transaction holds, so that servers claiming at once take different rows.
	claimRows(alias string) string
	// lock runs query, a statement that only locks rows until q's transaction ends.
	lock(ctx context.Context, q handle, query string, args ...any) error
	// queueLock queues such a statement on q.
	queueLock(q stmtQueue, query string, args []any)
	// lockDevices locks the rows of the account's devices ids, in order of device ID, for an
	// UPDATE that changes no key.
	lockDevices(ctx context.Context, q handle, accountID string, ids []string) error
	// lockAccount serializes, within a transaction, the writes of one account that decide on
	// what is registered (registrations, deleting a device type), so that two servers cannot
	// both find a device ID free and both insert it.
	lockAccount(ctx context.Context, q handle, accountID string) error
	// queueLockAccount queues lockAccount's statement on q.
	queueLockAccount(q stmtQueue, accountID string)
	// writeLock waits for this process's turn to write (until ctx ends), and returns what gives
	// the turn back.
	writeLock(ctx context.Context) (unlock func(), err error)

	// snapshot is the options of a read-only transaction that reads one snapshot of the
	// database from its first read on.
	snapshot() sql.TxOptions
	// beginSnapshots begins a read-only transaction on each of conns, all of which read one
	// snapshot of the database, so that the reads of one snapshot can be spread over several
	// connections. Rather than wait for a writer it may begin them on the first few of conns
	// only (one at least): the caller reads on those it gets. end rolls them back and readies
	// the connections for other work. On an error it rolls back those it has begun.
	beginSnapshots(ctx context.Context, s *DB, conns []*sql.Conn) (txs []*sql.Tx, end func(), err error)
	// inQueuedTx is DB.inQueuedTx.
	inQueuedTx(ctx context.Context, s *DB, fn func(q stmtQueue) error) error

	// createStage makes st.table, the stage's temporary table, on st's connection.
	createStage(ctx context.Context, st *stage) error
	// addToStage writes entries into the stage's table, or starts to.
	addToStage(ctx context.Context, st *stage, entries []devreg.StagedEntry) error
	// finishStage writes what addToStage has left pending, and readies the table to be read.
	finishStage(ctx context.Context, st *stage) error
	// closeStage gives up what addToStage holds.
	closeStage(st *stage)
	// readyToWrite readies the stage's connection c for writing a registration, and returns
	// what puts it back.
	readyToWrite(ctx context.Context, c handle) (done func(), err error)
	// insertDevices writes entries into the devices table in tx, a transaction of st's
	// connection, failing with a unique violation if one is registered.
	insertDevices(ctx context.Context, st *stage, tx *sql.Tx, reg devreg.Registration, account int64, entries devreg.RegistrationEntries) error
	// insertFirst reports whether a registration inserts its staged devices, passing over those
	// registered, before it classifies them: when that costs less than looking each up first.
	insertFirst() bool
	// lockReplaced locks the rows of the devices a registration replaces (action 2 in table)
	// and their old batches, before it touches their credentials and counts, and returns how
	// many of them have been seen since classify looked.
	lockReplaced(ctx context.Context, q handle, table, accountID string, account int64) (seen int64, err error)
	// lookUpChunk is how many entries one of lookUpSQL's statements carries.
	lookUpChunk() int
	// lookUpFrom is the FROM of lookUpSQL: rows (device ID, hashes) pairs as v(column1,
	// column2), each looked up in the unique index of devices d.
	lookUpFrom(rows int) string
	// insertAllowedIDs writes ids onto group groupID's allow-list in q, a transaction of conn;
	// a repeat is written once. It returns how many it wrote.
	insertAllowedIDs(ctx context.Context, conn *sql.Conn, q handle, groupID string, ids devreg.RegistrationEntries) (int64, error)

	// migrations is the directory of the dialect's embedded migrations.
	migrations() string
	// lockMigrations keeps, on connection c, other servers from migrating at the same time,
	// until unlock.
	lockMigrations(ctx context.Context, c handle) (unlock func(), err error)
	// schemaProblems compares the schema of s's database at version with devreg's.
	schemaProblems(ctx context.Context, s *DB, version int) ([]string, error)

	// uniqueViolation reports whether err says a row broke a UNIQUE or PRIMARY KEY constraint.
	uniqueViolation(err error) bool
	// transient reports whether err may well not happen again if the transaction is tried
	// anew (a retry must be one that does the same thing again whatever the first try did).
	transient(err error) bool

	// backupError is why Backup cannot copy this database, or nil.
	backupError() error
	// close closes db, and gives up what the dialect holds.
	close(db *sql.DB) error
}

// handle runs queries written with '?' placeholders on a database, connection or transaction,
// binding them for the dialect.
type handle struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	d dialect
}

func (h handle) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return h.q.ExecContext(ctx, h.d.bind(query), args...)
}

func (h handle) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return h.q.QueryContext(ctx, h.d.bind(query), args...)
}

func (h handle) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return h.q.QueryRowContext(ctx, h.d.bind(query), args...)
}

// placeholders is n '?' separated by commas.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

// IsPostgres reports whether url selects PostgreSQL.
func IsPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// Open opens the database at url and brings its schema up to date. A url starting with
// "postgres://" selects PostgreSQL; anything else names an SQLite file ("sqlite:" prefix optional),
// whose directory's LockFileName it holds shared until Close.
func Open(ctx context.Context, url string) (*DB, error) {
	return open(ctx, url, false)
}

// open opens the database at url, holding the SQLite data directory's lock shared, and brings its
// schema up to date unless existing is set; an existing SQLite database must be there.
func open(ctx context.Context, url string, existing bool) (*DB, error) {
	var image []byte
	if !existing && !IsPostgres(url) && templateOn.Load() {
		var err error
		if image, err = templateImage(); err != nil {
			return nil, err
		}
	}
	return openImage(ctx, url, existing, image)
}

// openImage is open; a new SQLite file starts as image, when there is one.
func openImage(ctx context.Context, url string, existing bool, image []byte) (*DB, error) {
	s := &DB{}
	var err error
	if IsPostgres(url) {
		s.d, s.db, err = openPostgres(url)
	} else {
		s.d, s.db, err = openSQLite(url, existing, image)
	}
	if err != nil {
		return nil, err
	}
	// Keep every connection of the pool when it is idle, not database/sql's default of two: the
	// others would be closed whenever a burst ends and opened again (with their page cache and
	// prepared statements) at the next one.
	s.db.SetMaxIdleConns(s.db.Stats().MaxOpenConnections)
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	s.regs = newRegistrations(s.db.Stats().MaxOpenConnections)
	s.h = handle{q: s.db, d: s.d}
	if err := s.db.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	if !existing {
		if err := s.migrate(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("migrate the database: %w", err)
		}
	}
	return s, nil
}

// Close closes the database, and gives up the lock on an SQLite database's directory. Closing it
// again does nothing.
func (s *DB) Close() error {
	s.deviceLogin.close()
	s.deviceAuthStmt.close()
	return s.d.close(s.db)
}

// Ping checks that the database answers.
func (s *DB) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// schemaMigrationsTable records the migrations applied, one row each; migrate makes it first.
const schemaMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`

// migration is one embedded migration: a file whose name starts with its version number.
type migration struct {
	version int
	name    string
	body    string
}

// migrationFiles returns the embedded migrations of a dialect, those of directory dir, in order.
func migrationFiles(dir string) ([]migration, error) {
	entries, err := fs.ReadDir(migrations, dir)
	if err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var out []migration
	for _, e := range entries {
		version, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number", e.Name())
		}
		body, err := fs.ReadFile(migrations, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version, e.Name(), string(body)})
	}
	return out, nil
}

// migrate applies the embedded migrations of the dialect that have not run yet, each in its own
// transaction, recording them in schema_migrations.
func (s *DB) migrate(ctx context.Context) error {
	files, err := migrationFiles(s.d.migrations())
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := handle{q: conn, d: s.d}
	unlock, err := s.d.lockMigrations(ctx, c)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := c.ExecContext(ctx, schemaMigrationsTable); err != nil {
		return err
	}
	for _, m := range files {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		t := handle{q: tx, d: s.d}
		var n int
		err = t.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n)
		if err == nil && n == 0 {
			if _, err = t.ExecContext(ctx, m.body); err != nil {
				err = fmt.Errorf("migration %s: %w", m.name, err)
			} else {
				_, err = t.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`, m.version, time.Now().UnixMicro())
			}
		}
		if err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// exec runs one writing statement, in turn with the process's other writers.
func (s *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	unlock, err := s.d.writeLock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.h.ExecContext(ctx, query, args...)
}

// inTx runs fn in a write transaction and commits it when fn returns nil.
func (s *DB) inTx(ctx context.Context, fn func(tx handle) error) error {
	unlock, err := s.d.writeLock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(handle{q: tx, d: s.d}); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// beginEach begins a transaction with opts on each of conns, in order, and runs first in each as
// it is begun. On an error it rolls back those it has begun.
func beginEach(ctx context.Context, conns []*sql.Conn, opts sql.TxOptions, first func(i int, tx *sql.Tx) error) ([]*sql.Tx, error) {
	txs := make([]*sql.Tx, 0, len(conns))
	for i, c := range conns {
		tx, err := c.BeginTx(ctx, &opts)
		if err == nil {
			txs = append(txs, tx)
			err = first(i, tx)
		}
		if err != nil {
			rollBack(txs)
			return nil, fmt.Errorf("begin a snapshot: %w", err)
		}
	}
	return txs, nil
}

// rollBack rolls back each of txs that is not over.
func rollBack(txs []*sql.Tx) {
	for _, tx := range txs {
		tx.Rollback()
	}
}

// notFound turns sql.ErrNoRows into the domain's not-found error.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return devreg.Errorf(devreg.ENOTFOUND, format, args...)
	}
	return err
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicros(us sql.NullInt64) *time.Time {
	if !us.Valid {
		return nil
	}
	t := fromMicros(us.Int64)
	return &t
}
