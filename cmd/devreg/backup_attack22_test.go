package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"devreg/client"
	"devreg/internal/pgtest"
)

// registryWithBackup makes a registry in dir with a few devices, stops its server, and takes a
// backup of it with devreg backup; it returns the data directory and the backup.
func registryWithBackup(t *testing.T, dir string) (data, backup string) {
	t.Helper()
	ctx := context.Background()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	base, srv := serve(t, dir)
	c := client.New(base, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	lot := make([]client.Credential, 20)
	for i := range lot {
		lot[i] = client.Credential{DeviceID: fmt.Sprintf("unit-%03d", i), Secret: fmt.Sprintf("secret-of-unit-%03d", i)}
	}
	if _, err := c.Register(ctx, dt.ID, lot, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	stop(t, srv)
	backup = filepath.Join(dir, "good.db")
	takeBackup(t, dir, backup)
	return filepath.Join(dir, "devreg-data"), backup
}

func fileDigest(t *testing.T, name string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func copyFileForTest(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// trojan is a change to a devreg database that its integrity check and row counts do not see.
type trojan struct {
	name       string
	sqlite, pg string // the change on each database; "" where it does not apply
	undoPG     string
	want       string // what the refusal and the check must say
}

// trojans are the three triggers (two zero the login throttle's counts, one keeps
// deleted API keys), and a view, an index, an altered table, a missing index and schema
// versions that do not fit.
var trojans = []trojan{
	{name: "trigger-zeroes-new-failures",
		sqlite: `CREATE TRIGGER t_zero_failures AFTER INSERT ON failures BEGIN UPDATE failures SET count = 0 WHERE key = NEW.key; END`,
		pg: `CREATE FUNCTION zero_failures() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.count := 0; RETURN NEW; END$$;
			CREATE TRIGGER t_zero_failures BEFORE INSERT ON failures FOR EACH ROW EXECUTE FUNCTION zero_failures()`,
		undoPG: `DROP TRIGGER t_zero_failures ON failures; DROP FUNCTION zero_failures()`,
		want:   `trigger "t_zero_failures" on table failures is not part of devreg's schema (version `},
	{name: "trigger-zeroes-counted-failures",
		sqlite: `CREATE TRIGGER t_zero_counts AFTER UPDATE OF count ON failures WHEN NEW.count > 0 BEGIN UPDATE failures SET count = 0 WHERE key = NEW.key; END`,
		pg: `CREATE FUNCTION zero_counts() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.count := 0; RETURN NEW; END$$;
			CREATE TRIGGER t_zero_counts BEFORE UPDATE OF count ON failures FOR EACH ROW EXECUTE FUNCTION zero_counts()`,
		undoPG: `DROP TRIGGER t_zero_counts ON failures; DROP FUNCTION zero_counts()`,
		want:   `trigger "t_zero_counts" on table failures is not part of devreg's schema`},
	{name: "trigger-keeps-deleted-keys",
		sqlite: `CREATE TRIGGER t_keep_keys BEFORE DELETE ON api_keys BEGIN SELECT RAISE(IGNORE); END`,
		pg: `CREATE FUNCTION keep_keys() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
			CREATE TRIGGER t_keep_keys BEFORE DELETE ON api_keys FOR EACH ROW EXECUTE FUNCTION keep_keys()`,
		undoPG: `DROP TRIGGER t_keep_keys ON api_keys; DROP FUNCTION keep_keys()`,
		want:   `trigger "t_keep_keys" on table api_keys is not part of devreg's schema`},
	{name: "function",
		pg:     `CREATE FUNCTION keep_keys() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$`,
		undoPG: `DROP FUNCTION keep_keys()`,
		want:   `function "keep_keys()" is not part of devreg's schema`},
	{name: "rule-keeps-deleted-keys",
		pg:     `CREATE RULE keep_keys AS ON DELETE TO api_keys DO INSTEAD NOTHING`,
		undoPG: `DROP RULE keep_keys ON api_keys`,
		want:   `rule "keep_keys" on table api_keys is not part of devreg's schema`},
	{name: "view",
		sqlite: `CREATE VIEW v_hashes AS SELECT device_id, secret_hash FROM devices`,
		pg:     `CREATE VIEW v_hashes AS SELECT device_id, secret_hash FROM devices`,
		undoPG: `DROP VIEW v_hashes`,
		want:   `view "v_hashes" is not part of devreg's schema`},
	{name: "index",
		sqlite: `CREATE INDEX devices_key ON devices (key_id)`,
		pg:     `CREATE INDEX devices_key ON devices (key_id)`,
		undoPG: `DROP INDEX devices_key`,
		want:   `index "devices_key" on table devices is not part of devreg's schema`},
	{name: "altered-table",
		sqlite: `ALTER TABLE api_keys ADD COLUMN note TEXT`,
		pg:     `ALTER TABLE api_keys ADD COLUMN note TEXT`,
		undoPG: `ALTER TABLE api_keys DROP COLUMN note`,
		want:   `table "api_keys" differs from devreg's schema`},
	{name: "table-inheriting-keys", // its rows show in every query of api_keys
		pg:     `CREATE SCHEMA elsewhere; CREATE TABLE elsewhere.more_keys () INHERITS (api_keys)`,
		undoPG: `DROP SCHEMA elsewhere CASCADE`,
		want:   `table "api_keys" differs from devreg's schema`},
	{name: "operator-ahead-of-pg_catalog", // an = of bytea that is always true: a made-up API key finds the owner's
		pg: `CREATE SCHEMA elsewhere;
			CREATE FUNCTION elsewhere.always(bytea, bytea) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
			CREATE OPERATOR elsewhere.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = elsewhere.always);
			DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, elsewhere, pg_catalog', current_database()); END$$`,
		undoPG: `DO $$BEGIN EXECUTE format('ALTER DATABASE %I RESET search_path', current_database()); END$$; DROP SCHEMA elsewhere CASCADE`,
		want:   `the search path is public, elsewhere, pg_catalog, but devreg's queries need pg_catalog first`},
	{name: "schema-behind-pg_catalog",
		pg:     `CREATE SCHEMA elsewhere; DO $$BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = public, elsewhere', current_database()); END$$`,
		undoPG: `DO $$BEGIN EXECUTE format('ALTER DATABASE %I RESET search_path', current_database()); END$$; DROP SCHEMA elsewhere CASCADE`,
		want:   `the search path is pg_catalog, public, elsewhere, but`},
	{name: "missing-index",
		sqlite: `DROP INDEX devices_batch`,
		pg:     `DROP INDEX devices_batch`,
		undoPG: `CREATE INDEX devices_batch ON devices (account_num, batch_id, seq)`,
		want:   `index "devices_batch" on table devices is missing: devreg's schema (version `},
	{name: "migration-row-missing",
		sqlite: `DELETE FROM schema_migrations WHERE version = 3`,
		pg:     `DELETE FROM schema_migrations WHERE version = 3`,
		undoPG: `INSERT INTO schema_migrations (version, applied_at) VALUES (3, 0)`,
		want:   `schema_migrations lists the versions [1, 2, 4,`},
	{name: "newer-release",
		sqlite: `INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`,
		pg:     `INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)`,
		undoPG: `DELETE FROM schema_migrations WHERE version = 999`,
		want:   `newer devreg release`},
}

// TestRestoreRefusesTrojanBackup is issue 22's finding 4: triggers added to a real backup passed
// restore and check, and took effect in the server. Each change is refused by restore, naming
// it, with nothing replaced, and reported by check; the clean backup still restores.
func TestRestoreRefusesTrojanBackup(t *testing.T) {
	dir := t.TempDir()
	data, good := registryWithBackup(t, dir)
	db := filepath.Join(data, "devreg.db")
	before := fileDigest(t, db)
	for _, tc := range trojans {
		if tc.sqlite == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "backup.db")
			copyFileForTest(t, good, file)
			raw, err := sql.Open("sqlite", file)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := raw.Exec(tc.sqlite); err != nil {
				t.Fatal(err)
			}
			raw.Close()

			code, stdout, stderr := cli{dir: dir}.run(t, "", "restore", "--from", file, "--force")
			if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "nothing was changed") {
				t.Errorf("restore = %d, want 1 saying %q:\n%s%s", code, tc.want, stdout, stderr)
			}
			if fileDigest(t, db) != before {
				t.Errorf("the refused restore changed the database")
			}
			if left, _ := filepath.Glob(filepath.Join(data, "devreg.db.*")); len(left) > 0 {
				t.Errorf("the refused restore left %v", left)
			}

			// The same file as the database of a data directory: check reports it.
			other := filepath.Join(t.TempDir(), "devreg-data")
			copyKeyFiles(t, data, other)
			copyFileForTest(t, file, filepath.Join(other, "devreg.db"))
			code, stdout, stderr = cli{dir: dir}.run(t, "", "check", "--data", other)
			if code != 1 || !strings.Contains(stdout, "PROBLEM  schema") || !strings.Contains(stdout, tc.want) {
				t.Errorf("check = %d, want 1 saying %q:\n%s%s", code, tc.want, stdout, stderr)
			}
		})
	}
	code, stdout, stderr := cli{dir: dir}.run(t, "", "restore", "--from", good, "--force")
	if code != 0 {
		t.Fatalf("restore of the clean backup = %d:\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := (cli{dir: dir}).run(t, "", "check"); code != 0 || !strings.Contains(stdout, "ok       schema") {
		t.Fatalf("check after restoring the clean backup = %d:\n%s%s", code, stdout, stderr)
	}
}

// TestCheckFindsTrojanSchema: on PostgreSQL, devreg check compares the schema with the one
// devreg's migrations make, and reports each change (and none once it is undone).
func TestCheckFindsTrojanSchema(t *testing.T) {
	database := pgtest.NewDatabase(t)
	dir := t.TempDir()
	createAccount(t, dir, "Acme", "ops@acme.test", "--database", database)
	check := func() (int, string) {
		t.Helper()
		code, stdout, stderr := cli{dir: dir}.run(t, "", "check", "--database", database)
		return code, stdout + stderr
	}
	if code, out := check(); code != 0 || !strings.Contains(out, "ok       schema") {
		t.Fatalf("check of a sound database = %d:\n%s", code, out)
	}
	raw, err := sql.Open("pgx", database)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, tc := range trojans {
		if tc.pg == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if _, err := raw.Exec(tc.pg); err != nil {
				t.Fatal(err)
			}
			code, out := check()
			if _, err := raw.Exec(tc.undoPG); err != nil {
				t.Fatal(err)
			}
			if code != 1 || !strings.Contains(out, "PROBLEM  schema") || !strings.Contains(out, tc.want) {
				t.Errorf("check = %d, want 1 saying %q:\n%s", code, tc.want, out)
			}
			if code, out := check(); code != 0 {
				t.Fatalf("check once it is undone = %d:\n%s", code, out)
			}
		})
	}
	var schemas int
	if err := raw.QueryRow(`SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'devreg_expected_%'`).Scan(&schemas); err != nil || schemas != 0 {
		t.Errorf("check left %d scratch schemas (%v)", schemas, err)
	}
}

