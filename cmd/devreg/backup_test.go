package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/store"
)

// backupSummary is what devreg backup prints.
type backupSummary struct {
	File          string           `json:"file"`
	Time          time.Time        `json:"time"`
	Size          int64            `json:"size"`
	Seconds       float64          `json:"seconds"`
	SchemaVersion int              `json:"schema_version"`
	Devices       int64            `json:"devices"`
	Accounts      int64            `json:"accounts"`
	KeyIDs        []string         `json:"key_ids"`
	Tables        map[string]int64 `json:"tables"`
}

// takeBackup runs devreg backup in dir and returns its summary.
func takeBackup(t *testing.T, dir, to string, args ...string) backupSummary {
	t.Helper()
	code, stdout, stderr := cli{dir: dir}.run(t, "", append([]string{"backup", "--to", to}, args...)...)
	var s backupSummary
	if code != 0 || json.Unmarshal([]byte(stdout), &s) != nil {
		t.Fatalf("backup --to %s = %d:\n%s%s", to, code, stdout, stderr)
	}
	return s
}

// copyKeyFiles copies the key files of one data directory to another, as a restore drill does
// from where key files are backed up.
func copyKeyFiles(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"secret.keys", "signing.keys"} {
		b, err := os.ReadFile(filepath.Join(from, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// deviceToken asks for a device token the way a device does, and returns the status.
func deviceToken(hc *http.Client, base, accountID, deviceID, secret string) (int, error) {
	resp, err := hc.PostForm(base+"/device/v1/token", url.Values{"grant_type": {"client_credentials"}, "account_id": {accountID},
		"client_id": {deviceID}, "client_secret": {secret}})
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestBackupWhileRegistering is the "done when": one process (a server) registers devices
// continuously while another takes three backups; each backup restores into a fresh data
// directory holding copies of the key files, passes devreg check, and every device in it logs in
// with its secret. devreg check on the live directory, in the middle of the registrations, finds
// the counters adding up, which it can only do in one snapshot.
func TestBackupWhileRegistering(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "devreg-data")
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	base, _ := serve(t, dir, "--api-rate-limit", "1000000")
	c := client.New(base, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}

	const batchSize = 100
	var (
		mu       sync.Mutex
		secrets  = map[string]string{} // every device a registration was sent for
		landed   atomic.Int64          // registrations answered 200
		stop     = make(chan struct{})
		regDone  = make(chan error, 1)
		deadline = time.Now().Add(2 * time.Minute)
	)
	go func() {
		for b := 0; ; b++ {
			select {
			case <-stop:
				regDone <- nil
				return
			default:
			}
			lot := make([]client.Credential, batchSize)
			mu.Lock()
			for i := range lot {
				lot[i] = client.Credential{DeviceID: fmt.Sprintf("unit-%04d-%03d", b, i), Secret: credential.RandomString(24)}
				secrets[lot[i].DeviceID] = lot[i].Secret
			}
			mu.Unlock()
			if _, err := c.Register(ctx, dt.ID, lot, client.RegisterOptions{}); err != nil {
				regDone <- fmt.Errorf("registration %d: %w", b, err)
				return
			}
			landed.Add(1)
		}
	}()
	waitFor := func(n int64) {
		t.Helper()
		for landed.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d registrations landed", landed.Load())
			}
			select {
			case err := <-regDone:
				t.Fatal(err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}

	var backups []backupSummary
	for i := range 3 {
		waitFor(int64(10 * (i + 1)))
		before := landed.Load()
		backups = append(backups, takeBackup(t, dir, filepath.Join(dir, fmt.Sprintf("backup-%d.db", i+1))))
		t.Logf("backup %d: %d devices, %d bytes, %.3fs; %d registrations landed while it ran",
			i+1, backups[i].Devices, backups[i].Size, backups[i].Seconds, landed.Load()-before)
		if backups[i].Devices < before*batchSize {
			t.Errorf("backup %d holds %d devices, but %d registrations had landed before it began", i+1, backups[i].Devices, before)
		}
		if i == 1 {
			if code, stdout, stderr := (cli{dir: dir}).run(t, "", "check"); code != 0 {
				t.Errorf("check of the live registry during registrations = %d:\n%s%s", code, stdout, stderr)
			}
		}
	}
	close(stop)
	if err := <-regDone; err != nil {
		t.Fatal(err)
	}

	for i, b := range backups {
		t.Run(fmt.Sprintf("backup-%d", i+1), func(t *testing.T) {
			if b.Devices%batchSize != 0 {
				t.Errorf("backup holds %d devices, not whole registrations of %d", b.Devices, batchSize)
			}
			if len(b.KeyIDs) != 1 || b.Accounts != 1 || b.SchemaVersion < 8 {
				t.Errorf("summary: %+v", b)
			}
			if fi, err := os.Stat(b.File); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("backup file: %v, %v; want mode 0600", fi.Mode(), err)
			}
			fresh := t.TempDir()
			freshData := filepath.Join(fresh, "devreg-data")
			copyKeyFiles(t, data, freshData)
			cl := cli{dir: fresh}
			if code, stdout, stderr := cl.run(t, "", "restore", "--from", b.File); code != 0 || !strings.Contains(stdout, fmt.Sprintf("%d device(s)", b.Devices)) {
				t.Fatalf("restore = %d:\n%s%s", code, stdout, stderr)
			}
			if fi, err := os.Stat(filepath.Join(freshData, "devreg.db")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("restored database: %v, %v; want mode 0600", fi.Mode(), err)
			}
			if code, stdout, stderr := cl.run(t, "", "check"); code != 0 || !strings.Contains(stdout, "the registry adds up") {
				t.Fatalf("check of the restored registry = %d:\n%s%s", code, stdout, stderr)
			}
			restored, _ := serve(t, fresh, "--api-rate-limit", "1000000")
			rc := client.New(restored, acme.APIKey)
			var ids []string
			if err := eachDevice(ctx, rc, client.DeviceQuery{DeviceTypeID: dt.ID}, func(d devreg.Device) error {
				ids = append(ids, d.DeviceID)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if int64(len(ids)) != b.Devices {
				t.Fatalf("the restored server lists %d devices, the backup summary says %d", len(ids), b.Devices)
			}
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			work := make(chan string)
			var failed atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for id := range work {
						mu.Lock()
						secret := secrets[id]
						mu.Unlock()
						status, err := deviceToken(hc, restored, acme.AccountID, id, secret)
						if status != 200 && failed.Add(1) <= 5 {
							t.Errorf("device %s logs in to the restored server: %d, %v", id, status, err)
						}
					}
				}()
			}
			for _, id := range ids {
				work <- id
			}
			close(work)
			wg.Wait()
			t.Logf("%d devices restored, each logged in", len(ids))
		})
	}
}

// TestRestoreRefusals runs devreg restore into every situation it must refuse, and checks that
// each refusal leaves the database as it was.
func TestRestoreRefusals(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := filepath.Join(dir, "devreg-data")
	db := filepath.Join(data, "devreg.db")
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	base, srv := serve(t, dir)
	c := client.New(base, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	register := func(c *client.Client, prefix string, n int) {
		t.Helper()
		lot := make([]client.Credential, n)
		for i := range lot {
			lot[i] = client.Credential{DeviceID: fmt.Sprintf("%s-%03d", prefix, i), Secret: "secret-of-" + prefix + fmt.Sprintf("-%03d", i)}
		}
		if _, err := c.Register(ctx, dt.ID, lot, client.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	register(c, "first", 10)
	good := filepath.Join(dir, "good.db")
	summary := takeBackup(t, dir, good)
	run := func(args ...string) (int, string) {
		t.Helper()
		code, stdout, stderr := cli{dir: dir}.run(t, "", args...)
		return code, stdout + stderr
	}
	digest := func(name string) [32]byte {
		b, _ := os.ReadFile(name)
		return sha256.Sum256(b)
	}

	t.Run("while-a-server-runs", func(t *testing.T) {
		code, out := run("restore", "--from", good, "--force")
		if code != 1 || !strings.Contains(out, "devreg.lock") || !strings.Contains(out, "in use") {
			t.Errorf("restore while the server runs = %d:\n%s", code, out)
		}
		if _, err := c.DeviceType(ctx, dt.ID); err != nil {
			t.Errorf("the server after the refused restore: %v", err)
		}
	})

	t.Run("backup-refusals", func(t *testing.T) {
		kept := digest(good)
		if code, out := run("backup", "--to", good); code != 1 || !strings.Contains(out, "exists") {
			t.Errorf("backup over an existing file = %d:\n%s", code, out)
		}
		if digest(good) != kept {
			t.Errorf("the existing backup changed")
		}
		if code, out := run("backup", "--to", filepath.Join(dir, "pg.db"), "--database", "postgres://nobody@127.0.0.1:1/none"); code != 1 || !strings.Contains(out, "pg_dump") {
			t.Errorf("backup of PostgreSQL = %d:\n%s", code, out)
		}
		empty := filepath.Join(dir, "empty-data")
		if code, out := run("backup", "--to", filepath.Join(dir, "none.db"), "--data", empty); code != 1 || !strings.Contains(out, "no embedded database") {
			t.Errorf("backup of a data directory without a database = %d:\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(empty, "devreg.db")); err == nil {
			t.Errorf("backup created a database in an empty data directory")
		}
		if code, out := run("backup", "--to", filepath.Join(dir, "no-such-dir", "b.db")); code != 1 {
			t.Errorf("backup into a missing directory = %d:\n%s", code, out)
		}
		if code, out := run("restore", "--from", good, "--database", "postgres://nobody@127.0.0.1:1/none"); code != 1 || !strings.Contains(out, "pg_restore") {
			t.Errorf("restore into PostgreSQL = %d:\n%s", code, out)
		}
		for _, name := range []string{"pg.db", "none.db"} {
			if matches, _ := filepath.Glob(filepath.Join(dir, name+"*")); len(matches) > 0 {
				t.Errorf("a failed backup left %v", matches)
			}
		}
	})

	register(c, "second", 10) // in the database, not in the good backup
	stop(t, srv)
	before := digest(db)

	broken := map[string]func() string{
		"not-sqlite": func() string {
			name := filepath.Join(dir, "notes.txt")
			os.WriteFile(name, bytes.Repeat([]byte("not a database\n"), 1000), 0o600)
			return name
		},
		"sqlite-but-not-devreg": func() string {
			name := filepath.Join(dir, "other.db")
			other, err := sql.Open("sqlite", name)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.Exec(`CREATE TABLE things (id INTEGER PRIMARY KEY); INSERT INTO things VALUES (1)`); err != nil {
				t.Fatal(err)
			}
			return name
		},
		"damaged": func() string {
			b, _ := os.ReadFile(good)
			page := 4096
			for p := 2 * page; p+page <= len(b); p += 3 * page { // garbage over every third page after the schema
				copy(b[p+8:p+page], bytes.Repeat([]byte{0xA5}, page-8))
			}
			name := filepath.Join(dir, "damaged.db")
			os.WriteFile(name, b, 0o600)
			return name
		},
		"index-damaged": func() string { // SQLite opens it; its integrity check finds the damage
			src, err := sql.Open("sqlite", "file:"+good+"?mode=ro")
			if err != nil {
				t.Fatal(err)
			}
			var root int
			err = src.QueryRow(`SELECT rootpage FROM sqlite_schema WHERE name = 'devices_id'`).Scan(&root)
			src.Close()
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(good)
			page := b[(root-1)*4096 : root*4096]
			i := bytes.Index(page, []byte("first-003"))
			if i < 0 {
				t.Fatal("no first-003 in the index devices_id")
			}
			page[i+8] = 'X' // the index now names a device that the table does not hold
			name := filepath.Join(dir, "index-damaged.db")
			os.WriteFile(name, b, 0o600)
			return name
		},
		"truncated": func() string {
			b, _ := os.ReadFile(good)
			name := filepath.Join(dir, "truncated.db")
			os.WriteFile(name, b[:len(b)/2], 0o600)
			return name
		},
	}
	for name, write := range broken {
		t.Run("unsound-backup/"+name, func(t *testing.T) {
			file := write()
			code, out := run("restore", "--from", file, "--force")
			if code != 1 || !strings.Contains(out, "nothing was changed") {
				t.Errorf("restore of a %s file = %d:\n%s", name, code, out)
			}
			if digest(db) != before {
				t.Errorf("the database changed")
			}
			if left, _ := filepath.Glob(filepath.Join(data, "*.restoring*")); len(left) > 0 {
				t.Errorf("a refused restore left %v", left)
			}
		})
	}

	t.Run("existing-database-without-force", func(t *testing.T) {
		code, out := run("restore", "--from", good)
		if code != 1 || !strings.Contains(out, "--force") {
			t.Errorf("restore over a database without --force = %d:\n%s", code, out)
		}
		if digest(db) != before {
			t.Errorf("the database changed")
		}
	})

	t.Run("key-ids-missing", func(t *testing.T) {
		fresh := filepath.Join(t.TempDir(), "data")
		code, out := run("restore", "--from", good, "--data", fresh)
		if code != 1 || !strings.Contains(out, summary.KeyIDs[0]) || !strings.Contains(out, "no key file") {
			t.Errorf("restore into a directory without a key file = %d:\n%s", code, out)
		}
		os.WriteFile(filepath.Join(fresh, "secret.keys"), []byte(credential.NewKeyLine()+"\n"), 0o600)
		code, out = run("restore", "--from", good, "--data", fresh)
		if code != 1 || !strings.Contains(out, summary.KeyIDs[0]) || !strings.Contains(out, "lacks") {
			t.Errorf("restore into a directory with another key file = %d:\n%s", code, out)
		}
		if _, err := os.Stat(filepath.Join(fresh, "devreg.db")); err == nil {
			t.Errorf("a refused restore left a database")
		}
	})

	t.Run("force-keeps-the-old-database-and-drops-stale-wal", func(t *testing.T) {
		// A server killed mid-work leaves its write-ahead log; replayed into the restored file it
		// would bring back (or garble) what the backup does not hold.
		base, srv := serve(t, dir)
		register(client.New(base, acme.APIKey), "third", 10)
		srv.Process.Kill()
		srv.Wait()
		if fi, err := os.Stat(db + "-wal"); err != nil || fi.Size() == 0 {
			t.Fatalf("the killed server left no write-ahead log: %v", err)
		}
		code, out := run("restore", "--from", good, "--force")
		if code != 0 {
			t.Fatalf("restore --force = %d:\n%s", code, out)
		}
		for _, suffix := range []string{"-wal", "-shm", "-journal"} {
			if _, err := os.Stat(db + suffix); err == nil {
				t.Errorf("%s is still there after the restore", db+suffix)
			}
		}
		kept, _ := filepath.Glob(db + ".before-restore-*")
		if len(kept) != 2 || !strings.Contains(out, filepath.Base(kept[0])+"\n") { // the database and its -wal
			t.Fatalf("kept %v; output:\n%s", kept, out)
		}
		count := func(file string) (n int) {
			t.Helper()
			raw, err := sql.Open("sqlite", "file:"+file+"?mode=ro")
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if err := raw.QueryRow(`SELECT count(*) FROM devices`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count(db); int64(n) != summary.Devices {
			t.Errorf("the restored database holds %d devices, the backup %d", n, summary.Devices)
		}
		if n := count(kept[0]); n != 30 {
			t.Errorf("the kept database holds %d devices, want all 30 (its write-ahead log kept with it)", n)
		}
		if code, out := run("check"); code != 0 {
			t.Errorf("check after the restore = %d:\n%s", code, out)
		}
		// The kept database, restored with the write-ahead log kept beside it, is whole again.
		if code, out := run("restore", "--from", kept[0], "--force"); code != 0 || !strings.Contains(out, "30 device(s)") {
			t.Errorf("restore of the kept database and its log = %d:\n%s", code, out)
		}
		if n := count(db); n != 30 {
			t.Errorf("the database restored from the kept one holds %d devices, want 30", n)
		}
	})
}

// TestCheck breaks, one at a time, each thing devreg check checks in a real database, on each
// database, and sees check exit 1 naming it, and 0 once it is mended.
func TestCheck(t *testing.T) {
	pgtest.Each(t, testCheck)
}

func testCheck(t *testing.T, database string) {
	ctx := context.Background()
	dir := t.TempDir()
	dbArgs := []string{"--database", database}
	driver, dsn := "sqlite", strings.TrimPrefix(database, "sqlite:")
	if store.IsPostgres(database) {
		driver, dsn = "pgx", database
	}
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	base, _ := serve(t, dir, dbArgs...)
	c := client.New(base, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	var batches []string
	for b := range 2 {
		lot := make([]client.Credential, 10)
		for i := range lot {
			lot[i] = client.Credential{DeviceID: fmt.Sprintf("unit-%d-%d", b, i), Secret: fmt.Sprintf("secret-of-unit-%d-%d", b, i)}
		}
		res, err := c.Register(ctx, dt.ID, lot, client.RegisterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, res.BatchID)
	}
	if _, err := c.AddCredential(ctx, "unit-1-0", devreg.NewCredential{Secret: "a-second-secret-of-unit-1-0"}); err != nil {
		t.Fatal(err)
	}
	// unit-0-0 connects: its batch counts one device connected.
	resp, err := http.PostForm(base+"/device/v1/token", url.Values{"grant_type": {"client_credentials"}, "account_id": {acme.AccountID},
		"client_id": {"unit-0-0"}, "client_secret": {"secret-of-unit-0-0"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequest("POST", base+"/device/v1/checkin", strings.NewReader(`{"firmware_version": "1.0.0"}`))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 204 {
		t.Fatalf("check-in: %v %v", resp, err)
	}

	check := func() (int, string) {
		t.Helper()
		code, stdout, stderr := cli{dir: dir}.run(t, "", append([]string{"check"}, dbArgs...)...)
		return code, stdout + stderr
	}
	if code, out := check(); code != 0 || !strings.Contains(out, "the registry adds up") || !strings.Contains(out, "2 batches") {
		t.Fatalf("check of a sound registry = %d:\n%s", code, out)
	}

	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	bind := func(q string) string { // '?' to '$n' on PostgreSQL
		if driver != "pgx" {
			return q
		}
		for n := 1; strings.Contains(q, "?"); n++ {
			q = strings.Replace(q, "?", fmt.Sprintf("$%d", n), 1)
		}
		return q
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := raw.Exec(bind(q), args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var keyID string
	if err := raw.QueryRow(`SELECT key_id FROM devices WHERE device_id = 'unit-0-1'`).Scan(&keyID); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name         string
		breakIt, fix string
		args         []any
		want         []string
	}{
		{"device-type-count", `UPDATE device_types SET device_count = device_count + 1`, `UPDATE device_types SET device_count = device_count - 1`, nil,
			[]string{"device type " + dt.ID, "device_count is 21, but 20 devices have this type"}},
		{"batch-device-count", `UPDATE batches SET device_count = device_count - 1 WHERE id = ?`, `UPDATE batches SET device_count = device_count + 1 WHERE id = ?`, []any{batches[1]},
			[]string{"batch " + batches[1], "device_count is 9, but it holds 10 devices"}},
		{"batch-connected-count", `UPDATE batches SET connected_count = 0 WHERE id = ?`, `UPDATE batches SET connected_count = 1 WHERE id = ?`, []any{batches[0]},
			[]string{"batch " + batches[0], "connected_count is 0, but 1 of its devices have been seen"}},
		{"device-hash-key", `UPDATE devices SET key_id = 'k_lost' WHERE device_id = 'unit-0-1'`, `UPDATE devices SET key_id = ? WHERE device_id = 'unit-0-1'`, nil,
			[]string{"key k_lost is not in", "1 device secrets and 0 further credentials"}},
		{"credential-hash-key", `UPDATE credentials SET key_id = 'k_gone'`, `UPDATE credentials SET key_id = ?`, nil,
			[]string{"key k_gone is not in", "0 device secrets and 1 further credentials"}},
		{"audit-chain", `UPDATE audit_log SET entry = replace(entry, 'Meter', 'Meters') WHERE seq = 2`, `UPDATE audit_log SET entry = replace(entry, 'Meters', 'Meter') WHERE seq = 2`, nil,
			[]string{"PROBLEM  audit log", "entry 2: changed"}},
		{"schema-version", `INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)`, `DELETE FROM schema_migrations WHERE version = 99`, nil,
			[]string{"the schema version is 99, but this devreg's is"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exec(tc.breakIt, tc.args...)
			code, out := check()
			fixArgs := tc.args
			if strings.Contains(tc.fix, "key_id = ?") {
				fixArgs = []any{keyID}
			}
			exec(tc.fix, fixArgs...)
			if code != 1 {
				t.Errorf("check with %s broken = %d, want 1:\n%s", tc.name, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("check with %s broken does not say %q:\n%s", tc.name, w, out)
				}
			}
			if code, out := check(); code != 0 {
				t.Fatalf("check once %s is mended = %d:\n%s", tc.name, code, out)
			}
		})
	}

	t.Run("key-file-missing", func(t *testing.T) {
		keys := filepath.Join(dir, "devreg-data", "secret.keys")
		if err := os.Rename(keys, keys+".away"); err != nil {
			t.Fatal(err)
		}
		code, out := check()
		_, statErr := os.Stat(keys)
		if err := os.Rename(keys+".away", keys); err != nil {
			t.Fatal(err)
		}
		if code != 1 || !strings.Contains(out, "key "+keyID+" is not in") || !strings.Contains(out, "does not exist") {
			t.Errorf("check without the key file = %d:\n%s", code, out)
		}
		if statErr == nil {
			t.Errorf("check created a key file")
		}
	})
}
