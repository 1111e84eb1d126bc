package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// TestEnrollLocksBatchesAsMarkSeenDoesPostgres: a transaction of first connections through two
// groups locks the groups' batches of the day in the order of their IDs' bytes, as the writer of
// first sightings (MarkSeen) does; locked in the order of the enrollments, the two deadlocked and
// every first connection of the transaction failed. (An outside review's reproducer.)
func TestEnrollLocksBatchesAsMarkSeenDoesPostgres(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a := devreg.Account{ID: "acc_z", Name: "z"}
	if err := s.CreateAccount(ctx, a, devreg.User{ID: "usr_z", AccountID: a.ID, Email: "z@example.test", PasswordHash: "x"},
		devreg.APIKey{ID: "key_z", AccountID: a.ID, Name: "owner", Scope: devreg.ScopeAdmin, Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	dt := devreg.DeviceType{ID: "dt_z", AccountID: a.ID, Name: "z"}
	if err := s.CreateDeviceType(ctx, dt); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, g := range []string{"a", "b"} {
		eg := devreg.EnrollmentGroup{ID: "eg_" + g, AccountID: a.ID, DeviceTypeID: dt.ID, Name: g, IDPattern: "^" + g + "-.*$", MaxDevices: 1000,
			MaxPerHour: 1000, Status: devreg.StatusEnabled, CreatedAt: now,
			Keys: []devreg.EnrollmentKey{{ID: "k", CreatedAt: now, SealKeyID: "s", Sealed: []byte("x")}}}
		if err := s.CreateEnrollmentGroup(ctx, eg, nil); err != nil {
			t.Fatal(err)
		}
	}
	enrol := func(g string, i int) devreg.Enrollment {
		return devreg.Enrollment{AccountID: a.ID, GroupID: "eg_" + g, IDPattern: "^" + g + "-.*$", KeyID: "k", HourKey: "enroll:" + g,
			DeviceID: fmt.Sprintf("%s-%d", g, i), HashKeyID: "k1", SecretHash: []byte{1}, Now: now, Batch: devreg.Batch{ID: "bat_" + g}}
	}
	if _, err := s.Enroll(ctx, []devreg.Enrollment{enrol("a", 1), enrol("b", 1)}); err != nil { // the day's batches bat_a and bat_b
		t.Fatal(err)
	}
	// A writer of first sightings in both batches, in MarkSeen's order: bat_a, then bat_b.
	seen, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer seen.Rollback()
	var seenPID int
	if err := seen.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&seenPID); err != nil {
		t.Fatal(err)
	}
	if _, err := seen.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + 1 WHERE id = 'bat_a'`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Enroll(ctx, []devreg.Enrollment{enrol("b", 2), enrol("a", 2)}) // b's first
		done <- err
	}()
	// Until the enrollments wait for a lock the writer holds.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var waiting bool
		if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))`, seenPID).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the enrollments never waited for the batch the writer of first sightings holds")
		}
	}
	if _, err := seen.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + 1 WHERE id = 'bat_b'`); err != nil {
		t.Errorf("the writer of first sightings: %v", err)
	} else if err := seen.Commit(); err != nil {
		t.Errorf("the writer of first sightings: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the enrollments: %v", err)
	}
}
