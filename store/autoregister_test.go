package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// TestAutoRegisterFindsOrCreatesOnce registers devices just in time from two handles on one
// database (two servers) at once: one device ID sent 30 times is registered once (the others find
// it), and 30 new devices of a new day make one batch of 30; the counters and schema check clean.
func TestAutoRegisterFindsOrCreatesOnce(t *testing.T) {
	pgtest.Each(t, testAutoRegisterFindsOrCreatesOnce)
}

func testAutoRegisterFindsOrCreatesOnce(t *testing.T, url string) {
	ctx := context.Background()
	var dbs [2]*store.DB
	for i := range dbs {
		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
	}
	keys, err := credential.NewKeyring(credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	svc := registry.New(dbs[0], keys)
	a, _, err := svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "Sensor", AutoRegister: true})
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 6, 23, 59, 0, 0, time.UTC)
	reg := func(i int, deviceID string, fp byte, now time.Time) (devreg.AutoRegisterResult, error) {
		return dbs[i%2].AutoRegister(ctx, devreg.AutoRegistration{AccountID: a.ID, DeviceTypeID: dt.ID, DeviceID: deviceID, Now: now,
			Certificate: devreg.CertificateDetails{SHA256: [32]byte{fp, byte(len(deviceID))}, Subject: "CN=" + deviceID, Issuer: "CN=CA", Serial: "01",
				NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)},
			Batch: devreg.Batch{ID: credential.RandomID("bat", 16), CreatedBy: "test"},
			Audit: &devreg.AuditEntry{Time: now, Actor: devreg.AuditActor{Type: devreg.ActorDevice, ID: deviceID}, Action: "device.auto_register",
				Object: devreg.AuditObject{Type: "device", ID: deviceID}}})
	}
	const n = 30
	results := make([]devreg.AutoRegisterResult, n)
	errs := make([]error, n)
	run := func(f func(i int) (devreg.AutoRegisterResult, error)) {
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); results[i], errs[i] = f(i) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("registration %d: %v", i, err)
			}
		}
	}

	run(func(i int) (devreg.AutoRegisterResult, error) { return reg(i, "same", 1, day) })
	registered, found := 0, 0
	for _, r := range results {
		switch {
		case r.Registered:
			registered++
		case r.Exists:
			found++
		}
	}
	if registered != 1 || found != n-1 {
		t.Errorf("one device sent %d times: %d registered, %d found; want 1 and %d", n, registered, found, n-1)
	}

	next := day.Add(2 * time.Minute) // the next UTC day
	run(func(i int) (devreg.AutoRegisterResult, error) {
		return reg(i, fmt.Sprintf("dev-%02d", i), byte(i+2), next)
	})
	batches, created := map[string]bool{}, 0
	for i, r := range results {
		if !r.Registered {
			t.Errorf("device %d: %+v, want registered", i, r)
		}
		batches[r.BatchID] = true
		if r.BatchCreated {
			created++
		}
	}
	if len(batches) != 1 || created != 1 {
		t.Errorf("%d new devices of a new day: batches %v, %d made; want one, made once", n, batches, created)
	}
	for id := range batches {
		b, err := dbs[0].Batch(ctx, a.ID, id)
		if err != nil {
			t.Fatal(err)
		}
		if b.DeviceCount != n || b.Source != devreg.SourceAutoRegister || !b.CreatedAt.Equal(next) {
			t.Errorf("batch = %+v, want %d devices, source auto_register, made at %v", b, n, next)
		}
	}
	if got, err := dbs[1].DeviceType(ctx, a.ID, dt.ID); err != nil || got.DeviceCount != n+1 {
		t.Errorf("device type counts %d devices (%v), want %d", got.DeviceCount, err, n+1)
	}
	for _, check := range []func(context.Context) (store.CheckResult, error){dbs[0].CheckCounters, dbs[0].CheckSchema} {
		r, err := check(ctx)
		if err != nil || len(r.Problems) > 0 {
			t.Errorf("check %s: %v %v", r.Name, r.Problems, err)
		}
	}
}