// TestBackupRefusesSQLiteSideFileNames is issue 22's finding 8: a backup written as
// DATA/devreg.db-journal is taken by SQLite for a hot journal of the live database and deleted by
// the next command that opens it alone. backup refuses names SQLite keeps for itself, anywhere,
// and any place in the data directory, however it is named; restore refuses such names too.
func TestBackupRefusesSQLiteSideFileNames(t *testing.T) {
	dir := t.TempDir()
	data, good := registryWithBackup(t, dir)
	out := filepath.Join(dir, "backups")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(data, filepath.Join(dir, "data-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(data, "sub"), filepath.Join(out, "into-data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(data, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	before := fileDigest(t, filepath.Join(data, "devreg.db"))
	listing := func(dir string) []string {
		names, _ := filepath.Glob(filepath.Join(dir, "*"))
		return names
	}
	dataFiles, outFiles := listing(data), listing(out)
	for _, tc := range []struct{ to, want string }{
		{filepath.Join(data, "devreg.db-journal"), "ends in -journal"},
		{"devreg-data/devreg.db-journal", "ends in -journal"}, // relative to the working directory
		{filepath.Join(out, "devreg.db-wal"), "ends in -wal"},
		{filepath.Join(out, "b.db-shm"), "ends in -shm"},
		{filepath.Join(out, "b.db-mj0A1B2C9D3"), "ends in -mj0A1B2C9D3"},
		{filepath.Join(data, "backup.db"), "in the data directory"},
		{data, "in the data directory"},
		{"devreg-data/sub/../backup.db", "in the data directory"},
		{filepath.Join(dir, "data-link", "backup.db"), "in the data directory"},
		{filepath.Join(out, "into-data", "backup.db"), "in the data directory"},
	} {
		t.Run(tc.to, func(t *testing.T) {
			code, stdout, stderr := cli{dir: dir}.run(t, "", "backup", "--to", tc.to)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("backup --to %s = %d, want 1 saying %q:\n%s%s", tc.to, code, tc.want, stdout, stderr)
			}
		})
	}
	if got := listing(data); fmt.Sprint(got) != fmt.Sprint(dataFiles) {
		t.Errorf("the data directory holds %v after the refused backups, before %v", got, dataFiles)
	}
	if got := listing(out); fmt.Sprint(got) != fmt.Sprint(outFiles) {
		t.Errorf("the backup directory holds %v after the refused backups, before %v", got, outFiles)
	}
	if fileDigest(t, filepath.Join(data, "devreg.db")) != before {
		t.Errorf("the database changed")
	}
	takeBackup(t, dir, filepath.Join(out, "next.db")) // a backup with a name of its own, elsewhere

	// restore reads from none of SQLite's side files, nor from the database's own files.
	wal := filepath.Join(out, "good.db-wal")
	copyFileForTest(t, good, wal)
	restoring := filepath.Join(data, "devreg.db.restoring")
	copyFileForTest(t, good, restoring)
	for _, tc := range []struct{ from, want string }{
		{wal, "named like the write-ahead log SQLite keeps beside a database (-wal)"},
		{filepath.Join(data, "devreg.db"), "is the database itself"},
		{restoring, "the working copy of a restore that was cut short"},
	} {
		t.Run("restore-from-"+filepath.Base(tc.from), func(t *testing.T) {
			code, stdout, stderr := cli{dir: dir}.run(t, "", "restore", "--from", tc.from, "--force")
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("restore --from %s = %d, want 1 saying %q:\n%s%s", tc.from, code, tc.want, stdout, stderr)
			}
			if _, err := os.Stat(tc.from); err != nil {
				t.Errorf("the refused restore removed %s", tc.from)
			}
		})
	}
	if fileDigest(t, filepath.Join(data, "devreg.db")) != before {
		t.Errorf("the database changed")
	}
}

// stateWriter records, with each line written, whether the files named exist at that moment.
type stateWriter struct {
	buf   bytes.Buffer
	watch []string
	seen  []string // per write: the watched files that existed
}

func (w *stateWriter) Write(p []byte) (int, error) {
	var there []string
	for _, name := range w.watch {
		if _, err := os.Stat(name); err == nil {
			there = append(there, filepath.Base(name))
		}
	}
	w.seen = append(w.seen, fmt.Sprintf("%q with %v", strings.TrimSpace(string(p)), there))
	return w.buf.Write(p)
}

// TestRestoreSaysWhatItWrites is issue 22's finding 9 (restore): a 3 GiB sparse file was written
// fully allocated without a word. restore says what it copies, where, and the room there before
// it writes anything, refuses when the room is short, and keeps the backup's holes.
func TestRestoreSaysWhatItWrites(t *testing.T) {
	dir := t.TempDir()
	data, good := registryWithBackup(t, dir)
	// A backup with 256 MiB of holes at its end, which SQLite does not read.
	sparse := filepath.Join(dir, "sparse.db")
	copyFileForTest(t, good, sparse)
	fi, err := os.Stat(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(sparse, fi.Size()+256<<20); err != nil {
		t.Fatal(err)
	}

	restore := func(t *testing.T, target string, free int64) (int, *stateWriter, string) {
		t.Helper()
		stdout := &stateWriter{watch: []string{filepath.Join(target, "devreg.db"), filepath.Join(target, "devreg.db.restoring")}}
		var stderr bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: &stderr, Getenv: func(string) string { return "" },
			DiskFree: func(dir string) (int64, error) {
				if dir != target {
					t.Errorf("free room read for %s, want %s", dir, target)
				}
				return free, nil
			}}
		code := m.Run(context.Background(), []string{"restore", "--data", target, "--from", sparse})
		return code, stdout, stderr.String()
	}

	t.Run("short-of-room", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "devreg-data")
		copyKeyFiles(t, data, target)
		code, stdout, stderr := restore(t, target, 10<<20)
		if code != 1 || !strings.Contains(stderr, "has 10.0 MiB free, but the restore needs") {
			t.Errorf("restore with 10 MiB free = %d:\n%s%s", code, stdout.buf.String(), stderr)
		}
		if len(stdout.seen) == 0 || !strings.Contains(stdout.seen[0], "restore copies "+sparse) {
			t.Errorf("restore said %v before refusing, want what it would copy", stdout.seen)
		}
		if left, _ := filepath.Glob(filepath.Join(target, "devreg.db*")); len(left) > 0 {
			t.Errorf("the refused restore left %v", left)
		}
	})

	t.Run("room-enough", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "devreg-data")
		copyKeyFiles(t, data, target)
		code, stdout, stderr := restore(t, target, 1<<40)
		if code != 0 {
			t.Fatalf("restore = %d:\n%s%s", code, stdout.buf.String(), stderr)
		}
		plan := stdout.seen[0]
		for _, want := range []string{"restore copies " + sparse, "hold data; the holes stay holes", filepath.Join(target, "devreg.db.restoring"),
			target + " has 1.0 TiB free; the restore needs", "with []"} { // nothing written yet when it says so
			if !strings.Contains(plan, want) {
				t.Errorf("restore's first line %s does not say %q", plan, want)
			}
		}
		restored, err := os.Stat(filepath.Join(target, "devreg.db"))
		if err != nil {
			t.Fatal(err)
		}
		blocks := restored.Sys().(*syscall.Stat_t).Blocks * 512
		if restored.Size() != fi.Size()+256<<20 || blocks > 64<<20 {
			t.Errorf("the restored file has %d bytes, %d of them allocated; want %d, with the 256 MiB of holes kept", restored.Size(), blocks, fi.Size()+256<<20)
		}
		if code, stdout, stderr := (cli{dir: dir}).run(t, "", "check", "--data", target); code != 0 {
			t.Errorf("check of the restored sparse file = %d:\n%s%s", code, stdout, stderr)
		}
	})
}
