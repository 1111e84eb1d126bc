package registry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// atk15Rows reads one account's stored audit rows (seq, entry) in order, straight from the database.
func (e *auditEnv) atk15Rows(t *testing.T, accountID string) (seqs []int64, entries []string) {
	t.Helper()
	q := `SELECT seq, entry FROM audit_log WHERE account_id = ? ORDER BY seq`
	if e.pg {
		q = strings.Replace(q, "?", "$1", 1)
	}
	rows, err := e.raw.Query(q, accountID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int64
		var entry string
		if err := rows.Scan(&seq, &entry); err != nil {
			t.Fatal(err)
		}
		seqs, entries = append(seqs, seq), append(entries, entry)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return seqs, entries
}

// TestAttack15HeadKeptElsewhereDefeatedByParkingTheOriginalChain: the contract's and the console's
// way to check the log against a head kept elsewhere is `devreg audit verify --head SEQ:HASH`,
// with no account. Such a claim is accepted when ANY account's chain holds that entry, and an
// entry does not name its account (neither its canonical JSON nor its hash binds the account ID).
// So someone with write access to the database (exactly whom the head kept elsewhere is for)
// rewrites account A's history, recomputes A's chain and head, and parks an untouched copy of
// A's original chain under another account (here one they made; any account ID in the accounts
// table will do). Every chain verifies, and the head kept elsewhere is "found": verify passes.
//
// What should happen: verify must report the rewritten chain against the head kept for it. For
// example: check that each chain starts with its own account.create entry (object.id = the
// account) and report a chain whose first entry names another account; report which account's
// chain satisfied an account-less claim; and have the listing, the export's Audit-Head and the
// console offer the head as ACCOUNT_ID:SEQ:HASH so that the claim names its chain.
func TestAttack15HeadKeptElsewhereDefeatedByParkingTheOriginalChain(t *testing.T) {
	pgtest.Each(t, testAttack15HeadKeptElsewhereDefeatedByParkingTheOriginalChain)
}

func testAttack15HeadKeptElsewhereDefeatedByParkingTheOriginalChain(t *testing.T, url string) {
	e := newAuditEnv(t, url)
	ctx := context.Background()
	for _, name := range []string{"Sensor 1", "Sensor 2", "Sensor 3"} {
		if _, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// The owner keeps the head somewhere else, as the console tells them to.
	_, _, kept, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{})
	if err != nil || kept.Seq != 4 {
		t.Fatalf("head %+v, %v", kept, err)
	}
	if f := e.verify(t, HeadClaim{Head: kept}); len(f) != 0 {
		t.Fatalf("findings before tampering: %v", f)
	}

	// The forger: an account to park the original chain under (made the ordinary way; a row
	// inserted into accounts does as well).
	decoy, _, err := e.svc.NewAccount(ctx, "Decoy", "decoy@elsewhere.example", "password-of-the-decoy")
	if err != nil {
		t.Fatal(err)
	}
	e.exec(t, `DELETE FROM audit_log WHERE account_id = ?`, decoy.ID)
	e.exec(t, `INSERT INTO audit_log (account_id, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash)
		SELECT ?, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash FROM audit_log WHERE account_id = ?`, decoy.ID, e.acc.ID)
	e.exec(t, `UPDATE audit_heads SET seq = ?, hash = ? WHERE account_id = ?`, kept.Seq, kept.Hash, decoy.ID)

	// ... and rewrites account A's history: "Sensor 2" was never created, "Sensor X" was; every
	// hash after it and the head are recomputed, as a careful forger would.
	seqs, entries := e.atk15Rows(t, e.acc.ID)
	prev := devreg.GenesisHash
	for i, seq := range seqs {
		entry := entries[i]
		if seq == 3 {
			entry = strings.Replace(entry, `"Sensor 2"`, `"Sensor X"`, 1)
		}
		prev = devreg.ChainHash(prev, []byte(entry))
		e.exec(t, `UPDATE audit_log SET entry = ?, hash = ? WHERE account_id = ? AND seq = ?`, entry, prev, e.acc.ID, seq)
	}
	e.exec(t, `UPDATE audit_heads SET hash = ? WHERE account_id = ?`, prev, e.acc.ID)
	got, _, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "devicetype.create"})
	if err != nil || len(got) != 3 || got[1].Details["name"] != "Sensor X" {
		t.Fatalf("the rewrite did not take: %+v, %v", got, err)
	}

	// The account-qualified claim catches it (shown for contrast) ...
	if f := e.verify(t, HeadClaim{AccountID: e.acc.ID, Head: kept}); len(f) == 0 {
		t.Errorf("a claim naming the account did not catch the rewritten chain")
	}
	// ... but the documented form, --head SEQ:HASH, does not.
	if f := e.verify(t, HeadClaim{Head: kept}); len(f) == 0 {
		t.Errorf("account %s's history was rewritten and its chain recomputed, yet `audit verify --head %d:%s` finds nothing: "+
			"the original chain parked under account %s satisfies the head kept elsewhere", e.acc.ID, kept.Seq, kept.Hash, decoy.ID)
	} else {
		t.Logf("findings: %v", f)
	}
}

