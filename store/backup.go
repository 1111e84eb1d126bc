package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// SnapshotInfo describes a database file that was checked: a backup, or a copy being restored.
type SnapshotInfo struct {
	SchemaVersion int
	Tables        map[string]int64 // rows per table
	KeyIDs        []string         // the secret-hashing keys its hashes were made with
}

// InspectFile checks an SQLite database file that nothing else uses (a backup being written, or a
// copy about to be restored) and describes it. It must pass SQLite's integrity check, be a devreg
// database of a schema no newer than this build's. The file
// is left in rollback-journal mode, one file with nothing beside it (a copy of a database in WAL
// mode is turned into that). Its errors speak of the file as "it", for the caller to name it.
func InspectFile(ctx context.Context, file string) (SnapshotInfo, error) {
	var info SnapshotInfo
	if fi, err := os.Stat(file); err != nil {
		return info, err
	} else if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return info, errors.New("it is not an SQLite database: it is empty, or not a file")
	}
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return info, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `PRAGMA journal_mode=DELETE`); err != nil {
		return info, fmt.Errorf("it is not a sound SQLite database: %w", err)
	}
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check(20)`)
	if err != nil {
		return info, fmt.Errorf("it fails SQLite's integrity check: %w", err)
	}
	var damage []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return info, err
		}
		if line != "ok" {
			damage = append(damage, line)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("it fails SQLite's integrity check: %w", err)
	}
	if len(damage) > 0 {
		return info, fmt.Errorf("it fails SQLite's integrity check: %s", strings.Join(damage, "; "))
	}

	if info.Tables, err = countRows(ctx, db); err != nil {
		return info, err
	}
	for _, t := range []string{"schema_migrations", "accounts", "devices"} {
		if _, ok := info.Tables[t]; !ok {
			return info, fmt.Errorf("it is an SQLite database, but not devreg's: it has no table %s", t)
		}
	}
	view := &DB{db: db, h: handle{q: db}}
	if info.SchemaVersion, err = view.StoredSchemaVersion(ctx); err != nil {
		return info, err
	}
	if own := lastMigration(path.Join("migrations", "sqlite")); info.SchemaVersion > own || info.SchemaVersion < 1 {
		return info, fmt.Errorf("it has schema version %d, which this devreg (schema version %d) does not know: use the devreg that made it", info.SchemaVersion, own)
	}
	if _, ok := info.Tables["credentials"]; ok {
		info.KeyIDs, err = view.HashKeyIDs(ctx)
	} else { // a backup from before devices had several credentials
		info.KeyIDs, err = distinctStrings(ctx, db, `SELECT DISTINCT key_id FROM devices ORDER BY key_id`)
	}
	if err != nil {
		return info, fmt.Errorf("read the key IDs of its hashes: %w", err)
	}
	return info, nil
}

// countRows returns how many rows each table of an SQLite database has.
func countRows(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	names, err := distinctStrings(ctx, db, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	counts := map[string]int64{}
	for _, name := range names {
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM "`+strings.ReplaceAll(name, `"`, `""`)+`"`).Scan(&n); err != nil {
			return nil, fmt.Errorf("read table %s: %w", name, err)
		}
		counts[name] = n
	}
	return counts, nil
}

func distinctStrings(ctx context.Context, db *sql.DB, query string) ([]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// ErrBackupPostgres is the refusal to back up a PostgreSQL database, which has tools of its own.
var ErrBackupPostgres = errors.New("devreg backup copies the embedded SQLite database; back PostgreSQL up with its own tools: " +
	"pg_dump --format=custom (restored with pg_restore), or base backups with WAL archiving for point-in-time recovery (see the README)")

// BackupInfo describes a backup just written.
type BackupInfo struct {
	File string    // its absolute path
	Time time.Time // the moment whose data it holds
	Size int64
	SnapshotInfo
}

// Backup writes a consistent copy of the embedded SQLite database to the new file to, while
// servers keep reading and writing it. VACUUM INTO copies in one statement, in one read
// transaction: a snapshot that writers do not disturb (the backup API's page-by-page steps start
// over whenever another connection writes, and may never finish under load). The copy is
// written under a temporary name beside to, checked with InspectFile, synced, and only then given
// its name; a backup that fails or is interrupted leaves at most a file named *.partial-*. An
// existing file to is never replaced.
func (s *DB) Backup(ctx context.Context, to string) (BackupInfo, error) {
	var info BackupInfo
	if s.pg {
		return info, ErrBackupPostgres
	}
	abs, err := filepath.Abs(to)
	if err != nil {
		return info, err
	}
	if _, err := os.Lstat(abs); err == nil {
		return info, fmt.Errorf("%s exists; a backup never replaces a file: give each backup a new name (for example with the date)", abs)
	}
	tmp, err := os.CreateTemp(filepath.Dir(abs), filepath.Base(abs)+".partial-*")
	if err != nil {
		return info, fmt.Errorf("create the backup: %w", err)
	}
	tmp.Close()
	done := false
	defer func() {
		if !done {
			removeDBFiles(tmp.Name())
		}
	}()
	info.Time = time.Now().UTC()
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, tmp.Name()); err != nil {
		return info, fmt.Errorf("copy the database: %w", err)
	}
	if info.SnapshotInfo, err = InspectFile(ctx, tmp.Name()); err != nil {
		return info, fmt.Errorf("the copy does not check out, so no backup was written: %w", err)
	}
	if err := syncFile(tmp.Name()); err != nil {
		return info, err
	}
	if err := publish(tmp.Name(), abs); err != nil {
		return info, err
	}
	done = true
	fi, err := os.Stat(abs)
	if err != nil {
		return info, err
	}
	info.File, info.Size = abs, fi.Size()
	return info, nil
}

