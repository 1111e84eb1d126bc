package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// TestEnrollTogether writes many enrollments in one transaction, as the registry's group commit
// does: each is decided in order as if alone (a repeated ID finds the device the first made, the
// group's max_devices and allow-list hold, a key that ended and a changed pattern refuse), the
// device each result returns is the one the store reads back, the day's batch is made once, and
// the audit chain and counters check clean.
func TestEnrollTogether(t *testing.T) {
	pgtest.Each(t, testEnrollTogether)
}

func testEnrollTogether(t *testing.T, url string) {
	ctx := context.Background()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	keys, err := credential.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	svc := registry.New(db, keys)
	a, _, err := svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	group := func(id, pattern string, max int64, allowList bool) {
		g := devreg.EnrollmentGroup{ID: id, AccountID: a.ID, DeviceTypeID: dt.ID, Name: id, IDPattern: pattern, MaxDevices: max, MaxPerHour: 100,
			Status: devreg.StatusEnabled, Temporary: true, AllowList: allowList, CreatedAt: now,
			Keys: []devreg.EnrollmentKey{{ID: "live", CreatedAt: now, SealKeyID: key.ID, Sealed: []byte("x")}}}
		if err := db.CreateEnrollmentGroup(ctx, g, nil); err != nil {
			t.Fatal(err)
		}
	}
	group("eg_a", "^A-.*$", 3, false)
	group("eg_l", "^L-.*$", 10, true)
	if _, err := db.SetAllowedIDs(ctx, a.ID, dt.ID, "eg_l", entriesOf("L-1"), nil); err != nil {
		t.Fatal(err)
	}
	enroll := func(groupID, pattern, keyID, id string) devreg.Enrollment {
		return devreg.Enrollment{AccountID: a.ID, GroupID: groupID, IDPattern: pattern, KeyID: keyID, DeviceID: id, HashKeyID: key.ID,
			SecretHash: credential.Hash(key, a.ID, id, "s-"+id), Now: now, Batch: devreg.Batch{ID: credential.RandomID("bat", 16), CreatedBy: "enrollment group"},
			Audit: &devreg.AuditEntry{Time: now, Actor: devreg.AuditActor{Type: devreg.ActorEnrollmentGroup, ID: groupID, Name: groupID},
				Action: "device.enroll", Object: devreg.AuditObject{Type: "device", ID: id}}}
	}
	es := []devreg.Enrollment{
		enroll("eg_a", "^A-.*$", "live", "A-1"),
		enroll("eg_a", "^A-.*$", "live", "A-1"), // the same device again
		enroll("eg_a", "^A-.*$", "live", "A-2"),
		enroll("eg_a", "^A-.*$", "gone", "A-3"),    // no such key
		enroll("eg_a", "^A-[0-9]$", "live", "A-4"), // the pattern changed since
		enroll("eg_a", "^A-.*$", "live", "A-5"),
		enroll("eg_a", "^A-.*$", "live", "A-6"), // beyond max_devices 3
		enroll("eg_l", "^L-.*$", "live", "L-1"),
		enroll("eg_l", "^L-.*$", "live", "L-2"), // off the allow-list
		enroll("eg_x", "^X-.*$", "live", "X-1"), // no such group
	}
	// The one query a first connection asks reads the groups as EnrollmentGroups does.
	joined, err := db.EnrollingGroups(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	separate, err := db.EnrollmentGroups(ctx, a.ID, "")
	if diff := cmp.Diff(separate, joined); err != nil || diff != "" {
		t.Errorf("EnrollingGroups (-EnrollmentGroups +EnrollingGroups):\n%s%v", diff, err)
	}
	results, err := db.Enroll(ctx, es)
	if err != nil {
		t.Fatal(err)
	}
	type got struct{ Registered, Exists, GroupClosed, NotAllowed, Full, BatchDisabled bool }
	want := []got{{Registered: true}, {Exists: true}, {Registered: true}, {GroupClosed: true}, {GroupClosed: true},
		{Registered: true}, {Full: true}, {Registered: true}, {NotAllowed: true}, {GroupClosed: true}}
	var have []got
	for _, r := range results {
		have = append(have, got{r.Registered, r.Exists, r.GroupClosed, r.NotAllowed, r.Full, r.BatchDisabled})
	}
	if diff := cmp.Diff(want, have); diff != "" {
		t.Fatalf("results (-want +got):\n%s", diff)
	}
	if results[0].BatchID == "" || results[2].BatchID != results[0].BatchID || !results[0].BatchCreated || results[2].BatchCreated {
		t.Errorf("one batch of the day, made by the first: %+v, %+v", results[0], results[2])
	}
	for _, i := range []int{0, 2, 5, 7} {
		d, err := db.DeviceAuth(ctx, a.ID, es[i].DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(d, results[i].Device); diff != "" {
			t.Errorf("%s as returned (-read back +returned):\n%s", es[i].DeviceID, diff)
		}
	}
	// Enrolled before: once deleted, the ID does not enrol again.
	if err := db.DeleteDevice(ctx, a.ID, "A-1"); err != nil {
		t.Fatal(err)
	}
	again, err := db.Enroll(ctx, []devreg.Enrollment{enroll("eg_a", "^A-.*$", "live", "A-1")})
	if err != nil || !again[0].EnrolledBefore {
		t.Errorf("a deleted device enrolling again: %+v, %v; want EnrolledBefore", again, err)
	}
	// A disabled batch of the day takes no device; its group registers again the next day.
	if err := db.SetBatchStatus(ctx, a.ID, results[0].BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	group("eg_b", "^B-.*$", 10, false)
	first, err := db.Enroll(ctx, []devreg.Enrollment{enroll("eg_b", "^B-.*$", "live", "B-1")})
	if err != nil || !first[0].Registered {
		t.Fatalf("B-1: %+v, %v", first, err)
	}
	if err := db.SetBatchStatus(ctx, a.ID, first[0].BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	later := enroll("eg_b", "^B-.*$", "live", "B-3")
	later.Now = now.Add(24 * time.Hour)
	refused, err := db.Enroll(ctx, []devreg.Enrollment{enroll("eg_b", "^B-.*$", "live", "B-2"), later})
	if err != nil || !refused[0].BatchDisabled || refused[0].BatchID != first[0].BatchID || !refused[1].Registered || refused[1].BatchID == first[0].BatchID {
		t.Errorf("into a disabled batch, and the next day: %+v, %v", refused, err)
	}
	// max_per_hour: counted with the registrations, in the throttle table; a new window starts
	// with the first registration after the last one ended.
	hourly := devreg.EnrollmentGroup{ID: "eg_h", AccountID: a.ID, DeviceTypeID: dt.ID, Name: "hourly", IDPattern: "^H-.*$", MaxDevices: 100, MaxPerHour: 2,
		Status: devreg.StatusEnabled, CreatedAt: now, Keys: []devreg.EnrollmentKey{{ID: "live", CreatedAt: now, SealKeyID: key.ID, Sealed: []byte("x")}}}
	if err := db.CreateEnrollmentGroup(ctx, hourly, nil); err != nil {
		t.Fatal(err)
	}
	hour := func(id string, at time.Time) devreg.Enrollment {
		e := enroll("eg_h", "^H-.*$", "live", id)
		e.HourKey, e.Now = "enroll:eg_h", at
		return e
	}
	hr, err := db.Enroll(ctx, []devreg.Enrollment{hour("H-1", now), hour("H-2", now.Add(10*time.Minute)), hour("H-3", now.Add(20*time.Minute))})
	if err != nil || !hr[0].Registered || !hr[1].Registered || !hr[2].HourFull || hr[2].RetryAfter != 40*time.Minute {
		t.Errorf("three in an hour of two: %+v, %v", hr, err)
	}
	hr, err = db.Enroll(ctx, []devreg.Enrollment{hour("H-3", now.Add(59*time.Minute)), hour("H-4", now.Add(time.Hour)), hour("H-5", now.Add(time.Hour))})
	if err != nil || !hr[0].HourFull || hr[0].RetryAfter != time.Minute || !hr[1].Registered || !hr[2].Registered {
		t.Errorf("at the hour's end and after: %+v, %v", hr, err)
	}
	if n, since, err := db.Failures(ctx, "enroll:eg_h", now.Add(time.Hour), time.Hour); err != nil || n != 2 || !since.Equal(now.Add(time.Hour)) {
		t.Errorf("the hour's count: %d since %v, %v; want 2 since %v", n, since, err, now.Add(time.Hour))
	}
	g, err := db.EnrollmentGroup(ctx, a.ID, dt.ID, "eg_a")
	if err != nil || g.EnrolledCount != 3 {
		t.Errorf("enrolled_count %d, %v; want 3", g.EnrolledCount, err)
	}
	findings, err := svc.VerifyAudit(ctx, nil)
	if err != nil || len(findings) > 0 {
		t.Errorf("audit chain: %v, %v", findings, err)
	}
	for _, check := range []func(context.Context) (store.CheckResult, error){db.CheckCounters, db.CheckSchema} {
		if r, err := check(ctx); err != nil || len(r.Problems) > 0 {
			t.Errorf("%s: %v, %v", r.Name, r.Problems, err)
		}
	}
}

// idList is a list of device IDs as the registry hands a spooled allow-list to the store.
type idList []string

func entriesOf(ids ...string) idList { return ids }

func (l idList) Len() int { return len(l) }

func (idList) Release() {}

func (l idList) Replay(chunk int, fn func([]devreg.StagedEntry) error) error {
	for i := 0; i < len(l); i += chunk {
		var es []devreg.StagedEntry
		for j, id := range l[i:min(i+chunk, len(l))] {
			es = append(es, devreg.StagedEntry{Index: i + j, DeviceID: id})
		}
		if err := fn(es); err != nil {
			return err
		}
	}
	return nil
}
