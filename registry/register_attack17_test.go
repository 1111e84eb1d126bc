package registry_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

type a17 struct {
	svc   *registry.Service
	admin context.Context
	db    *store.DB
}

func newA17(t *testing.T, url string) *a17 {
	svc, db := registry.OpenTestService(t, url)
	_, admin := makerA(t, svc)
	return &a17{svc: svc, admin: admin, db: db}
}

func ids17(prefix string, n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("%s-%d", prefix, i), fmt.Sprintf("secret-of-%s-%d", prefix, i))
	}
	return out
}

// blockingSource yields its entries, then waits for release before EOF.
type blockingSource struct {
	s       *entrySource
	reached chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingSource) Next() (devreg.DeviceEntry, error) {
	e, err := b.s.Next()
	if err == io.EOF {
		b.once.Do(func() { close(b.reached) })
		<-b.release
	}
	return e, err
}

// TestAttack17RegistrationIntoATypeDeletedMeanwhile: a registration whose device type is deleted
// while its body is read registers nothing (it registered into a type that no longer existed).
func TestAttack17RegistrationIntoATypeDeletedMeanwhile(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		e := newA17(t, url)
		for _, mode := range []string{"new", "mixed"} {
			dt, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "doomed-" + mode})
			if err != nil {
				t.Fatal(err)
			}
			keep, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "keep-" + mode})
			if err != nil {
				t.Fatal(err)
			}
			src := &blockingSource{s: entries(ids17("del-"+mode, 4)...), reached: make(chan struct{}), release: make(chan struct{})}
			if mode == "mixed" {
				// one registered elsewhere, skip -> staging path
				if _, err := e.svc.Register(e.admin, keep.ID, entries("del-mixed-3", "secret-x-y-z"), devreg.RegisterOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error)
			var res devreg.RegisterResult
			go func() {
				var err error
				res, err = e.svc.Register(e.admin, dt.ID, src, devreg.RegisterOptions{OnConflict: devreg.ConflictSkip})
				done <- err
			}()
			<-src.reached
			derr := e.svc.DeleteDeviceType(e.admin, dt.ID)
			close(src.release)
			err = <-done
			t.Logf("%s: delete: %v; register: %+v %v", mode, derr, res, err)
			if derr != nil {
				t.Fatalf("%s: deleting the empty type while a registration is read: %v", mode, derr)
			}
			if derr == nil && err == nil {
				d, _ := e.svc.Device(e.admin, "del-"+mode+"-0")
				t.Errorf("%s: type deleted, yet registration into it succeeded: device %+v is in a type that does not exist", mode, d)
			}
			if derr == nil {
				if devreg.ErrorCode(err) != devreg.ENOTFOUND {
					t.Errorf("%s: registration into a type deleted meanwhile: %v, want not found", mode, err)
				}
				if _, err := e.svc.Device(e.admin, "del-"+mode+"-0"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
					t.Errorf("%s: a refused registration left a device: %v", mode, err)
				}
			}
		}
	})
}