// publish gives the finished file tmp its name to, in the same directory, and syncs the directory.
// A hard link fails when to exists, so a backup cannot replace one that appeared meanwhile; where
// the file system has no hard links, a rename does it.
func publish(tmp, to string) error {
	err := os.Link(tmp, to)
	switch {
	case err == nil:
		os.Remove(tmp)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s exists; a backup never replaces a file: give each backup a new name", to)
	default:
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("%s exists; a backup never replaces a file: give each backup a new name", to)
		}
		if err := os.Rename(tmp, to); err != nil {
			return err
		}
	}
	return syncDir(filepath.Dir(to))
}

// RestoreInfo describes a restore done.
type RestoreInfo struct {
	SnapshotInfo
	Previous string // where the database it replaced is kept; "" when there was none
}

// Restore puts a copy of the SQLite database file from in place of the embedded database dbFile,
// holding the data directory's lock exclusively from the start to the end, so that no server or
// command has the database open meanwhile (and none opens it halfway). It refuses to replace an
// existing database unless force is set, and then keeps it (with its write-ahead log) beside, as
// dbFile.before-restore-TIME. A from with a -wal file beside it is restored with it. The copy is checked with InspectFile and then by accept (which
// refuses a backup whose key IDs the key file lacks) before anything is changed. Stale -wal,
// -shm and -journal files are removed, because SQLite would replay them into the restored file.
func Restore(ctx context.Context, from, dbFile string, force bool, accept func(SnapshotInfo) error) (RestoreInfo, error) {
	var info RestoreInfo
	dir := filepath.Dir(dbFile)
	src, err := os.Stat(from)
	if err != nil {
		return info, fmt.Errorf("read the backup: %w", err)
	}
	if !src.Mode().IsRegular() {
		return info, fmt.Errorf("the backup %s is not a file", from)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return info, fmt.Errorf("create the data directory: %w", err)
	}
	lock, err := LockDataDir(dir, true)
	if err != nil {
		return info, fmt.Errorf("devreg restore refused: %w", err)
	}
	defer lock.Release()
	if dst, err := os.Stat(dbFile); err == nil && os.SameFile(src, dst) {
		return info, fmt.Errorf("%s is the database itself, not a backup of it", from)
	}
	existing := false
	for _, suffix := range []string{"", "-wal", "-journal"} {
		if fi, err := os.Stat(dbFile + suffix); err == nil && fi.Size() > 0 {
			existing = true
		}
	}
	if existing && !force {
		return info, fmt.Errorf("there is a database at %s already; devreg restore replaces it only with --force "+
			"(which keeps it beside, as %s.before-restore-TIME)", dbFile, filepath.Base(dbFile))
	}

	tmp := dbFile + ".restoring"
	removeDBFiles(tmp) // left by a restore that was interrupted; the lock says no restore runs now
	done := false
	defer func() {
		if !done {
			removeDBFiles(tmp)
		}
	}()
	if err := copyFile(ctx, from, tmp); err != nil {
		return info, fmt.Errorf("copy the backup: %w", err)
	}
	// A database copied with its write-ahead log (such as one kept by an earlier restore) is
	// whole only with it: InspectFile folds the log into the copy.
	if fi, err := os.Stat(from + "-wal"); err == nil && fi.Size() > 0 {
		if err := copyFile(ctx, from+"-wal", tmp+"-wal"); err != nil {
			return info, fmt.Errorf("copy the backup's write-ahead log: %w", err)
		}
	}
	if info.SnapshotInfo, err = InspectFile(ctx, tmp); err != nil {
		return info, fmt.Errorf("the backup %s does not check out, so nothing was changed: %w", from, err)
	}
	if err := accept(info.SnapshotInfo); err != nil {
		return info, err
	}
	if err := syncFile(tmp); err != nil {
		return info, err
	}

	if existing {
		stamp := time.Now().UTC().Format("20060102T150405Z")
		info.Previous = dbFile + ".before-restore-" + stamp
		for i := 2; fileExists(info.Previous) || fileExists(info.Previous+"-wal"); i++ {
			info.Previous = fmt.Sprintf("%s.before-restore-%s-%d", dbFile, stamp, i)
		}
		// The database and what is written ahead of it move together, so the kept pair opens whole.
		for _, suffix := range []string{"", "-wal", "-journal"} {
			if err := os.Rename(dbFile+suffix, info.Previous+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return info, fmt.Errorf("keep the current database: %w", err)
			}
		}
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(dbFile + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return info, fmt.Errorf("remove the stale %s: %w", dbFile+suffix, err)
		}
	}
	if err := os.Rename(tmp, dbFile); err != nil {
		return info, err
	}
	done = true
	return info, syncDir(dir)
}

// copyFile copies from to the new file to (mode 0600), and syncs it.
func copyFile(ctx context.Context, from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, ctxReader{ctx, in}); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return f.Close()
}

// syncDir makes a rename or link in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeDBFiles removes an SQLite database file and the files SQLite keeps beside it.
func removeDBFiles(name string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		os.Remove(name + suffix)
	}
}

func fileExists(name string) bool {
	_, err := os.Lstat(name)
	return err == nil
}