// TestAttack15NoOpChangesRecordNothing: a PATCH that changes nothing (the same name, the status a
// device or batch already has, an empty body) is not a change, and, as for API keys ("a no-op key
// update records nothing"), should leave no entry. Device types, devices and batches record one
// with empty "old" and "new" for each such call, so that the log fills with entries that say
// nothing (and an admin key can write as many as its rate limit allows).
func TestAttack15NoOpChangesRecordNothing(t *testing.T) {
	pgtest.Each(t, testAttack15NoOpChangesRecordNothing)
}

func testAttack15NoOpChangesRecordNothing(t *testing.T, url string) {
	e := newAuditEnv(t, url)
	dt, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Register(e.admin, dt.ID, &pairs{list: []string{"d1", "secret-of-d1"}}, devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.svc.CreateAPIKey(e.admin, devreg.NewAPIKey{Name: "line", Scope: devreg.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	before := len(e.entries(t))
	same := "Sensor"
	noops := map[string]func() error{
		"devicetype.update same name": func() error {
			_, err := e.svc.UpdateDeviceType(e.admin, dt.ID, devreg.DeviceTypeUpdate{Name: &same})
			return err
		},
		"devicetype.update nothing": func() error {
			_, err := e.svc.UpdateDeviceType(e.admin, dt.ID, devreg.DeviceTypeUpdate{})
			return err
		},
		"device.update enabled → enabled": func() error {
			_, err := e.svc.SetDeviceStatus(e.admin, "d1", devreg.StatusEnabled)
			return err
		},
		"batch.update enabled → enabled": func() error {
			_, err := e.svc.SetBatchStatus(e.admin, res.BatchID, devreg.StatusEnabled)
			return err
		},
		"apikey.update same name (for contrast)": func() error {
			name := "line"
			_, err := e.svc.UpdateAPIKey(e.admin, k.ID, devreg.APIKeyUpdate{Name: &name})
			return err
		},
	}
	for name, fn := range noops {
		n := len(e.entries(t))
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if all := e.entries(t); len(all) != n {
			t.Errorf("%s changed nothing but recorded %s with details %v", name, all[0].Action, all[0].Details)
		}
	}
	if after := len(e.entries(t)); after != before {
		t.Logf("%d entries for %d calls that changed nothing", after-before, len(noops))
	}
	if f := e.verify(t); len(f) != 0 {
		t.Errorf("findings: %v", f)
	}
}

// TestAttack15FirstEntriesOfAnUpgradedAccount: an account made before the audit log existed has
// no head row; its first changes, made at once through two servers, each take the next seq: the
// chain starts at 1 without forks or gaps, and nothing is refused.
func TestAttack15FirstEntriesOfAnUpgradedAccount(t *testing.T) {
	pgtest.Each(t, testAttack15FirstEntriesOfAnUpgradedAccount)
}

func testAttack15FirstEntriesOfAnUpgradedAccount(t *testing.T, url string) {
	e := newAuditEnv(t, url)
	e.exec(t, `DELETE FROM audit_log WHERE account_id = ?`, e.acc.ID)
	e.exec(t, `DELETE FROM audit_heads WHERE account_id = ?`, e.acc.ID)
	e.exec(t, `DELETE FROM events WHERE account_id = ?`, e.acc.ID) // nor events, which came later still
	const n = 16
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		for j, svc := range []*Service{e.svc, e.svc2} {
			wg.Go(func() {
				<-start
				_, err := svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: fmt.Sprintf("type %d-%d", j, i)})
				errs <- err
			})
		}
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a first change of an upgraded account: %v", err)
		}
	}
	got := e.entries(t)
	if len(got) != 2*n || got[len(got)-1].Seq != 1 || got[0].Seq != 2*n {
		t.Errorf("%d entries, seq %d to %d; want 1 to %d", len(got), got[len(got)-1].Seq, got[0].Seq, 2*n)
	}
	if f := e.verify(t); len(f) != 0 {
		t.Errorf("findings: %v", f)
	}
}
