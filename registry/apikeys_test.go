package registry

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// keyEnv is a service with an injected clock, an account with two device types, and an admin.
type keyEnv struct {
	*credEnv
	other devreg.DeviceType // the second type; credEnv's dt holds d1
}

func newKeyEnv(t *testing.T, url string) *keyEnv {
	t.Helper()
	e := &keyEnv{credEnv: newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)}
	var err error
	if e.other, err = e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Other"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// key creates a key and returns the caller it authenticates as.
func (e *keyEnv) key(t *testing.T, nk devreg.NewAPIKey) (devreg.APIKey, context.Context) {
	t.Helper()
	k, err := e.svc.CreateAPIKey(e.admin, nk)
	if err != nil {
		t.Fatalf("create key %+v: %v", nk, err)
	}
	c, err := e.svc.AuthenticateAPIKey(devreg.NewContextWithClientIP(context.Background(), "198.51.100.4"), k.Key)
	if err != nil {
		t.Fatal(err)
	}
	return k, devreg.NewContextWithCaller(context.Background(), c)
}

// TestRestrictedKeys: a key restricted to a device type registers into it and lists only its
// devices and batches, across pages; devices of the other type are not found, a conflict with
// one does not name that type, and its tokens are not active to the key.
func TestRestrictedKeys(t *testing.T) { pgtest.Each(t, testRestrictedKeys) }

func testRestrictedKeys(t *testing.T, url string) {
	e := newKeyEnv(t, url)
	ctx := context.Background()
	// The other type's devices, registered in between, so that the two types' devices interleave.
	for _, id := range []string{"o1", "o2", "o3"} {
		e.register(t, devreg.ConflictFail, "d-"+id, "secret-of-"+id)
		if _, err := e.svc.Register(e.admin, e.other.ID, &pairs{list: []string{id, "secret-of-" + id}}, devreg.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	k, line := e.key(t, devreg.NewAPIKey{Name: "line 3", Scope: devreg.ScopeRegister, DeviceTypeIDs: []string{e.dt.ID, e.dt.ID}})
	if !slices.Equal(k.DeviceTypeIDs, []string{e.dt.ID}) {
		t.Errorf("the key's types %v, want just %s", k.DeviceTypeIDs, e.dt.ID)
	}
	types, err := e.svc.ListDeviceTypes(line)
	if err != nil || len(types) != 1 || types[0].ID != e.dt.ID {
		t.Errorf("the restricted key's types: %+v, %v", types, err)
	}
	var seen []string
	var cur devreg.Cursor
	for {
		page, next, err := e.svc.ListDevices(line, devreg.DeviceFilter{Limit: 2, After: cur})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range page {
			seen = append(seen, d.DeviceID)
		}
		if next.IsZero() {
			break
		}
		cur = next
	}
	if want := []string{"d1", "d-o1", "d-o2", "d-o3"}; !slices.Equal(seen, want) {
		t.Errorf("the restricted key's devices, paged by 2: %v, want %v", seen, want)
	}
	if got, _, err := e.svc.ListDevices(line, devreg.DeviceFilter{Prefix: "o"}); err != nil || len(got) != 0 {
		t.Errorf("prefix search for the other type's devices: %+v, %v", got, err)
	}
	if _, err := e.svc.Device(line, "o1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another type's device: %v, want not found", err)
	}
	if _, err := e.svc.ListCredentials(line, "o1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another type's device's credentials: %v, want not found", err)
	}
	batches, _, err := e.svc.ListBatches(line, devreg.BatchFilter{})
	if err != nil || len(batches) != 4 {
		t.Errorf("the restricted key's batches: %d, %v; want 4", len(batches), err)
	}
	for _, b := range batches {
		if b.DeviceTypeID != e.dt.ID {
			t.Errorf("batch %s of type %s listed to the restricted key", b.ID, b.DeviceTypeID)
		}
	}
	if _, err := e.svc.Register(line, e.other.ID, &pairs{list: []string{"n1", "secret-of-n1"}}, devreg.RegisterOptions{}); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("registering into another type: %v, want not found", err)
	}
	_, err = e.svc.Register(line, e.dt.ID, &pairs{list: []string{"o1", "secret-of-o1"}}, devreg.RegisterOptions{})
	var de *devreg.Error
	if devreg.ErrorCode(err) != devreg.ECONFLICT || !asDevregError(err, &de) || len(de.Problems) != 1 || strings.Contains(de.Problems[0].Message, e.other.ID) {
		t.Errorf("a conflict with another type's device: %v %+v; want a conflict that does not name %s", err, de, e.other.ID)
	}
	if _, err := e.svc.CreateDeviceType(line, devreg.DeviceType{Name: "new"}); devreg.ErrorCode(err) != devreg.EFORBIDDEN {
		t.Errorf("defining a type with a restricted key: %v, want forbidden", err)
	}
	_, reader := e.key(t, devreg.NewAPIKey{Name: "reader", Scope: devreg.ScopeRead, DeviceTypeIDs: []string{e.dt.ID}})
	dev, err := e.svc.AuthenticateDevice(ctx, e.acc, "o1", "secret-of-o1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tokenActive(t, e.svc, reader, e.acc, "o1", dev.CredentialID); ok || err != nil {
		t.Errorf("introspecting another type's device's token: active %v, %v", ok, err)
	}
	dev, _ = e.svc.AuthenticateDevice(ctx, e.acc, "d1", s1)
	if ok, err := tokenActive(t, e.svc, reader, e.acc, "d1", dev.CredentialID); !ok || err != nil {
		t.Errorf("introspecting its own type's device's token: active %v, %v", ok, err)
	}
	_, brokerCtx := e.key(t, devreg.NewAPIKey{Name: "broker", Scope: devreg.ScopeBroker, DeviceTypeIDs: []string{e.dt.ID}})
	if _, err := e.svc.BrokerLogin(brokerCtx, BrokerCredentials{Username: "o1", ClientID: "o1", Password: "secret-of-o1"}); err != ErrInvalidClient {
		t.Errorf("a restricted broker key letting in another type's device: %v", err)
	}
	if _, err := e.svc.BrokerLogin(brokerCtx, BrokerCredentials{Username: "d1", ClientID: "d1", Password: s1}); err != nil {
		t.Errorf("a restricted broker key letting in its own type's device: %v", err)
	}
}

