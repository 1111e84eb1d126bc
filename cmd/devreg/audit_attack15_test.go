package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
	"devreg/store"
)

// atk15Store is a test's database: the arguments that select it and raw access to it.
type atk15Store struct {
	args   []string // --database URL
	driver string
	dsn    string
	pg     bool
}

// atk15StoreOn is the database at url, of pgtest.Each.
func atk15StoreOn(url string) atk15Store {
	if store.IsPostgres(url) {
		return atk15Store{args: []string{"--database", url}, driver: "pgx", dsn: url, pg: true}
	}
	return atk15Store{args: []string{"--database", url}, driver: "sqlite", dsn: strings.TrimPrefix(url, "sqlite:")}
}

// q turns ? placeholders into PostgreSQL's $n where needed.
func (st atk15Store) q(query string) string {
	if !st.pg {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// atk15GrowChain appends n valid entries to the account's chain directly in the database (the
// same entries the server would append for n changes of a device type's description), so that a
// test has a long chain without making n requests.
func atk15GrowChain(t *testing.T, st atk15Store, accountID, keyID, typeID string, n int) {
	t.Helper()
	db, err := sql.Open(st.driver, st.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var seq, at int64
	var prev string
	if err := tx.QueryRow(st.q(`SELECT seq, time, hash FROM audit_heads WHERE account_id = ?`), accountID).Scan(&seq, &at, &prev); err != nil {
		t.Fatal(err)
	}
	ins, err := tx.Prepare(st.q(`INSERT INTO audit_log (account_id, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`))
	if err != nil {
		t.Fatal(err)
	}
	defer ins.Close()
	for i := range n {
		seq++
		at++
		e := devreg.AuditEntry{ID: fmt.Sprintf("aud_atk15x%08d", i), AccountID: accountID, Seq: seq, Time: time.UnixMicro(at).UTC(),
			Actor: devreg.AuditActor{Type: devreg.ActorAPIKey, ID: keyID, Name: "owner"}, IP: "127.0.0.1", RequestID: "atk15",
			Action: "devicetype.update", Object: devreg.AuditObject{Type: "devicetype", ID: typeID},
			Details: map[string]any{"old": map[string]any{"description": ""}, "new": map[string]any{"description": fmt.Sprint(i)}}}
		canonical, err := e.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		prev = devreg.ChainHash(prev, canonical)
		if _, err := ins.Exec(accountID, seq, at, e.Action, e.Actor.Type, keyID, e.Object.Type, typeID, string(canonical), prev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(st.q(`UPDATE audit_heads SET seq = ?, time = ?, hash = ? WHERE account_id = ?`), seq, at, prev, accountID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestAttack15VerifyWhileTheServerWrites: `devreg audit verify` run against the database of a
// server that is serving (from cron, say, as one does with a tamper check) reports the log as
// BROKEN and exits 1 whenever a change is made while it reads: it reads every account's stored
// head first and then walks each chain to its end, in many queries outside one snapshot, and
// any entry appended meanwhile is "removed or added past the head":
//
//	BROKEN: account acc_…: the stored head is entry 22397 (…) but the chain ends at entry 24130 (…):
//	entries were removed or added past the head
//
// What should happen: an untouched log verifies (exit 0) however busy the server is. Fix: read
// each chain and its head in one snapshot (store.DB.ReadSnapshot, as `devreg check` does), or
// walk a chain only up to the head read first.
func TestAttack15VerifyWhileTheServerWrites(t *testing.T) {
	pgtest.Each(t, testAttack15VerifyWhileTheServerWrites)
}

func testAttack15VerifyWhileTheServerWrites(t *testing.T, database string) {
	dir, st := t.TempDir(), atk15StoreOn(database)
	ctx := context.Background()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", st.args...)
	url, _ := serve(t, dir, append([]string{"--api-rate-limit", "1000000000"}, st.args...)...)
	c := client.New(url, acme.APIKey)
	name := "Thermostat"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.ListAPIKeys(ctx)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %+v, %v", keys, err)
	}
	// A chain as long as a few weeks of a busy account's changes, so that a walk takes a moment.
	atk15GrowChain(t, st, acme.AccountID, keys[0].ID, dt.ID, 10000)
	verify := func() (int, string) {
		code, stdout, stderr := cli{dir: dir}.run(t, "", append([]string{"audit", "verify"}, st.args...)...)
		return code, stdout + stderr
	}
	if code, out := verify(); code != 0 {
		t.Fatalf("verify of an untouched log on an idle server = %d:\n%s", code, out)
	}

	// The server keeps changing things, as servers do.
	stop := make(chan struct{})
	var changes atomic.Int64
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				desc := fmt.Sprintf("worker %d change %d", w, i)
				if _, err := c.UpdateDeviceType(ctx, dt.ID, client.DeviceTypeInput{Description: &desc}); err != nil {
					t.Error(err)
					return
				}
				changes.Add(1)
			}
		})
	}
	for changes.Load() == 0 && !t.Failed() {
		time.Sleep(10 * time.Millisecond)
	}
	broken := 0
	var first string
	for range 4 {
		if code, out := verify(); code != 0 {
			broken++
			if first == "" {
				first = out
			}
		}
	}
	close(stop)
	wg.Wait()
	if broken > 0 {
		t.Errorf("`devreg audit verify` said the untouched log is broken in %d of 4 runs while the server made changes; the first:\n%s", broken, first)
	}
	if code, out := verify(); code != 0 {
		t.Errorf("verify once the server is idle again = %d:\n%s", code, out)
	}
}

// TestAttack15VerifyNeedsNoSecretKeys: checking the audit log needs read access to the database and
// nothing else: it is the auditor's tool, to be run with a head kept elsewhere, possibly on
// another machine or against a copy. `devreg audit verify` instead opens the whole registry: it
// refuses to run without the server's secret key file (the HMAC key of every device secret, the
// most sensitive file devreg has) once the database holds a device, and on a database without
// devices it writes a new secret key file into --data. (It also runs the schema migrations, so
// it cannot run with a read-only database role, and would upgrade a copy it is only meant to
// read.)
//
//	devreg: the secret key file …/secret.keys is missing, but the database holds devices whose
//	secrets were hashed with it; put the key file back from your backup …
//
// What should happen: exit 0 for an untouched log, with no key file needed nor made. Fix: open the
// store without migrating (store.OpenExisting, as backup does) and without a keyring; VerifyAudit
// needs none.
func TestAttack15VerifyNeedsNoSecretKeys(t *testing.T) {
	pgtest.Each(t, testAttack15VerifyNeedsNoSecretKeys)
}

func testAttack15VerifyNeedsNoSecretKeys(t *testing.T, database string) {
	dir, st := t.TempDir(), atk15StoreOn(database)
	ctx := context.Background()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", st.args...)
	url, _ := serve(t, dir, st.args...)
	c := client.New(url, acme.APIKey)
	name := "Thermostat"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, dt.ID, []client.Credential{{DeviceID: "d1", Secret: "secret-of-d1"}}, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	// The auditor's directory: a copy of the SQLite database (made with devreg backup), which
	// audit verify reads as the embedded database of its --data, or nothing at all for
	// PostgreSQL; never the server's key files.
	auditor := filepath.Join(t.TempDir(), "auditor")
	args := []string{"audit", "verify", "--data", auditor}
	if st.pg {
		args = append(args, st.args...)
	} else {
		if err := os.MkdirAll(auditor, 0o700); err != nil {
			t.Fatal(err)
		}
		if code, out, errOut := (cli{dir: dir}).run(t, "", append([]string{"backup", "--to", filepath.Join(auditor, "devreg.db")}, st.args...)...); code != 0 {
			t.Fatalf("backup = %d %s %s", code, out, errOut)
		}
	}
	code, out, errOut := cli{dir: dir}.run(t, "", args...)
	if code != 0 || !strings.Contains(out, "every chain verifies") {
		t.Errorf("audit verify of an untouched log without the server's key files = %d:\n%s%s", code, out, errOut)
	}
	for _, f := range []string{"secret.keys", "signing.keys"} {
		if _, err := os.Stat(filepath.Join(auditor, f)); err == nil {
			t.Errorf("audit verify wrote %s into the auditor's --data directory", f)
		}
	}
}
