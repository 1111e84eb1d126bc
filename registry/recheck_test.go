package registry_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/registry"
)

// hooked is a registration request that calls during once, when its second entry is read: the
// body is then on its way, the request long authorized.
type hooked struct {
	src    devreg.EntrySource
	during func()
	n      int
}

func (h *hooked) Next() (devreg.DeviceEntry, error) {
	if h.n++; h.n == 2 && h.during != nil {
		h.during()
	}
	return h.src.Next()
}

// TestRegisterAsksAgainAtTheEnd: a registration asks again, once its body has arrived, whether
// its caller may still register: the API key must still exist, be unexpired by the service's
// clock and have the scope and device types it was authorized with; a console user must still
// exist. Otherwise it answers 401 (key_expired for an expired key) and writes nothing.
func TestRegisterAsksAgainAtTheEnd(t *testing.T) { pgtest.Each(t, testRegisterAsksAgainAtTheEnd) }

func testRegisterAsksAgainAtTheEnd(t *testing.T, url string) {
	ctx := context.Background()
	svc, db := registry.OpenTestService(t, url)
	a, admin := makerA(t, svc)
	var now atomic.Pointer[time.Time]
	t0 := time.Now().UTC().Truncate(time.Second)
	now.Store(&t0)
	svc.Now = func() time.Time { return *now.Load() }

	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "T"})
	if err != nil {
		t.Fatal(err)
	}
	owner, err := db.UserByEmail(ctx, "owner@a.example")
	if err != nil {
		t.Fatal(err)
	}
	// The callers as the API and the console make them.
	keyCaller := func(t *testing.T, expires *time.Time) (devreg.Caller, devreg.APIKey) {
		k, err := svc.CreateAPIKey(admin, devreg.NewAPIKey{Name: "line " + t.Name(), Scope: devreg.ScopeRegister, ExpiresAt: expires})
		if err != nil {
			t.Fatal(err)
		}
		c, err := svc.AuthenticateAPIKey(ctx, k.Key)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	user := devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: owner.Email, Source: devreg.SourceConsole, UserID: owner.ID}

	tests := []struct {
		name   string
		caller func(t *testing.T) (devreg.Caller, func()) // and what happens while the body arrives
		code   string
	}{
		{"200/key", func(t *testing.T) (devreg.Caller, func()) { c, _ := keyCaller(t, nil); return c, nil }, ""},
		{"200/console-user", func(t *testing.T) (devreg.Caller, func()) { return user, nil }, ""},
		{"401/console-user-gone", func(t *testing.T) (devreg.Caller, func()) {
			gone := user
			gone.UserID = "usr_gone"
			return gone, nil
		}, devreg.EUNAUTHORIZED},
		{"401/key-deleted", func(t *testing.T) (devreg.Caller, func()) {
			c, k := keyCaller(t, nil)
			return c, func() {
				if err := svc.DeleteAPIKey(admin, k.ID); err != nil {
					t.Error(err)
				}
			}
		}, devreg.EUNAUTHORIZED},
		{"401/key-expired", func(t *testing.T) (devreg.Caller, func()) {
			expires := now.Load().Add(time.Hour)
			c, _ := keyCaller(t, &expires)
			return c, func() { later := expires.Add(time.Second); now.Store(&later) }
		}, devreg.EKEYEXPIRED},
		{"401/scope-changed", func(t *testing.T) (devreg.Caller, func()) {
			c, _ := keyCaller(t, nil)
			c.Scope = devreg.ScopeAdmin
			return c, nil
		}, devreg.EUNAUTHORIZED},
		{"401/types-changed", func(t *testing.T) (devreg.Caller, func()) {
			c, _ := keyCaller(t, nil)
			c.DeviceTypeIDs = []string{dt.ID}
			return c, nil
		}, devreg.EUNAUTHORIZED},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, during := tt.caller(t)
			ctx := devreg.NewContextWithCaller(ctx, c)
			var ids []string
			for j := range 10 {
				ids = append(ids, fmt.Sprintf("case-%d-%d", i, j), fmt.Sprintf("secret-%d-%d", i, j))
			}
			for _, dryRun := range []bool{true, false} {
				res, err := svc.Register(ctx, dt.ID, &hooked{src: entries(ids...), during: during}, devreg.RegisterOptions{DryRun: dryRun})
				during = nil // it happened
				if code := devreg.ErrorCode(err); code != tt.code || (code == "") != (res.Created == 10) {
					t.Fatalf("dry run %v: register = %+v, %v; want code %q", dryRun, res, err, tt.code)
				}
			}
			devices, _, err := svc.ListDevices(admin, devreg.DeviceFilter{Prefix: fmt.Sprintf("case-%d-", i)})
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 10, false: 0}[tt.code == ""]; len(devices) != want {
				t.Errorf("%d devices registered, want %d", len(devices), want)
			}
		})
	}
	entries, _, _, err := svc.AuditLog(admin, devreg.AuditFilter{Action: "devices.register"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Errorf("%d registrations in the audit log, want the 2 that were allowed", len(entries))
	}
}