func asDevregError(err error, target **devreg.Error) bool {
	e, ok := err.(*devreg.Error)
	*target = e
	return ok
}

// TestKeyRules: what a key may be restricted to, expiry, and the last use.
func TestKeyRules(t *testing.T) { pgtest.Each(t, testKeyRules) }

func testKeyRules(t *testing.T, url string) {
	e := newKeyEnv(t, url)
	ctx := context.Background()
	now := *e.now.Load()
	past, soon := now.Add(-time.Second), now.Add(time.Hour)
	for name, nk := range map[string]devreg.NewAPIKey{
		"admin-restricted":  {Name: "a", Scope: devreg.ScopeAdmin, DeviceTypeIDs: []string{e.dt.ID}},
		"unknown-type":      {Name: "a", Scope: devreg.ScopeRead, DeviceTypeIDs: []string{"dt_nosuch"}},
		"no-types":          {Name: "a", Scope: devreg.ScopeRead, DeviceTypeIDs: []string{}},
		"expired-at-create": {Name: "a", Scope: devreg.ScopeRead, ExpiresAt: &past},
	} {
		if _, err := e.svc.CreateAPIKey(e.admin, nk); devreg.ErrorCode(err) != devreg.EINVALID {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	k, _ := e.key(t, devreg.NewAPIKey{Name: "line 1", Scope: devreg.ScopeRegister, ExpiresAt: &soon})
	keys, err := e.svc.ListAPIKeys(e.admin)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(keys, func(x devreg.APIKey) bool { return x.ID == k.ID })
	if i < 0 || keys[i].LastUsedIP == nil || *keys[i].LastUsedIP != "198.51.100.4" || keys[i].ExpiresAt == nil || !keys[i].ExpiresAt.Equal(soon) {
		t.Errorf("the key as listed: %+v", keys[i])
	}
	e.advance(time.Hour)
	if _, err := e.svc.AuthenticateAPIKey(ctx, k.Key); devreg.ErrorCode(err) != devreg.EKEYEXPIRED || devreg.Status(devreg.ErrorCode(err)) != 401 {
		t.Errorf("an expired key: %v, want 401 key_expired", err)
	}
	later := e.now.Load().Add(time.Hour)
	if _, err := e.svc.UpdateAPIKey(e.admin, k.ID, devreg.APIKeyUpdate{ExpiresAt: &later}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AuthenticateAPIKey(ctx, k.Key); err != nil {
		t.Errorf("the key with its expiry moved on: %v", err)
	}
	name := "line 1 (night shift)"
	got, err := e.svc.UpdateAPIKey(e.admin, k.ID, devreg.APIKeyUpdate{Name: &name, ClearExpiry: true})
	if err != nil || got.Name != name || got.ExpiresAt != nil {
		t.Errorf("rename and clear the expiry: %+v, %v", got, err)
	}
	if _, err := e.svc.UpdateAPIKey(e.admin, k.ID, devreg.APIKeyUpdate{ExpiresAt: &past}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("an expiry in the past: %v, want invalid", err)
	}
}

// TestBrokerTLSKeys: only a broker key may vouch for the certificates its broker verified; the
// key says so when read, the caller it authenticates as carries it for the broker login, its
// creation's audit entry records it, and a refused key is not made.
func TestBrokerTLSKeys(t *testing.T) { pgtest.Each(t, testBrokerTLSKeys) }

func testBrokerTLSKeys(t *testing.T, url string) {
	e := newKeyEnv(t, url)
	k, ctx := e.key(t, devreg.NewAPIKey{Name: "rabbitmq tls", Scope: devreg.ScopeBroker, TrustsBrokerTLS: true})
	c, _ := devreg.CallerFromContext(ctx)
	if !k.TrustsBrokerTLS || !c.TrustsBrokerTLS {
		t.Errorf("the new key trusts the broker's TLS: %v, its caller %v; want both", k.TrustsBrokerTLS, c.TrustsBrokerTLS)
	}
	plain, plainCtx := e.key(t, devreg.NewAPIKey{Name: "rabbitmq", Scope: devreg.ScopeBroker})
	if c, _ := devreg.CallerFromContext(plainCtx); plain.TrustsBrokerTLS || c.TrustsBrokerTLS {
		t.Error("a broker key made without trusts_broker_tls trusts the broker's TLS")
	}
	if got, err := e.svc.APIKey(e.admin, k.ID); err != nil || !got.TrustsBrokerTLS {
		t.Errorf("the key as read: %+v, %v", got, err)
	}
	before, err := e.svc.ListAPIKeys(e.admin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []devreg.Scope{devreg.ScopeAdmin, devreg.ScopeRegister, devreg.ScopeRead} {
		_, err := e.svc.CreateAPIKey(e.admin, devreg.NewAPIKey{Name: "not a broker", Scope: s, TrustsBrokerTLS: true})
		if devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(devreg.ErrorMessage(err), "trusts_broker_tls") {
			t.Errorf("a %s key that trusts the broker's TLS: %v, want EINVALID naming trusts_broker_tls", s, err)
		}
	}
	if after, err := e.svc.ListAPIKeys(e.admin); err != nil || len(after) != len(before) {
		t.Errorf("refused keys were made: %d keys, then %d (%v)", len(before), len(after), err)
	}
	entries, _, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "apikey.create"})
	if err != nil {
		t.Fatal(err)
	}
	trusts := map[string]any{}
	for _, en := range entries {
		trusts[en.Object.ID] = en.Details["trusts_broker_tls"]
	}
	if trusts[k.ID] != true || trusts[plain.ID] != nil {
		t.Errorf("the creations' audit entries say trusts_broker_tls %v and %v, want true and nothing", trusts[k.ID], trusts[plain.ID])
	}
}
