package registry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
)

// TestService calls every caller-facing method of registry.Service as each kind of caller: keys
// of account A with each scope, console users of account A with each role (logged in, their
// sessions read back as a request's would be), no caller at all, and the admin of another
// account B, to which A's objects must not exist. Allowed calls must have their effect; refused ones must leave
// everything as it was.
func TestService(t *testing.T) { pgtest.Each(t, testService) }

// makerA makes the account "Maker A" in svc and returns it with a context its admin key speaks
// for.
func makerA(t *testing.T, svc *registry.Service) (devreg.Account, context.Context) {
	t.Helper()
	ctx := context.Background()
	a, _, err := svc.NewAccount(ctx, "Maker A", "owner@a.example", "password-a")
	if err != nil {
		t.Fatal(err)
	}
	return a, devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin key", Source: devreg.SourceAPI})
}

// The answers a case may expect.
const (
	allowed   = ""
	forbidden = devreg.EFORBIDDEN
	notFound  = devreg.ENOTFOUND
)

// codes are what each caller gets; a caller without credentials always gets EUNAUTHORIZED.
type codes struct{ admin, register, read, other string }

// fixture holds the objects one case works on, made afresh for it in account A, so that what one
// case changes or deletes cannot matter to another.
type fixture struct {
	svc        *registry.Service
	admin      context.Context // account A's admin, who sets up and looks afterwards
	otherAdmin context.Context // account B's admin
	own        bool            // the caller under test belongs to account A
	n          int             // the case's number, for names and device IDs of its own

	dt    devreg.DeviceType // has one device, dev, registered in batch
	empty devreg.DeviceType // has no devices
	dev   devreg.Device
	batch devreg.Batch
	key   devreg.APIKey     // a read key, as the key list shows it
	cred  devreg.Credential // dev's second credential, where the case's setup adds one
	user  devreg.User       // a developer user, where the case's setup adds one
}

// secondCredential gives the fixture's device a second credential.
func (f *fixture) secondCredential(t *testing.T) {
	t.Helper()
	var err error
	if f.cred, err = f.svc.AddCredential(f.admin, f.dev.DeviceID, devreg.NewCredential{Secret: "second-secret-of-the-case"}); err != nil {
		t.Fatal(err)
	}
}

