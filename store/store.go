// Package store keeps devreg's data in SQL: the embedded SQLite database by default, PostgreSQL in
// production. One implementation serves both; the dialect differences stay in this file and in
// the embedded migrations of each dialect.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"devreg"
)

//go:embed migrations
var migrations embed.FS

// SQLite page cache sizes in KiB (negative, as PRAGMA cache_size takes them): each connection's,
// and that of the one connection writing a registration, which touches pages all over the
// unique index of device IDs. SQLite writes one transaction at a time, so at most one
// connection has the bigger cache, and it gives the memory back after. 64 MiB made a million
// devices with IDs spread like UUIDs about 8% faster than 16 MiB, at 95 MB more peak memory;
// 32 MiB is the middle.
const (
	cacheSize         = "-16384"
	registerCacheSize = "-32768"
)

// DB is devreg's store.
type DB struct {
	db *sql.DB
	pg bool   // PostgreSQL rather than SQLite
	h  handle // db, with placeholders for the dialect

	regs *registrations // what registrations share: their slots of the pool

	// SQLite: the turn to write. SQLite lets one connection write at a time, and one that finds
	// the database locked sleeps and retries (busy_timeout) with sleeps of up to 100ms; this
	// process's writers wait in line here instead, first come first served, so a device login's
	// small write follows a registration's transaction at once rather than at the next retry.
	writer chan struct{}

	// SQLite: a registration's commit leaves the write-ahead log to be copied into the database
	// by a goroutine, not by the request that wrote it.
	checkpoints    chan struct{}
	stop           chan struct{} // closed by Close
	checkpointDone chan struct{}
	closeOnce      sync.Once

	dirLock *DirLock // SQLite: the shared lock on the data directory, held until Close

	deviceLogin    preparedQuery // DeviceLogin's query
	deviceAuthStmt preparedQuery // DeviceAuth's query
}

// handle runs queries written with '?' placeholders on a database, connection or transaction,
// rewriting them to $1, $2, ... for PostgreSQL.
type handle struct {
	q interface {
		ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	pg bool
}

func (h handle) bind(query string) string {
	if !h.pg || !strings.Contains(query, "?") {
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

func (h handle) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return h.q.ExecContext(ctx, h.bind(query), args...)
}

func (h handle) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return h.q.QueryContext(ctx, h.bind(query), args...)
}

func (h handle) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return h.q.QueryRowContext(ctx, h.bind(query), args...)
}

// placeholders is n '?' separated by commas.
func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?, ", n), ", ") }

// oneOf is a condition that column is one of values, and its arguments: the one way the store
// writes a list of values into a query. PostgreSQL gets the values as one array, which its
// planner looks up in the column's index one by one: a list of hundreds of parameters it plans,
// once the plan is generic, as a filter comparing every row of the account with every value
// (200 ms for 500 devices of 20,000, where the lookups take 2 ms). SQLite looks an IN list up in
// the index itself.
func (h handle) oneOf(column string, values []string) (string, []any) {
	if h.pg {
		return column + ` = ANY(?)`, []any{values}
	}
	args := make([]any, len(values))
	for i, v := range values {
		args[i] = v
	}
	return column + ` IN (` + placeholders(len(values)) + `)`, args
}

// lockRows is what a SELECT ends with to lock the rows it reads for an UPDATE that changes no
// key, on PostgreSQL; SQLite writes one transaction at a time.
func (s *DB) lockRows() string {
	if s.pg {
		return ` FOR NO KEY UPDATE`
	}
	return ""
}

// noIndex returns column as a condition's operand that the planner will not look up in an
// index, for a condition that only filters the rows of another index's walk: SQLite's unary
// plus. (With the statistics of ANALYZE, SQLite skip-scans the type index for a prefix search of
// one type, and sorts what it found.) PostgreSQL has no such operator for text and needs none:
// with its statistics it walks the index that stops at the page.
func (s *DB) noIndex(column string) string {
	if s.pg {
		return column
	}
	return "+" + column
}

// merged returns a query of the first limit rows of several selects (each a SELECT ... WHERE
// with its own placeholders, in order) in the order of orderBy, which each select can read along
// an index: the merge reads each select only as far as the page takes it, so the page costs its
// rows and one more per select, not a page per select.
//
// SQLite merges the arms of a compound select under one ORDER BY ("MERGE (UNION ALL)" in its
// plan); an arm with an ORDER BY of its own would be read whole and sorted. PostgreSQL 15
// plans a Merge Append only over arms that are ordered themselves; without their own ORDER BY
// and LIMIT it appends every row of every arm and sorts them.
func (s *DB) merged(selects []string, orderBy string, limit int) string {
	arms := selects
	if s.pg {
		arms = make([]string, len(selects))
		for i, q := range selects {
			arms[i] = fmt.Sprintf(`(%s ORDER BY %s LIMIT %d)`, q, orderBy, limit)
		}
	}
	return fmt.Sprintf(`SELECT * FROM (%s) AS merged ORDER BY %s LIMIT %d`, strings.Join(arms, ` UNION ALL `), orderBy, limit)
}

// IsPostgres reports whether url selects PostgreSQL.
func IsPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// Open opens the database at url and brings its schema up to date. A url starting with
// "postgres://" selects PostgreSQL; anything else names an SQLite file ("sqlite:" prefix optional),
// whose directory's LockFileName it holds shared until Close.
func Open(ctx context.Context, url string) (*DB, error) {
	return open(ctx, url, true)
}

