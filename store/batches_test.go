package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// TestDeleteBatch deletes a lot: its devices go with their further credentials, the other lot's
// devices stay, the device type's count follows, the batch is gone (404, as for another account
// and an unknown ID), one batch.delete entry records the count, none of its device IDs enrols
// through a group afterwards, an ID registered again starts with one credential, and devreg
// check finds the counters right and no row left behind.
func TestDeleteBatch(t *testing.T) { pgtest.Each(t, testDeleteBatch) }

func testDeleteBatch(t *testing.T, url string) {
	e := newSeenEnv(t, url)
	ctx := context.Background()
	lot, err := e.register(ctx, ids("lot", 50), "1", devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.register(ctx, ids("other", 7), "1", devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"lot-00001", "lot-00002", "other-00001"} {
		if _, err := e.svc.AddCredential(e.admin, id, devreg.NewCredential{Generate: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.b.MarkSeen(ctx, e.acc.ID, []string{"lot-00003", "other-00003"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A disabled lot may be deleted.
	if _, err := e.svc.SetBatchStatus(e.admin, lot.BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	otherAccount, _, err := e.svc.NewAccount(ctx, "Other maker", "owner@other.example", "password-of-the-other")
	if err != nil {
		t.Fatal(err)
	}
	otherAdmin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: otherAccount.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	for name, c := range map[string]struct {
		ctx context.Context
		id  string
	}{"another account's": {otherAdmin, lot.BatchID}, "an unknown": {e.admin, "bat_unknown"}, "a malformed": {e.admin, "../x"}} {
		if n, err := e.svc.DeleteBatch(c.ctx, c.id); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("deleting %s batch: %d, %v; want not found", name, n, err)
		}
	}

	n, err := e.svc.DeleteBatch(e.admin, lot.BatchID)
	if err != nil || n != 50 {
		t.Fatalf("DeleteBatch = %d, %v; want 50", n, err)
	}
	if _, err := e.svc.Batch(e.admin, lot.BatchID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("the deleted batch afterwards: %v; want not found", err)
	}
	if n, err := e.svc.DeleteBatch(e.admin, lot.BatchID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("deleting it again: %d, %v; want not found", n, err)
	}
	if got := e.count(t, `SELECT count(*) FROM devices WHERE batch_id = $1`, lot.BatchID); got != 0 {
		t.Errorf("%d of the lot's devices left", got)
	}
	if got := e.count(t, `SELECT count(*) FROM devices WHERE batch_id = $1`, other.BatchID); got != 7 {
		t.Errorf("the other lot has %d devices afterwards, want 7", got)
	}
	if got := e.count(t, `SELECT count(*) FROM credentials c WHERE NOT EXISTS (SELECT 1 FROM devices d
		WHERE d.account_num = c.account_num AND d.device_id = c.device_id)`); got != 0 {
		t.Errorf("%d credentials of deleted devices left", got)
	}
	if got := e.count(t, `SELECT count(*) FROM enrollments WHERE device_id LIKE 'lot-%' AND group_id = ''`); got != 50 {
		t.Errorf("%d of the lot's device IDs are kept from enrolling, want 50", got)
	}
	if dt, err := e.svc.DeviceType(e.admin, e.dt.ID); err != nil || dt.DeviceCount != 7 {
		t.Errorf("device type afterwards: count %d, %v; want 7", dt.DeviceCount, err)
	}
	entries, _, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "batch.delete"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Object.ID != lot.BatchID || fmt.Sprint(entries[0].Details["deleted"]) != "50" {
		t.Errorf("audit entries batch.delete: %+v; want one, of the lot, with deleted 50", entries)
	}
	// Registered again, a device starts afresh: one credential, the registered one.
	if _, err := e.register(ctx, []string{"lot-00001"}, "2", devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	if creds, err := e.svc.ListCredentials(e.admin, "lot-00001"); err != nil || len(creds) != 1 {
		t.Errorf("lot-00001 registered again has credentials %+v, %v; want one", creds, err)
	}
	e.checkCounters(t, "after the delete")
	if findings, err := e.svc.VerifyAudit(ctx, nil); err != nil || len(findings) > 0 {
		t.Errorf("audit chain: %v, %v", findings, err)
	}
}

// TestDeleteBatchWhileRegisteringAndLoggingIn deletes lots while, at the same time, a
// registration replaces half of each lot's devices into a new lot (on_conflict=replace), another
// server records the lot's devices as seen by a broker in its own order, and some of them check
// in for the first time: each delete and registration comes wholly before or after the other (the
// delete counts exactly the devices the registration did not take first), nothing fails for
// another's locks, and afterwards every counter matches its rows and no credential is left
// without its device.
func TestDeleteBatchWhileRegisteringAndLoggingIn(t *testing.T) {
	pgtest.Each(t, testDeleteBatchWhileRegisteringAndLoggingIn)
}

func testDeleteBatchWhileRegisteringAndLoggingIn(t *testing.T, url string) {
	e := newSeenEnv(t, url)
	ctx := context.Background()
	n, rounds := 2000, 5
	if !e.pg { // one writer at a time: no race to catch, only the same writes to make work
		n, rounds = 400, 2
	}
	at := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	var before, after int // rounds whose registration came before or after the delete
	for round := range rounds {
		devices := ids(fmt.Sprintf("r%d", round), n)
		start := time.Now()
		lot, err := e.register(ctx, devices, "1", devreg.RegisterOptions{})
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range devices[:10] {
			if _, err := e.svc.AddCredential(e.admin, id, devreg.NewCredential{Generate: true}); err != nil {
				t.Fatal(err)
			}
		}
		shuffled := slices.Clone(devices)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		var deleted int64
		var replaced devreg.RegisterResult
		for _, err := range parallel(
			func() (err error) {
				if round%2 == 1 { // let the registration start first now and then: both orders are to be met
					time.Sleep(rand.N(2 * took))
				}
				deleted, err = e.svc.DeleteBatch(e.admin, lot.BatchID)
				return err
			},
			func() (err error) {
				replaced, err = e.register(ctx, devices[:n/2], "2", devreg.RegisterOptions{OnConflict: devreg.ConflictReplace})
				return err
			},
			func() error { return e.b.MarkSeen(ctx, e.acc.ID, shuffled, at) },
			func() error {
				for _, id := range devices[n-20:] {
					err := e.b.CheckIn(ctx, e.acc.ID, id, lot.BatchID, at, nil, nil)
					if code := devreg.ErrorCode(err); err != nil && code != devreg.ENOTFOUND {
						return fmt.Errorf("check-in of %s: %w", id, err)
					}
				}
				return nil
			},
		) {
			t.Errorf("round %d: %v", round+1, err)
		}
		switch {
		case replaced.Replaced == int64(n/2) && replaced.Created == 0 && deleted == int64(n-n/2):
			before++
		case replaced.Created == int64(n/2) && replaced.Replaced == 0 && deleted == int64(n):
			after++
		default:
			t.Errorf("round %d: the registration %+v and the delete of %d devices overlapped; want one wholly before the other", round+1, replaced, deleted)
		}
		if got := e.count(t, `SELECT count(*) FROM devices WHERE device_id LIKE $1`, fmt.Sprintf("r%d-%%", round)); got != n/2 {
			t.Errorf("round %d: %d of its devices left, want the %d registered again", round+1, got, n/2)
		}
		e.checkCounters(t, fmt.Sprintf("round %d", round+1))
		at = at.Add(time.Minute)
	}
	if got := e.count(t, `SELECT count(*) FROM credentials c WHERE NOT EXISTS (SELECT 1 FROM devices d
		WHERE d.account_num = c.account_num AND d.device_id = c.device_id)`); got != 0 {
		t.Errorf("%d credentials of deleted devices left", got)
	}
	t.Logf("registration before the delete in %d rounds, after it in %d", before, after)
}
