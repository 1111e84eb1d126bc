package registry

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// auditEnv is two services (two servers) over one database, with raw access to it for the
// tampering an attacker with write access could do.
type auditEnv struct {
	svc, svc2 *Service
	raw       *sql.DB
	pg        bool
	admin     context.Context // an admin key's caller, from 203.0.113.9, request req-1
	acc       devreg.Account
}

func newAuditEnv(t *testing.T, url string) *auditEnv {
	t.Helper()
	ctx := context.Background()
	driver, dsn := "sqlite", strings.TrimPrefix(url, "sqlite:")
	if store.IsPostgres(url) {
		driver, dsn = "pgx", url
	}
	e := &auditEnv{pg: store.IsPostgres(url)}
	e.svc, _ = OpenTestService(t, url)
	e.svc2, _ = OpenTestService(t, url)
	var err error
	if e.raw, err = sql.Open(driver, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.raw.Close() })
	var key string
	if e.acc, key, err = e.svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner"); err != nil {
		t.Fatal(err)
	}
	c, err := e.svc.AuthenticateAPIKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	actx := devreg.NewContextWithRequestID(devreg.NewContextWithClientIP(ctx, "203.0.113.9"), "req-1")
	e.admin = devreg.NewContextWithCaller(actx, c)
	return e
}

func (e *auditEnv) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if e.pg {
		n := 0
		query = strings.Map(func(r rune) rune { return r }, query)
		var b strings.Builder
		for _, r := range query {
			if r == '?' {
				n++
				fmt.Fprintf(&b, "$%d", n)
				continue
			}
			b.WriteRune(r)
		}
		query = b.String()
	}
	if _, err := e.raw.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func (e *auditEnv) entries(t *testing.T) []devreg.AuditEntry {
	t.Helper()
	var all []devreg.AuditEntry
	var cur devreg.Cursor
	for {
		page, next, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Limit: 1000, After: cur})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if next.IsZero() {
			return all
		}
		cur = next
	}
}

func actions(entries []devreg.AuditEntry) []string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Action)
	}
	return out
}