// open opens the database at url, holding the SQLite data directory's lock shared, and brings its
// schema up to date when migrate is set.
func open(ctx context.Context, url string, migrate bool) (*DB, error) {
	s := &DB{pg: IsPostgres(url)}
	var err error
	if s.pg {
		s.db, err = sql.Open("pgx", url)
		if err == nil {
			s.db.SetMaxOpenConns(20)
		}
	} else {
		file := strings.TrimPrefix(url, "sqlite:")
		if s.dirLock, err = LockDataDir(filepath.Dir(file), false); err != nil {
			return nil, err
		}
		// SQLite creates its files with the process's umask (often readable by everyone), and its
		// -wal and -shm files take the mode of the database file: make that one private first.
		if f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600); err == nil {
			f.Close()
		}
		s.db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"+
			"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=cache_size("+cacheSize+")&_txlock=immediate")
		if err == nil {
			s.db.SetMaxOpenConns(8)
		}
	}
	if err != nil {
		s.dirLock.Release()
		return nil, err
	}
	// Keep every connection of the pool when it is idle, not database/sql's default of two: the
	// others would be closed whenever a burst ends and opened again (with their page cache and
	// prepared statements) at the next one.
	s.db.SetMaxIdleConns(s.db.Stats().MaxOpenConnections)
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	s.regs = newRegistrations(s.db.Stats().MaxOpenConnections)
	s.writer = make(chan struct{}, 1)
	s.h = handle{q: s.db, pg: s.pg}
	if err := s.db.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to the database: %w", err)
	}
	if migrate {
		if err := s.migrate(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("migrate the database: %w", err)
		}
	}
	if !s.pg {
		s.checkpoints, s.stop, s.checkpointDone = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go s.checkpointer()
	}
	return s, nil
}

// checkpointer copies the write-ahead log into the SQLite database whenever asked, without
// waiting for readers or holding up writers.
func (s *DB) checkpointer() {
	defer close(s.checkpointDone)
	for {
		select {
		case <-s.checkpoints:
			s.db.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`)
		case <-s.stop:
			return
		}
	}
}

// checkpointSoon asks the checkpointer to run, unless it has been asked already.
func (s *DB) checkpointSoon() {
	select {
	case s.checkpoints <- struct{}{}:
	default:
	}
}

// Close closes the database, and gives up the lock on an SQLite database's directory. Closing it
// again does nothing.
func (s *DB) Close() error {
	s.closeOnce.Do(func() {
		if s.stop != nil {
			close(s.stop)
			<-s.checkpointDone
		}
	})
	s.deviceLogin.close()
	s.deviceAuthStmt.close()
	err := s.db.Close()
	s.dirLock.Release()
	return err
}

// Ping checks that the database answers.
func (s *DB) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

// migrationLock is the PostgreSQL advisory lock that lets one of several servers starting at
// once migrate while the others wait.
const migrationLock = 7_201_733_001

// schemaMigrationsTable records the migrations applied, one row each; migrate makes it first.
const schemaMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`

// migration is one embedded migration: a file whose name starts with its version number.
type migration struct {
	version int
	name    string
	body    string
}

// migrationFiles returns the embedded migrations of a dialect, in order.
func migrationFiles(pg bool) ([]migration, error) {
	dir := path.Join("migrations", "sqlite")
	if pg {
		dir = path.Join("migrations", "postgres")
	}
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
	files, err := migrationFiles(s.pg)
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := handle{q: conn, pg: s.pg}
	if s.pg {
		if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, migrationLock); err != nil {
			return err
		}
		defer c.ExecContext(context.Background(), `SELECT pg_advisory_unlock(?)`, migrationLock)
	}
	if _, err := c.ExecContext(ctx, schemaMigrationsTable); err != nil {
		return err
	}
	for _, m := range files {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		t := handle{q: tx, pg: s.pg}
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

// writeLock waits, on SQLite, for this process's turn to write (until ctx ends), and returns
// what gives the turn back. On PostgreSQL, which writes in parallel, it returns at once.
func (s *DB) writeLock(ctx context.Context) (unlock func(), err error) {
	if s.pg {
		return func() {}, nil
	}
	select {
	case s.writer <- struct{}{}:
		return func() { <-s.writer }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// exec runs one writing statement, in turn with the process's other writers on SQLite.
func (s *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	unlock, err := s.writeLock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.h.ExecContext(ctx, query, args...)
}

// inTx runs fn in a write transaction and commits it when fn returns nil.
func (s *DB) inTx(ctx context.Context, fn func(tx handle) error) error {
	unlock, err := s.writeLock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(handle{q: tx, pg: s.pg}); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// lockAccount serializes, within a transaction, the writes of one account that decide on what is
// registered (registrations, deleting a device type), so that two servers cannot both find a
// device ID free and both insert it. SQLite's write transactions are serial already.
func (s *DB) lockAccount(ctx context.Context, tx handle, accountID string) error {
	if !s.pg {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext(?))`, accountID)
	return err
}

// isUniqueViolation reports whether err says a row broke a UNIQUE or PRIMARY KEY constraint.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// transient reports whether err may well not happen again if the transaction is tried anew: a
// deadlock or serialization failure, a busy SQLite database, or trouble with the connection (a
// failed statement's transaction is rolled back, or its commit is in doubt, so a retry must be
// one that does the same thing again whatever the first try did).
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		code := se.Code() & 0xff // the primary code of an extended one
		return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
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
