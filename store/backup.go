package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
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
// copy about to be restored) and describes it. It must pass SQLite's integrity check and be a
// devreg database of a schema version no newer than this build's, holding exactly the tables,
// indexes, triggers and views that devreg's migrations up to that version make. The file is left
// in rollback-journal mode, one file with nothing beside it (a copy of a database in WAL mode is
// turned into that). Its errors speak of the file as "it", for the caller to name it.
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
	lite := &sqliteDialect{} // to bind queries: the view does not write
	view := &DB{db: db, d: lite, h: handle{q: db, d: lite}}
	if info.SchemaVersion, err = view.StoredSchemaVersion(ctx); err != nil {
		return info, err
	}
	switch own := lastMigration(sqliteMigrations); {
	case info.SchemaVersion > own:
		return info, fmt.Errorf("it has schema version %d, which a newer devreg release made; this devreg knows schema versions up to %d: "+
			"use that release (or a newer one)", info.SchemaVersion, own)
	case info.SchemaVersion < 1:
		return info, fmt.Errorf("it has schema version %d, which no devreg makes", info.SchemaVersion)
	}
	problems, err := sqliteSchemaProblems(ctx, db, info.SchemaVersion)
	if err != nil {
		return info, err
	}
	if len(problems) > 0 {
		return info, fmt.Errorf("its schema is not the one devreg makes: %s. A trigger or view that devreg did not make would run "+
			"inside devreg, unseen; if you made the change yourself, undo it (with the sqlite3 shell, in a copy), "+
			"otherwise someone altered the file, and what it holds cannot be trusted", strings.Join(problems, "; "))
	}
	if _, ok := info.Tables["credentials"]; ok {
		info.KeyIDs, err = view.HashKeyIDs(ctx)
	} else { // a backup from before devices had several credentials
		info.KeyIDs, err = column[string](ctx, db, `SELECT DISTINCT key_id FROM devices ORDER BY key_id`)
	}
	if err != nil {
		return info, fmt.Errorf("read the key IDs of its hashes: %w", err)
	}
	return info, nil
}

