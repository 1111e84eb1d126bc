package store_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devreg/store"
)

// The embedded database is opened under a shared lock on its directory's devreg.lock, held until
// Close: several processes (here, stores) use it at once, and an exclusive lock, a restore's,
// waits for none of them but is refused; while a restore holds it, nothing opens the database.
func TestDataDirLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := "sqlite:" + filepath.Join(dir, "devreg.db")
	a, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("a second store on the same database: %v", err)
	}
	if _, err := store.LockDataDir(dir, true); !errors.Is(err, store.ErrDataDirInUse) {
		t.Fatalf("an exclusive lock while two stores are open: %v, want ErrDataDirInUse", err)
	}
	a.Close()
	if _, err := store.LockDataDir(dir, true); !errors.Is(err, store.ErrDataDirInUse) {
		t.Fatalf("an exclusive lock while one store is open: %v, want ErrDataDirInUse", err)
	}
	b.Close()
	b.Close() // a second Close does nothing
	lock, err := store.LockDataDir(dir, true)
	if err != nil {
		t.Fatalf("an exclusive lock once every store is closed: %v", err)
	}
	if _, err := store.Open(ctx, url); !errors.Is(err, store.ErrDataDirInUse) || !strings.Contains(err.Error(), "restore") {
		t.Fatalf("open during a restore: %v, want ErrDataDirInUse", err)
	}
	if _, err := store.OpenExisting(ctx, url); !errors.Is(err, store.ErrDataDirInUse) {
		t.Fatalf("OpenExisting during a restore: %v, want ErrDataDirInUse", err)
	}
	lock.Release()
	lock.Release()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatalf("open after the restore: %v", err)
	}
	db.Close()
	if fi, err := os.Stat(filepath.Join(dir, store.LockFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the lock file: %v, %v; want it kept, mode 0600", fi, err)
	}
}

// A backup that fails leaves nothing behind, and one that succeeds is a sound devreg database
// that is read as such; a copy of a schema newer than the build's is refused.
func TestBackupFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "data", "devreg.db")); err == nil {
		t.Fatal("opened a database in a directory that does not exist")
	}
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "data", "devreg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o700)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := db.Backup(cancelled, filepath.Join(out, "b.db")); err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	if left, _ := os.ReadDir(out); len(left) > 0 {
		t.Fatalf("a cancelled backup left %v", left)
	}

	info, err := db.Backup(ctx, filepath.Join(out, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	if info.SchemaVersion != db.SchemaVersion() || info.Tables["schema_migrations"] != migrationsIn(t, filepath.Join(dir, "data", "devreg.db")) || len(info.KeyIDs) != 0 {
		t.Errorf("backup info: %+v", info)
	}
	if left, _ := os.ReadDir(out); len(left) != 1 || left[0].Name() != "b.db" {
		t.Errorf("the backup directory holds %v, want b.db alone", left)
	}
	if _, err := db.Backup(ctx, filepath.Join(out, "b.db")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a backup over an existing file: %v", err)
	}

	raw, err := sql.Open("sqlite", filepath.Join(out, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	if _, err := store.InspectFile(ctx, filepath.Join(out, "b.db")); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("inspecting a backup of a newer schema: %v", err)
	}
}

// migrationsIn counts the migrations applied to the SQLite database file: not the last one's
// number, since work done in parallel takes migration numbers apart.
func migrationsIn(t *testing.T, file string) int64 {
	t.Helper()
	raw, err := sql.Open("sqlite", file)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var n int64
	if err := raw.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