func (e *auditEnv) verify(t *testing.T, claims ...HeadClaim) []AuditFinding {
	t.Helper()
	f, err := e.svc.VerifyAudit(context.Background(), claims)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAuditRecordsChanges: each change makes one entry naming its actor, address and request, in
// the change's own transaction: a refused change makes none, and a registration one in all.
func TestAuditRecordsChanges(t *testing.T) { pgtest.Each(t, testAuditRecordsChanges) }

func testAuditRecordsChanges(t *testing.T, url string) {
	e := newAuditEnv(t, url)
	ctx := context.Background()
	dt, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Register(e.admin, dt.ID, &pairs{list: []string{"d1", "secret-of-d1", "d2", "secret-of-d2", "d3", "secret-of-d3"}}, devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Refused or writing nothing: no entries.
	if err := e.svc.DeleteDeviceType(e.admin, dt.ID); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Fatalf("deleting a type with devices: %v", err)
	}
	if _, err := e.svc.Register(e.admin, dt.ID, &pairs{list: []string{"d4", "short"}}, devreg.RegisterOptions{}); devreg.ErrorCode(err) != devreg.EINVALIDROWS {
		t.Fatalf("an invalid registration: %v", err)
	}
	if _, err := e.svc.Register(e.admin, dt.ID, &pairs{list: []string{"d5", "secret-of-d5"}}, devreg.RegisterOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Register(e.admin, dt.ID, &pairs{list: []string{"d1", "secret-of-d1"}}, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetDeviceStatus(e.admin, "d2", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "second-secret-of-d1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateCredential(devreg.NewContextWithClientIP(ctx, "192.0.2.50"), e.acc.ID, "d3", "secret-of-d3"); err != nil {
		t.Fatal(err)
	}
	k, err := e.svc.CreateAPIKey(e.admin, devreg.NewAPIKey{Name: "line 1", Scope: devreg.ScopeRegister, DeviceTypeIDs: []string{dt.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteDevice(e.admin, "nosuch"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Fatal(err)
	}
	// Console logins: a wrong password of a real user is recorded, a stranger's is not.
	if _, err := e.svc.Login(ctx, "owner@maker.example", "wrong password"); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Fatal(err)
	}
	if _, err := e.svc.Login(ctx, "stranger@elsewhere.example", "whatever-password"); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Fatal(err)
	}
	if _, err := e.svc.Login(ctx, "owner@maker.example", "password-of-the-owner"); err != nil {
		t.Fatal(err)
	}

	got := e.entries(t)
	want := []string{"login.success", "login.failure", "apikey.create", "credential.rotate", "credential.create", "device.update",
		"devices.register", "devicetype.create", "account.create"}
	if !slices.Equal(actions(got), want) {
		t.Fatalf("actions, newest first: %v\nwant %v", actions(got), want)
	}
	for i, en := range got {
		if en.Seq != int64(len(got)-i) || len(en.Hash) != 64 || en.ID == "" {
			t.Errorf("entry %d: seq %d, hash %q, id %q", i, en.Seq, en.Hash, en.ID)
		}
	}
	reg := got[6]
	if reg.Object != (devreg.AuditObject{Type: "batch", ID: res.BatchID}) || reg.Details["created"] != float64(3) || reg.Details["device_type_id"] != dt.ID ||
		reg.Actor.Type != devreg.ActorAPIKey || reg.Actor.ID == "" || reg.Actor.Name == "" || reg.IP != "203.0.113.9" || reg.RequestID != "req-1" {
		t.Errorf("the registration's entry: %+v", reg)
	}
	if upd := got[5]; upd.Details["old"].(map[string]any)["status"] != "enabled" || upd.Details["new"].(map[string]any)["status"] != "disabled" {
		t.Errorf("the device update's details: %v", upd.Details)
	}
	if rot := got[3]; rot.Actor.Type != devreg.ActorDevice || rot.Actor.ID != "d3" || rot.IP != "192.0.2.50" {
		t.Errorf("the rotation's entry: %+v", rot)
	}
	if key := got[2]; key.Object.ID != k.ID || strings.Contains(fmt.Sprint(key.Details), k.Key) {
		t.Errorf("the key's entry: %+v", key)
	}
	if got[1].Actor.Type != devreg.ActorUser || got[1].Actor.Name != "owner@maker.example" || got[8].Actor.Type != devreg.ActorCLI {
		t.Errorf("login and account entries' actors: %+v, %+v", got[1].Actor, got[8].Actor)
	}
	for _, en := range got {
		for _, secret := range []string{"secret-of-d1", "second-secret-of-d1", "password-of-the-owner", "wrong password"} {
			if strings.Contains(fmt.Sprint(en.Details), secret) {
				t.Errorf("entry %s holds a secret: %v", en.Action, en.Details)
			}
		}
	}
	// The listing filters, and pages.
	page, next, head, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "devices.register", Limit: 1})
	if err != nil || len(page) != 1 || !next.IsZero() || head.Seq != int64(len(got)) || head.Hash != got[0].Hash {
		t.Errorf("filtered by action: %v, next %v, head %+v, %v", actions(page), next, head, err)
	}
	page, _, _, _ = e.svc.AuditLog(e.admin, devreg.AuditFilter{ObjectID: "d1"})
	if !slices.Equal(actions(page), []string{"credential.create"}) {
		t.Errorf("filtered by object d1: %v", actions(page))
	}
	if f := e.verify(t); len(f) != 0 {
		t.Errorf("findings in an untouched chain: %v", f)
	}
}

// TestAuditVerifyFindsTampering edits the database directly, as someone with write access could:
// a changed, removed or inserted entry breaks the chain where it happened; a chain cut short or
// recomputed throughout is found against a head kept elsewhere.
func TestAuditVerifyFindsTampering(t *testing.T) { pgtest.Each(t, testAuditVerifyFindsTampering) }

func testAuditVerifyFindsTampering(t *testing.T, url string) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, e *auditEnv)
		claim  bool // check against the head kept before the tampering
		want   string
	}{
		{"changed-entry", func(t *testing.T, e *auditEnv) {
			e.exec(t, `UPDATE audit_log SET entry = replace(entry, '"Sensor 3"', '"Sensor X"') WHERE account_id = ? AND seq = 4`, e.acc.ID)
		}, false, "entry 4: changed"},
		{"changed-filter-column", func(t *testing.T, e *auditEnv) {
			e.exec(t, `UPDATE audit_log SET action = 'devicetype.update' WHERE account_id = ? AND seq = 4`, e.acc.ID)
		}, false, "entry 4: changed"},
		{"removed-entry", func(t *testing.T, e *auditEnv) {
			e.exec(t, `DELETE FROM audit_log WHERE account_id = ? AND seq = 3`, e.acc.ID)
		}, false, "entry 3: missing"},
		{"removed-and-renumbered", func(t *testing.T, e *auditEnv) {
			e.exec(t, `DELETE FROM audit_log WHERE account_id = ? AND seq = 3`, e.acc.ID)
			e.exec(t, `UPDATE audit_log SET seq = seq + 100 WHERE account_id = ? AND seq > 3`, e.acc.ID)
			e.exec(t, `UPDATE audit_log SET seq = seq - 101 WHERE account_id = ? AND seq > 100`, e.acc.ID)
		}, false, "entry 3: changed"},
		{"inserted-entry", func(t *testing.T, e *auditEnv) {
			e.exec(t, `UPDATE audit_log SET seq = seq + 100 WHERE account_id = ? AND seq >= 3`, e.acc.ID)
			e.exec(t, `UPDATE audit_log SET seq = seq - 99 WHERE account_id = ? AND seq > 100`, e.acc.ID)
			e.exec(t, `INSERT INTO audit_log (account_id, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash)
				SELECT account_id, 3, time, action, actor_type, actor_id, object_type, object_id, entry, hash FROM audit_log WHERE account_id = ? AND seq = 2`, e.acc.ID)
		}, false, "entry 3: changed or inserted"},
		{"appended-past-head", func(t *testing.T, e *auditEnv) {
			e.exec(t, `INSERT INTO audit_log (account_id, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash)
				SELECT account_id, seq + 1, time, action, actor_type, actor_id, object_type, object_id, replace(entry, concat('"seq":', seq), concat('"seq":', seq + 1)), hash
				FROM audit_log WHERE account_id = ? AND seq = (SELECT max(seq) FROM audit_log WHERE account_id = ?)`, e.acc.ID, e.acc.ID)
		}, false, "changed or inserted"},
		{"cut-short", func(t *testing.T, e *auditEnv) {
			e.exec(t, `DELETE FROM audit_log WHERE account_id = ? AND seq > 4`, e.acc.ID)
			e.exec(t, `UPDATE audit_heads SET seq = 4, hash = (SELECT hash FROM audit_log WHERE account_id = ? AND seq = 4) WHERE account_id = ?`, e.acc.ID, e.acc.ID)
		}, true, "cut short or recomputed"},
		{"recomputed", func(t *testing.T, e *auditEnv) {
			// Rewrite entry 4 and every hash after it, and the head, as a careful forger would.
			rows, err := e.raw.Query(map[bool]string{false: `SELECT seq, entry FROM audit_log WHERE account_id = ? ORDER BY seq`,
				true: `SELECT seq, entry FROM audit_log WHERE account_id = $1 ORDER BY seq`}[e.pg], e.acc.ID)
			if err != nil {
				t.Fatal(err)
			}
			type row struct {
				seq   int64
				entry string
			}
			var all []row
			for rows.Next() {
				var r row
				rows.Scan(&r.seq, &r.entry)
				all = append(all, r)
			}
			rows.Close()
			prev := devreg.GenesisHash
			for _, r := range all {
				if r.seq == 4 {
					r.entry = strings.Replace(r.entry, `"Sensor 3"`, `"Sensor X"`, 1)
				}
				prev = devreg.ChainHash(prev, []byte(r.entry))
				e.exec(t, `UPDATE audit_log SET entry = ?, hash = ? WHERE account_id = ? AND seq = ?`, r.entry, prev, e.acc.ID, r.seq)
			}
			e.exec(t, `UPDATE audit_heads SET hash = ? WHERE account_id = ?`, prev, e.acc.ID)
		}, true, "cut short or recomputed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newAuditEnv(t, pgtest.NewDatabaseLike(t, url)) // a database of the case's own
			for i := range 6 {
				if _, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: fmt.Sprintf("Sensor %d", i+1)}); err != nil {
					t.Fatal(err)
				}
			}
			_, _, head, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{})
			if err != nil || head.Seq != 7 {
				t.Fatalf("head %+v, %v", head, err)
			}
			claim := HeadClaim{Head: head}
			if f := e.verify(t, claim); len(f) != 0 {
				t.Fatalf("findings before tampering: %v", f)
			}
			tc.tamper(t, e)
			var claims []HeadClaim
			if tc.claim {
				if f := e.verify(t); len(f) != 0 {
					t.Logf("found even without the head kept elsewhere: %v", f)
				}
				claims = append(claims, claim)
			}
			f := e.verify(t, claims...)
			if len(f) == 0 || !strings.Contains(f[0].String(), tc.want) {
				t.Errorf("findings %v, want one saying %q", f, tc.want)
			}
		})
	}
}

// TestAuditChainWithTwoServers: two servers change one account at once; the chain has every
// change once, without gaps or forks, and verifies.
func TestAuditChainWithTwoServers(t *testing.T) { pgtest.Each(t, testAuditChainWithTwoServers) }

func testAuditChainWithTwoServers(t *testing.T, url string) {
	e := newAuditEnv(t, url)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		for j, svc := range []*Service{e.svc, e.svc2} {
			wg.Go(func() {
				_, err := svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: fmt.Sprintf("type %d-%d", j, i)})
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := e.entries(t)
	if len(got) != 2*n+1 {
		t.Fatalf("%d entries for %d changes and the account", len(got), 2*n)
	}
	if f := e.verify(t); len(f) != 0 {
		t.Errorf("findings after parallel appends from two servers: %v", f)
	}
}