// countRows returns how many rows each table of an SQLite database has.
func countRows(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	names, err := column[string](ctx, db, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
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

// column returns the values of a query's one column.
func column[T any](ctx context.Context, q querier, query string) ([]T, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
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
	if err := s.d.backupError(); err != nil {
		return info, err
	}
	abs, err := filepath.Abs(to)
	if err != nil {
		return info, err
	}
	if err := s.checkBackupTarget(ctx, abs); err != nil {
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

// checkBackupTarget refuses to write a backup where SQLite or devreg would take it for a file of
// their own. SQLite takes a file named DATABASE-journal beside a database for the journal of a
// write that was cut short: the next process that opens the database alone plays it back into the
// database and deletes it (and so for -wal, -shm and the super-journals, -mj...). devreg's data
// directory holds the database's files, which a restore moves and removes, and a backup there is
// lost with the disk it should outlive.
func (s *DB) checkBackupTarget(ctx context.Context, to string) error {
	if suffix, kind := sideFile(to); suffix != "" {
		base := filepath.Base(to)
		return fmt.Errorf("the backup's name %s ends in %s: SQLite takes such a file for the %s of the database %s beside it, "+
			"and plays it back into that database or deletes it; give the backup a name of its own, such as devreg-20261127T020000Z.db",
			base, suffix, kind, strings.TrimSuffix(base, suffix))
	}
	var live string
	if err := s.db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&live); err != nil {
		return err
	}
	data := filepath.Dir(live)
	inside, err := isInside(to, data)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the backup's directory %s does not exist: create it first, private to the server's user "+
			"(install -d -m 700 %s)", filepath.Dir(to), filepath.Dir(to))
	} else if err != nil {
		return fmt.Errorf("the backup's directory: %w", err)
	}
	if inside {
		return fmt.Errorf("the backup %s would be in the data directory %s, which holds the database's own files "+
			"(SQLite plays back and deletes a file there named like the database's journal, and a restore moves and removes files there), "+
			"and a backup on the database's disk is lost with it: write backups to a directory of their own, "+
			"such as /var/backups/devreg, and copy them off the machine", to, data)
	}
	return nil
}

// sideFile returns the ending of name that SQLite gives a file it keeps beside a database, and
// what that file is; "" when name has none.
func sideFile(name string) (suffix, kind string) {
	base := filepath.Base(name)
	for _, f := range []struct{ suffix, kind string }{
		{"-journal", "rollback journal"}, {"-wal", "write-ahead log"}, {"-shm", "write-ahead log's index"},
	} {
		if strings.HasSuffix(base, f.suffix) {
			return f.suffix, f.kind
		}
	}
	// A super-journal, of a transaction over several databases, is DATABASE-mjXXXXXX9XX in hexadecimal.
	if i := strings.LastIndex(base, "-mj"); i >= 0 && i+3 < len(base) &&
		strings.Trim(base[i+3:], "0123456789ABCDEFabcdef") == "" {
		return base[i:], "super-journal"
	}
	return "", ""
}

// isInside reports whether the file name is the directory dir or is anywhere under it, however
// it is named: through symbolic links, "..", or another mount of the same directory. The
// directory name is in must exist.
func isInside(name, dir string) (bool, error) {
	home, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	if fi, err := os.Stat(name); err == nil && os.SameFile(fi, home) {
		return true, nil
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(name))
	if err != nil {
		return false, err
	}
	if parent, err = filepath.Abs(parent); err != nil {
		return false, err
	}
	for {
		if fi, err := os.Stat(parent); err == nil && os.SameFile(fi, home) {
			return true, nil
		}
		up := filepath.Dir(parent)
		if up == parent {
			return false, nil
		}
		parent = up
	}
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

// RestoreOptions say what a restore may do, and whom it tells what it will write.
type RestoreOptions struct {
	Force bool // replace an existing database, keeping it beside

	// Accept is shown the checked backup before anything is changed; an error refuses it.
	Accept func(SnapshotInfo) error
	// Plan is told what the restore will write, before it writes anything.
	Plan func(RestorePlan)
	// DiskFree returns the bytes free in the file system of a directory; nil reads the file system.
	DiskFree func(dir string) (int64, error)
}

// RestorePlan is what a restore will write, and the room it has.
type RestorePlan struct {
	From    string // the backup
	Size    int64  // its size, with its write-ahead log if it has one beside it
	Data    int64  // the bytes of Size that hold data: the rest are holes, which stay holes in the copy
	Copy    string // where it is copied to, and checked, before it takes the database's name
	Replace string // the database it replaces, which is kept beside; "" when there is none
	Free    int64  // bytes free in the data directory's file system; -1 when unknown
	Need    int64  // the least free space the restore goes ahead with: Data and a margin
}

// String says what the restore will write, in a sentence.
func (p RestorePlan) String() string {
	size := sizeText(p.Size)
	if p.Data < p.Size {
		size += ", of which " + sizeText(p.Data) + " hold data; the holes stay holes"
	}
	then := "then gives it the name " + strings.TrimSuffix(p.Copy, ".restoring")
	if p.Replace != "" {
		then = "then puts it in place of " + p.Replace + " (which it keeps beside, as " + filepath.Base(p.Replace) + ".before-restore-TIME)"
	}
	room := fmt.Sprintf("%s has %s free; the restore needs %s", filepath.Dir(p.Copy), sizeText(p.Free), sizeText(p.Need))
	if p.Free < 0 {
		room = fmt.Sprintf("the free room in %s is unknown; the restore needs %s", filepath.Dir(p.Copy), sizeText(p.Need))
	}
	return fmt.Sprintf("restore copies %s (%s) to %s, checks the copy there, %s; %s", p.From, size, p.Copy, then, room)
}

// restoreMargin is the room a restore leaves beyond the copy it writes, for the journal SQLite
// writes while the copy is checked and the write-ahead log of the server that starts on it: a
// tenth of the copy, and at least 64 MiB.
func restoreMargin(data int64) int64 { return max(64<<20, data/10) }

// Restore puts a copy of the SQLite database file from in place of the embedded database dbFile,
// holding the data directory's lock exclusively from the start to the end, so that no server or
// command has the database open meanwhile (and none opens it halfway). It refuses to replace an
// existing database unless opts.Force is set, and then keeps it (with its write-ahead log)
// beside, as dbFile.before-restore-TIME. A from with a -wal file beside it is restored with it.
// Before it writes anything it tells opts.Plan what it will write, and refuses when the file
// system lacks the room. The copy is checked with InspectFile and then by opts.Accept (which
// refuses a backup whose key IDs the key file lacks) before anything else is changed. Stale
// -wal, -shm and -journal files are removed, because SQLite would replay them into the restored
// file.
func Restore(ctx context.Context, from, dbFile string, opts RestoreOptions) (RestoreInfo, error) {
	var info RestoreInfo
	dir := filepath.Dir(dbFile)
	if suffix, kind := sideFile(from); suffix != "" {
		return info, fmt.Errorf("%s is named like the %s SQLite keeps beside a database (%s), not a database: "+
			"restore from the database file itself, a file devreg backup wrote", from, kind, suffix)
	}
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
	tmp := dbFile + ".restoring"
	if dst, err := os.Stat(tmp); err == nil && os.SameFile(src, dst) {
		return info, fmt.Errorf("%s is the working copy of a restore that was cut short, which restore removes: restore from the backup itself", from)
	}
	existing := false
	for _, suffix := range []string{"", "-wal", "-journal"} {
		if fi, err := os.Stat(dbFile + suffix); err == nil && fi.Size() > 0 {
			existing = true
		}
	}
	if existing && !opts.Force {
		return info, fmt.Errorf("there is a database at %s already; devreg restore replaces it only with --force "+
			"(which keeps it beside, as %s.before-restore-TIME)", dbFile, filepath.Base(dbFile))
	}

	plan := RestorePlan{From: from, Size: src.Size(), Data: min(src.Size(), allocated(src)), Copy: tmp, Free: -1}
	wal, err := os.Stat(from + "-wal")
	withWAL := err == nil && wal.Size() > 0
	if withWAL {
		plan.Size += wal.Size()
		plan.Data += min(wal.Size(), allocated(wal))
	}
	if existing {
		plan.Replace = dbFile
	}
	plan.Need = plan.Data + restoreMargin(plan.Data)
	diskFree := opts.DiskFree
	if diskFree == nil {
		diskFree = freeSpace
	}
	if free, err := diskFree(dir); err == nil {
		plan.Free = free
	}
	if opts.Plan != nil {
		opts.Plan(plan)
	}
	if plan.Free >= 0 && plan.Free < plan.Need {
		kept := ""
		if existing {
			kept = " The database it replaces is kept beside, so its room is not freed."
		}
		return info, fmt.Errorf("%s has %s free, but the restore needs %s: %s for the backup's data and %s to spare "+
			"for checking it and for the server's write-ahead log after it.%s Free some room there "+
			"(older %s.before-restore-* files can go once you no longer need them), then restore again",
			dir, sizeText(plan.Free), sizeText(plan.Need), sizeText(plan.Data), sizeText(plan.Need-plan.Data), kept, filepath.Base(dbFile))
	}

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
	if withWAL {
		if err := copyFile(ctx, from+"-wal", tmp+"-wal"); err != nil {
			return info, fmt.Errorf("copy the backup's write-ahead log: %w", err)
		}
	}
	if info.SnapshotInfo, err = InspectFile(ctx, tmp); err != nil {
		return info, fmt.Errorf("the backup %s does not check out, so nothing was changed: %w", from, err)
	}
	if opts.Accept != nil {
		if err := opts.Accept(info.SnapshotInfo); err != nil {
			return info, err
		}
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

// sizeText writes a number of bytes for people: "3.0 GiB", "512 KiB", "100 bytes".
func sizeText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// copyFile copies from to the new file to (mode 0600), and syncs it. Blocks of zeros are not
// written but left as holes, so a sparse file stays sparse; SQLite reads a hole as the zeros it
// holds.
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
	defer out.Close()
	buf := make([]byte, 1<<20)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(in, buf)
		if werr := writeData(out, buf[:n], off); werr != nil {
			return werr
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := out.Truncate(off); err != nil { // the end, when the file ends in a hole
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

// holeBlock is the size of the blocks of zeros that copyFile leaves as holes: a file system's
// block, and SQLite's default page.
const holeBlock = 4096

var zeros = make([]byte, holeBlock)

// writeData writes b at off in f, but for its blocks of zeros.
func writeData(f *os.File, b []byte, off int64) error {
	isZero := func(i int) bool { return bytes.Equal(b[i:min(i+holeBlock, len(b))], zeros[:min(holeBlock, len(b)-i)]) }
	for i := 0; i < len(b); {
		if isZero(i) {
			i += holeBlock
			continue
		}
		j := i + holeBlock
		for j < len(b) && !isZero(j) {
			j += holeBlock
		}
		j = min(j, len(b))
		if _, err := f.WriteAt(b[i:j], off+int64(i)); err != nil {
			return err
		}
		i = j
	}
	return nil
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
