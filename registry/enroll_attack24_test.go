package registry_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// panickyStore is a store whose first connections' transaction panics while panics is set.
type panickyStore struct {
	*store.DB
	panics atomic.Bool
}

func (p *panickyStore) Enroll(ctx context.Context, es []devreg.Enrollment) ([]devreg.EnrollResult, error) {
	if p.panics.Load() {
		panic("the store broke")
	}
	return p.DB.Enroll(ctx, es)
}

// TestAttack24EnrollPanicFreesTheQueue: a first connection whose transaction panics does not
// leave the account's first connections waiting forever behind it: the next ones enrol.
func TestAttack24EnrollPanicFreesTheQueue(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		var ps *panickyStore
		svc, _ := registry.OpenTestService(t, url, func(db *store.DB) registry.Store { ps = &panickyStore{DB: db}; return ps })
		ctx := context.Background()
		a, _, err := svc.NewAccount(ctx, "Maker P", "owner@p.example", "password-p")
		if err != nil {
			t.Fatal(err)
		}
		admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin key", Source: devreg.SourceAPI})
		dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "Panicky"})
		if err != nil {
			t.Fatal(err)
		}
		g, err := svc.CreateEnrollmentGroup(admin, dt.ID, devreg.NewEnrollmentGroup{Name: "line", IDPattern: `^P-[0-9]+$`, MaxDevices: 10})
		if err != nil {
			t.Fatal(err)
		}
		key, err := credential.ParseGroupKey(g.GroupKey)
		if err != nil {
			t.Fatal(err)
		}
		ps.panics.Store(true)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("the store's panic did not reach the first connection")
				}
			}()
			svc.AuthenticateDevice(ctx, a.ID, "P-1", credential.DeriveSecret(key, "P-1"))
		}()
		ps.panics.Store(false)
		done := make(chan error, 1)
		go func() {
			_, err := svc.AuthenticateDevice(ctx, a.ID, "P-2", credential.DeriveSecret(key, "P-2"))
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the next first connection: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("the next first connection waits forever behind the one that panicked")
		}
	})
}