// credentials returns the fixture's device's credentials.
func (f *fixture) credentials(t *testing.T) []devreg.Credential {
	t.Helper()
	c, err := f.svc.ListCredentials(f.admin, f.dev.DeviceID)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testService(t *testing.T, url string) {
	ctx := context.Background()
	svc, _ := registry.OpenTestService(t, url)
	a, _ := makerA(t, svc)
	b, _, err := svc.NewAccount(ctx, "Maker B", "owner@b.example", "password-b")
	if err != nil {
		t.Fatal(err)
	}
	as := func(account devreg.Account, scope devreg.Scope) context.Context {
		return devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: account.ID, Scope: scope, Name: string(scope) + " key", Source: devreg.SourceAPI})
	}
	admin, otherAdmin := as(a, devreg.ScopeAdmin), as(b, devreg.ScopeAdmin)

	// Keys restricted to a device type of account A that none of the cases' objects have: to
	// them, as to another account, those objects do not exist (or a listing shows none of them),
	// and defining device types is refused.
	elsewhere, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	restricted := func(scope devreg.Scope) context.Context {
		return devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: scope, Name: "restricted " + string(scope) + " key",
			Source: devreg.SourceAPI, DeviceTypeIDs: []string{elsewhere.ID}})
	}
	asRestricted := func(scopeCode string, w codes) string {
		if scopeCode != allowed {
			return scopeCode
		}
		return w.other
	}
	restrictedOverride := map[string]string{"creates-type": forbidden}
	// Console users of account A with each role, as their sessions make them.
	user := func(role devreg.Role) context.Context {
		email := string(role) + "@a.example"
		if _, _, err := svc.CreateUser(admin, registry.NewUser{Email: email, Role: role, Password: "password-" + string(role)}); err != nil {
			t.Fatal(err)
		}
		token, err := svc.Login(ctx, email, "password-"+string(role))
		if err != nil {
			t.Fatal(err)
		}
		c, err := svc.SessionCaller(ctx, token)
		if err != nil {
			t.Fatal(err)
		}
		return devreg.NewContextWithCaller(ctx, c)
	}

	callers := []struct {
		name       string
		ctx        context.Context
		own        bool // of account A, and reaching the case's device types
		restricted bool
		want       func(codes) string
	}{
		{"admin-key", admin, true, false, func(w codes) string { return w.admin }},
		{"register-key", as(a, devreg.ScopeRegister), true, false, func(w codes) string { return w.register }},
		{"read-key", as(a, devreg.ScopeRead), true, false, func(w codes) string { return w.read }},
		{"admin-user", user(devreg.RoleAdmin), true, false, func(w codes) string { return w.admin }},
		{"operations-user", user(devreg.RoleOperations), true, false, func(w codes) string { return w.register }},
		{"developer-user", user(devreg.RoleDeveloper), true, false, func(w codes) string { return w.read }},
		{"no-caller", ctx, false, false, func(codes) string { return devreg.EUNAUTHORIZED }},
		{"other-account", otherAdmin, false, false, func(w codes) string { return w.other }},
		{"restricted-register-key", restricted(devreg.ScopeRegister), false, true, func(w codes) string { return asRestricted(w.register, w) }},
		{"restricted-read-key", restricted(devreg.ScopeRead), false, true, func(w codes) string { return asRestricted(w.read, w) }},
	}

	cases := []struct {
		does string // what the caller does, for the case's name
		want codes
		ok   int // the HTTP status of success
		// setup, if set, prepares the fixture further.
		setup func(t *testing.T, f *fixture)
		// do makes the call and, when it succeeds, checks what it returned.
		do func(ctx context.Context, t *testing.T, f *fixture) error
		// check looks, as the admins, at what the call left behind; done says it succeeded.
		check func(t *testing.T, f *fixture, done bool)
	}{
		// Device types.
		{
			does: "creates-type", want: codes{allowed, allowed, forbidden, allowed}, ok: http.StatusCreated,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.CreateDeviceType(ctx, devreg.DeviceType{Name: f.name("new"), Description: "made by the case"})
				if err == nil && (got.ID == "" || got.Name != f.name("new") || got.MinSecretLength != credential.MinSecretLength) {
					t.Errorf("CreateDeviceType returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got, want := f.hasType(t, f.admin, f.name("new")), done && f.own; got != want {
					t.Errorf("type in account A: %v, want %v", got, want)
				}
				if got, want := f.hasType(t, f.otherAdmin, f.name("new")), done && !f.own; got != want {
					t.Errorf("type in account B: %v, want %v", got, want)
				}
			},
		},
		{
			does: "lists-types", want: codes{allowed, allowed, allowed, allowed}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				types, err := f.svc.ListDeviceTypes(ctx)
				if err == nil {
					got := filter(types, func(dt devreg.DeviceType) bool { return dt.ID == f.dt.ID || dt.ID == f.empty.ID })
					want := []devreg.DeviceType{}
					if f.own {
						want = []devreg.DeviceType{f.empty, f.dt} // by name: "empty-N" < "type-N"
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("the case's types in the list (-want +got):\n%s", diff)
					}
				}
				return err
			},
		},
		{
			does: "gets-type", want: codes{allowed, allowed, allowed, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.DeviceType(ctx, f.dt.ID)
				if diff := cmp.Diff(f.dt, got); err == nil && diff != "" {
					t.Errorf("DeviceType (-want +got):\n%s", diff)
				}
				return err
			},
		},
		{
			does: "updates-type", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				name, minLen := f.name("renamed"), 20
				got, err := f.svc.UpdateDeviceType(ctx, f.dt.ID, devreg.DeviceTypeUpdate{Name: &name, MinSecretLength: &minLen})
				want := f.dt
				want.Name, want.MinSecretLength = name, minLen
				if diff := cmp.Diff(want, got); err == nil && diff != "" {
					t.Errorf("UpdateDeviceType (-want +got):\n%s", diff)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				want := f.dt
				if done {
					want.Name, want.MinSecretLength = f.name("renamed"), 20
				}
				got, err := f.svc.DeviceType(f.admin, f.dt.ID)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("the type afterwards (-want +got):\n%s", diff)
				}
			},
		},
		{
			does: "deletes-type", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusNoContent,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				return f.svc.DeleteDeviceType(ctx, f.empty.ID)
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got := f.hasType(t, f.admin, f.empty.Name); got == done {
					t.Errorf("type exists afterwards: %v, want %v", got, !done)
				}
			},
		},

		// Registration.
		{
			does: "registers-devices", want: codes{allowed, allowed, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Register(ctx, f.dt.ID, entries(f.name("new"), "new-secret-1"), devreg.RegisterOptions{})
				if err == nil && (got.BatchID == "" || got != devreg.RegisterResult{BatchID: got.BatchID, Created: 1}) {
					t.Errorf("Register returned %+v, want 1 created in a new batch", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if _, got := f.device(t, f.name("new")); got != done {
					t.Errorf("device registered: %v, want %v", got, done)
				}
				if got, want := len(f.batches(t)), map[bool]int{false: 1, true: 2}[done]; got != want {
					t.Errorf("the type has %d batches, want %d", got, want)
				}
			},
		},
		{
			does: "replaces-devices", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Register(ctx, f.empty.ID, entries(f.dev.DeviceID, "other-secret-1"), devreg.RegisterOptions{OnConflict: devreg.ConflictReplace})
				if err == nil && (got.BatchID == "" || got != devreg.RegisterResult{BatchID: got.BatchID, Replaced: 1}) {
					t.Errorf("Register returned %+v, want 1 replaced in a new batch", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				got, _ := f.device(t, f.dev.DeviceID)
				if !done {
					if diff := cmp.Diff(f.dev, got); diff != "" {
						t.Errorf("the device afterwards (-want +got):\n%s", diff)
					}
				} else if got.DeviceTypeID != f.empty.ID || got.BatchID == f.dev.BatchID {
					t.Errorf("the device afterwards is %+v, want it under type %s in a new batch", got, f.empty.ID)
				}
			},
		},
		{
			does: "dry-runs-registration", want: codes{allowed, allowed, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Register(ctx, f.dt.ID, entries(f.name("new"), "new-secret-1"), devreg.RegisterOptions{DryRun: true})
				if diff := cmp.Diff(devreg.RegisterResult{Created: 1, DryRun: true}, got); err == nil && diff != "" {
					t.Errorf("Register (-want +got):\n%s", diff)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if _, ok := f.device(t, f.name("new")); ok {
					t.Error("a dry run registered the device")
				}
				if diff := cmp.Diff([]devreg.Batch{f.batch}, f.batches(t)); diff != "" {
					t.Errorf("the type's batches after a dry run (-want +got):\n%s", diff)
				}
			},
		},
		{
			does: "dry-runs-replace", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Register(ctx, f.empty.ID, entries(f.dev.DeviceID, "other-secret-1"),
					devreg.RegisterOptions{OnConflict: devreg.ConflictReplace, DryRun: true})
				if diff := cmp.Diff(devreg.RegisterResult{Replaced: 1, DryRun: true}, got); err == nil && diff != "" {
					t.Errorf("Register (-want +got):\n%s", diff)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				got, _ := f.device(t, f.dev.DeviceID)
				if diff := cmp.Diff(f.dev, got); diff != "" {
					t.Errorf("the device after a dry run (-want +got):\n%s", diff)
				}
			},
		},

		// Devices.
		{
			does: "lists-devices", want: codes{allowed, allowed, allowed, allowed}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				// Account A has more devices than a page holds by now: the case's type picks its own.
				got, next, err := f.svc.ListDevices(ctx, devreg.DeviceFilter{DeviceTypeID: f.dt.ID})
				want := []devreg.Device{}
				if f.own {
					want = []devreg.Device{f.dev}
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); err == nil && (diff != "" || !next.IsZero()) {
					t.Errorf("ListDevices, next cursor %q (-want +got):\n%s", next, diff)
				}
				if err == nil && !f.own {
					all, _, err := f.svc.ListDevices(ctx, devreg.DeviceFilter{Prefix: f.dev.DeviceID})
					if err != nil || len(all) != 0 {
						t.Errorf("another account's listing by prefix shows %+v, %v", all, err)
					}
				}
				return err
			},
		},
		{
			does: "gets-device", want: codes{allowed, allowed, allowed, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Device(ctx, f.dev.DeviceID)
				if diff := cmp.Diff(f.dev, got); err == nil && diff != "" {
					t.Errorf("Device (-want +got):\n%s", diff)
				}
				return err
			},
		},
		{
			does: "disables-device", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.SetDeviceStatus(ctx, f.dev.DeviceID, devreg.StatusDisabled)
				if err == nil && got.Status != devreg.StatusDisabled {
					t.Errorf("SetDeviceStatus returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				f.wantDeviceStatus(t, map[bool]devreg.DeviceStatus{false: devreg.StatusEnabled, true: devreg.StatusDisabled}[done])
			},
		},
		{
			does: "enables-device", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.svc.SetDeviceStatus(f.admin, f.dev.DeviceID, devreg.StatusDisabled); err != nil {
					t.Fatal(err)
				}
			},
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.SetDeviceStatus(ctx, f.dev.DeviceID, devreg.StatusEnabled)
				if err == nil && got.Status != devreg.StatusEnabled {
					t.Errorf("SetDeviceStatus returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				f.wantDeviceStatus(t, map[bool]devreg.DeviceStatus{false: devreg.StatusDisabled, true: devreg.StatusEnabled}[done])
			},
		},
		{
			does: "deletes-device", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusNoContent,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				return f.svc.DeleteDevice(ctx, f.dev.DeviceID)
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if _, ok := f.device(t, f.dev.DeviceID); ok == done {
					t.Errorf("device exists afterwards: %v, want %v", ok, !done)
				}
			},
		},

		// Batches.
		{
			does: "lists-batches", want: codes{allowed, allowed, allowed, allowed}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, next, err := f.svc.ListBatches(ctx, devreg.BatchFilter{DeviceTypeID: f.dt.ID})
				want := []devreg.Batch{}
				if f.own {
					want = []devreg.Batch{f.batch}
				}
				if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); err == nil && (diff != "" || !next.IsZero()) {
					t.Errorf("ListBatches, next cursor %q (-want +got):\n%s", next, diff)
				}
				return err
			},
		},
		{
			does: "gets-batch", want: codes{allowed, allowed, allowed, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.Batch(ctx, f.batch.ID)
				if diff := cmp.Diff(f.batch, got); err == nil && diff != "" {
					t.Errorf("Batch (-want +got):\n%s", diff)
				}
				return err
			},
		},
		{
			does: "disables-batch", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.SetBatchStatus(ctx, f.batch.ID, devreg.StatusDisabled)
				if err == nil && got.Status != devreg.StatusDisabled {
					t.Errorf("SetBatchStatus returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				f.wantBatchStatus(t, map[bool]devreg.BatchStatus{false: devreg.StatusEnabled, true: devreg.StatusDisabled}[done])
			},
		},
		{
			does: "enables-batch", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) {
				if _, err := f.svc.SetBatchStatus(f.admin, f.batch.ID, devreg.StatusDisabled); err != nil {
					t.Fatal(err)
				}
			},
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.SetBatchStatus(ctx, f.batch.ID, devreg.StatusEnabled)
				if err == nil && got.Status != devreg.StatusEnabled {
					t.Errorf("SetBatchStatus returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				f.wantBatchStatus(t, map[bool]devreg.BatchStatus{false: devreg.StatusDisabled, true: devreg.StatusEnabled}[done])
			},
		},
		{
			does: "deletes-batch", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				n, err := f.svc.DeleteBatch(ctx, f.batch.ID)
				if err == nil && n != 1 {
					t.Errorf("DeleteBatch = %d, want 1", n)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if _, exists := f.device(t, f.dev.DeviceID); exists == done {
					t.Errorf("the batch's device exists afterwards: %v", exists)
				}
				if got := len(f.batches(t)); got != map[bool]int{false: 1, true: 0}[done] {
					t.Errorf("the type has %d batches afterwards", got)
				}
			},
		},

		// API keys.
		{
			does: "creates-key", want: codes{allowed, forbidden, forbidden, allowed}, ok: http.StatusCreated,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.CreateAPIKey(ctx, devreg.NewAPIKey{Name: f.name("new"), Scope: devreg.ScopeRegister})
				if err == nil && (got.Key == "" || got.Name != f.name("new") || got.Scope != devreg.ScopeRegister) {
					t.Errorf("CreateAPIKey returned %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got, want := f.hasKey(t, f.admin, f.name("new")), done && f.own; got != want {
					t.Errorf("key in account A: %v, want %v", got, want)
				}
				if got, want := f.hasKey(t, f.otherAdmin, f.name("new")), done && !f.own; got != want {
					t.Errorf("key in account B: %v, want %v", got, want)
				}
			},
		},
		{
			does: "lists-keys", want: codes{allowed, forbidden, forbidden, allowed}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				keys, err := f.svc.ListAPIKeys(ctx)
				if err == nil {
					got := filter(keys, func(k devreg.APIKey) bool { return k.ID == f.key.ID })
					want := []devreg.APIKey{}
					if f.own {
						want = []devreg.APIKey{f.key}
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("the case's key in the list (-want +got):\n%s", diff)
					}
					for _, k := range keys {
						if k.Key != "" || len(k.Hash) != 0 {
							t.Errorf("the key list shows key %s or its hash", k.ID)
						}
					}
				}
				return err
			},
		},
		{
			does: "deletes-key", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusNoContent,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				return f.svc.DeleteAPIKey(ctx, f.key.ID)
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got := f.hasKey(t, f.admin, f.key.Name); got == done {
					t.Errorf("key exists afterwards: %v, want %v", got, !done)
				}
			},
		},

		// Credentials.
		{
			does: "lists-credentials", want: codes{allowed, allowed, allowed, notFound}, ok: http.StatusOK,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.ListCredentials(ctx, f.dev.DeviceID)
				if err == nil && (len(got) != 1 || got[0].Source != devreg.CredentialFromRegistration || got[0].Status != devreg.StatusEnabled) {
					t.Errorf("ListCredentials = %+v, want the registered one", got)
				}
				return err
			},
		},
		{
			does: "adds-credential", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusCreated,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				got, err := f.svc.AddCredential(ctx, f.dev.DeviceID, devreg.NewCredential{Generate: true})
				source := devreg.CredentialFromAPI
				if c, _ := devreg.CallerFromContext(ctx); c.Source == devreg.SourceConsole {
					source = devreg.CredentialFromConsole
				}
				if err == nil && (len(got.Secret) < registry.GeneratedSecretLength || got.Source != source) {
					t.Errorf("AddCredential = %+v, want a generated secret made through the %s", got, source)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if n := len(f.credentials(t)); n != map[bool]int{true: 2, false: 1}[done] {
					t.Errorf("the device has %d credentials afterwards", n)
				}
			},
		},
		{
			does: "disables-credential", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) { f.secondCredential(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				disabled := devreg.StatusDisabled
				got, err := f.svc.UpdateCredential(ctx, f.dev.DeviceID, f.cred.ID, devreg.CredentialUpdate{Status: &disabled})
				if err == nil && (got.ID != f.cred.ID || got.Status != disabled) {
					t.Errorf("UpdateCredential = %+v", got)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				want := map[bool]devreg.DeviceStatus{true: devreg.StatusDisabled, false: devreg.StatusEnabled}[done]
				if c := f.credentials(t); len(c) != 2 || c[1].Status != want {
					t.Errorf("credentials afterwards: %+v, want the second %s", c, want)
				}
			},
		},
		{
			does: "deletes-credential", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusNoContent,
			setup: func(t *testing.T, f *fixture) { f.secondCredential(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				return f.svc.DeleteCredential(ctx, f.dev.DeviceID, f.cred.ID)
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if n := len(f.credentials(t)); n != map[bool]int{true: 1, false: 2}[done] {
					t.Errorf("the device has %d credentials afterwards", n)
				}
			},
		},

		// Users.
		{
			does: "creates-user", want: codes{allowed, forbidden, forbidden, allowed}, ok: http.StatusCreated,
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				u, link, err := f.svc.CreateUser(ctx, registry.NewUser{Email: f.name("new") + "@example.test", Role: devreg.RoleOperations})
				if err == nil && (u.ID == "" || u.Role != devreg.RoleOperations || !strings.Contains(link, "/invitation?token=")) {
					t.Errorf("CreateUser = %+v, %q", u, link)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got, want := f.hasUser(t, f.admin, f.name("new")+"@example.test"), done && f.own; got != want {
					t.Errorf("user in account A: %v, want %v", got, want)
				}
				if got, want := f.hasUser(t, f.otherAdmin, f.name("new")+"@example.test"), done && !f.own; got != want {
					t.Errorf("user in account B: %v, want %v", got, want)
				}
			},
		},
		{
			does: "lists-users", want: codes{allowed, forbidden, forbidden, allowed}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) { f.newUser(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				users, err := f.svc.ListUsers(ctx)
				if got := len(filter(users, func(u devreg.User) bool { return u.ID == f.user.ID })) == 1; err == nil && got != f.own {
					t.Errorf("the case's user listed: %v, want %v", got, f.own)
				}
				return err
			},
		},
		{
			does: "changes-user-role", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) { f.newUser(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				role := devreg.RoleOperations
				u, link, err := f.svc.UpdateUser(ctx, f.user.ID, registry.UserUpdate{Role: &role})
				if err == nil && (u.Role != role || link != "") {
					t.Errorf("UpdateUser = %+v, %q", u, link)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				want := map[bool]devreg.Role{true: devreg.RoleOperations, false: devreg.RoleDeveloper}[done]
				if u := f.userNow(t); u == nil || u.Role != want {
					t.Errorf("the user afterwards: %+v, want role %s", u, want)
				}
			},
		},
		{
			does: "resets-user-password", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusOK,
			setup: func(t *testing.T, f *fixture) { f.newUser(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				_, link, err := f.svc.UpdateUser(ctx, f.user.ID, registry.UserUpdate{ResetPassword: true})
				if err == nil && !strings.Contains(link, "/invitation?token=") {
					t.Errorf("UpdateUser's link = %q", link)
				}
				return err
			},
			check: func(t *testing.T, f *fixture, done bool) {
				_, err := f.svc.Login(context.Background(), f.user.Email, "password-of-the-case")
				if got := err == nil; got == done {
					t.Errorf("the old password works afterwards: %v (%v)", got, err)
				}
			},
		},
		{
			does: "deletes-user", want: codes{allowed, forbidden, forbidden, notFound}, ok: http.StatusNoContent,
			setup: func(t *testing.T, f *fixture) { f.newUser(t) },
			do: func(ctx context.Context, t *testing.T, f *fixture) error {
				return f.svc.DeleteUser(ctx, f.user.ID)
			},
			check: func(t *testing.T, f *fixture, done bool) {
				if got := f.userNow(t) != nil; got == done {
					t.Errorf("the user exists afterwards: %v", got)
				}
			},
		},
	}

	for i, tc := range cases {
		for j, c := range callers {
			code := c.want(tc.want)
			if o, ok := restrictedOverride[tc.does]; ok && c.restricted && code == allowed {
				code = o
			}
			status := tc.ok
			if code != allowed {
				status = devreg.Status(code)
			}
			n := i*len(callers) + j
			t.Run(fmt.Sprintf("%d/%s-%s", status, c.name, tc.does), func(t *testing.T) {
				f := newFixture(t, svc, admin, otherAdmin, n)
				f.own = c.own
				if tc.setup != nil {
					tc.setup(t, f)
				}
				err := tc.do(c.ctx, t, f)
				if got := devreg.ErrorCode(err); got != code {
					t.Fatalf("error code %q (%v), want %q", got, err, code)
				}
				if tc.check != nil {
					tc.check(t, f, err == nil)
				}
			})
		}
	}
}

// newFixture makes the objects of case n in account A.
func newFixture(t *testing.T, svc *registry.Service, admin, otherAdmin context.Context, n int) *fixture {
	t.Helper()
	f := &fixture{svc: svc, admin: admin, otherAdmin: otherAdmin, n: n}
	var err error
	if f.dt, err = svc.CreateDeviceType(admin, devreg.DeviceType{Name: f.name("type")}); err != nil {
		t.Fatal(err)
	}
	if f.empty, err = svc.CreateDeviceType(admin, devreg.DeviceType{Name: f.name("empty")}); err != nil {
		t.Fatal(err)
	}
	res, err := svc.Register(admin, f.dt.ID, entries(f.name("dev"), "secret-of-the-case"), devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if f.dt, err = svc.DeviceType(admin, f.dt.ID); err != nil { // now with its device count
		t.Fatal(err)
	}
	if f.dev, err = svc.Device(admin, f.name("dev")); err != nil {
		t.Fatal(err)
	}
	if f.batch, err = svc.Batch(admin, res.BatchID); err != nil {
		t.Fatal(err)
	}
	if f.key, err = svc.CreateAPIKey(admin, devreg.NewAPIKey{Name: f.name("key"), Scope: devreg.ScopeRead}); err != nil {
		t.Fatal(err)
	}
	f.key.Key, f.key.Hash = "", nil
	return f
}

// name returns a name or device ID of the case's own.
func (f *fixture) name(what string) string { return fmt.Sprintf("%s-%d", what, f.n) }

// device returns account A's device id, and whether it exists.
func (f *fixture) device(t *testing.T, id string) (devreg.Device, bool) {
	t.Helper()
	d, err := f.svc.Device(f.admin, id)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return d, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return d, true
}

// batches returns the batches of the case's device type.
func (f *fixture) batches(t *testing.T) []devreg.Batch {
	t.Helper()
	batches, _, err := f.svc.ListBatches(f.admin, devreg.BatchFilter{DeviceTypeID: f.dt.ID})
	if err != nil {
		t.Fatal(err)
	}
	return batches
}

func (f *fixture) wantDeviceStatus(t *testing.T, want devreg.DeviceStatus) {
	t.Helper()
	if d, _ := f.device(t, f.dev.DeviceID); d.Status != want {
		t.Errorf("device status afterwards %q, want %q", d.Status, want)
	}
}

func (f *fixture) wantBatchStatus(t *testing.T, want devreg.BatchStatus) {
	t.Helper()
	b, err := f.svc.Batch(f.admin, f.batch.ID)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != want {
		t.Errorf("batch status afterwards %q, want %q", b.Status, want)
	}
}

// hasType reports whether the account of admin has a device type of that name.
func (f *fixture) hasType(t *testing.T, admin context.Context, name string) bool {
	t.Helper()
	types, err := f.svc.ListDeviceTypes(admin)
	if err != nil {
		t.Fatal(err)
	}
	return len(filter(types, func(dt devreg.DeviceType) bool { return dt.Name == name })) > 0
}

// newUser gives the fixture a developer user of account A with a password.
func (f *fixture) newUser(t *testing.T) {
	t.Helper()
	var err error
	f.user, _, err = f.svc.CreateUser(f.admin, registry.NewUser{Email: f.name("user") + "@example.test", Role: devreg.RoleDeveloper, Password: "password-of-the-case"})
	if err != nil {
		t.Fatal(err)
	}
}

// userNow returns the fixture's user as account A's admin sees it now; nil once it is gone.
func (f *fixture) userNow(t *testing.T) *devreg.User {
	t.Helper()
	users, err := f.svc.ListUsers(f.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.ID == f.user.ID {
			return &u
		}
	}
	return nil
}

// hasUser reports whether the account of admin has a user with that email.
func (f *fixture) hasUser(t *testing.T, admin context.Context, email string) bool {
	t.Helper()
	users, err := f.svc.ListUsers(admin)
	if err != nil {
		t.Fatal(err)
	}
	return len(filter(users, func(u devreg.User) bool { return u.Email == email })) > 0
}

// hasKey reports whether the account of admin has an API key of that name.
func (f *fixture) hasKey(t *testing.T, admin context.Context, name string) bool {
	t.Helper()
	keys, err := f.svc.ListAPIKeys(admin)
	if err != nil {
		t.Fatal(err)
	}
	return len(filter(keys, func(k devreg.APIKey) bool { return k.Name == name })) > 0
}

func filter[T any](items []T, keep func(T) bool) []T {
	kept := []T{}
	for _, it := range items {
		if keep(it) {
			kept = append(kept, it)
		}
	}
	return kept
}

// entrySource yields the entries of a registration request from memory.
type entrySource []devreg.DeviceEntry

func (s *entrySource) Next() (devreg.DeviceEntry, error) {
	if len(*s) == 0 {
		return devreg.DeviceEntry{}, io.EOF
	}
	e := (*s)[0]
	*s = (*s)[1:]
	return e, nil
}

// entries returns a request of the device IDs and secrets given in turn.
func entries(idsAndSecrets ...string) *entrySource {
	var s entrySource
	for i := 0; i+1 < len(idsAndSecrets); i += 2 {
		s = append(s, devreg.DeviceEntry{Index: i / 2, DeviceID: idsAndSecrets[i], Secret: idsAndSecrets[i+1]})
	}
	return &s
}
