package brokerapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/server"
	"devreg/store"
)

// TestBrokerEnrollment: a device's first connection through a broker with its derived secret
// enrols it, as at the token endpoint; beyond the group's max_devices, with a wrong secret, or
// through a broker key that does not reach the group's device type, the broker is told deny
// (never an error of its own).
func TestBrokerEnrollment(t *testing.T) { pgtest.Each(t, testBrokerEnrollment) }

func testBrokerEnrollment(t *testing.T, database string) {
	f := newFleet(t, database)
	ctx := context.Background()
	cfg := server.Config{DataDir: f.dataDir, Database: f.database}
	db, err := store.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := credential.LoadOrCreateKeyring(cfg.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := credential.NewGroupKey()
	now := time.Now().UTC()
	current := keys.Current()
	if err := db.CreateEnrollmentGroup(ctx, devreg.EnrollmentGroup{ID: "eg_b", AccountID: f.account, DeviceTypeID: f.typeID, Name: "line B",
		IDPattern: `^B-[0-9]+$`, MaxDevices: 1, MaxPerHour: 10, Status: devreg.StatusEnabled, Temporary: true, CreatedAt: now,
		Keys: []devreg.EnrollmentKey{{ID: "egk_b", CreatedAt: now, SealKeyID: current.ID, Sealed: credential.Seal(current, raw, credential.SealContext(f.account, "eg_b", "egk_b"))}}}, nil); err != nil {
		t.Fatal(err)
	}
	actx := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	other, err := f.srv.Service.CreateDeviceType(actx, devreg.DeviceType{Name: "Other"})
	if err != nil {
		t.Fatal(err)
	}
	restricted, err := f.srv.Service.CreateAPIKey(actx, devreg.NewAPIKey{Name: "other broker", Scope: devreg.ScopeBroker, DeviceTypeIDs: []string{other.ID}})
	if err != nil {
		t.Fatal(err)
	}
	authn := func(key, id, secret string) (int, string) {
		g := f
		g.brokerKey = key
		return g.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": id, "password": secret, "clientid": id}))
	}
	for _, c := range []struct {
		name, key, id, secret, want string
	}{
		{"deny/key-of-another-type", restricted.Key, "B-0", credential.DeriveSecret(raw, "B-0"), `"deny"`},
		{"allow/first-connection", f.brokerKey, "B-1", credential.DeriveSecret(raw, "B-1"), `"allow"`},
		{"allow/again", f.brokerKey, "B-1", credential.DeriveSecret(raw, "B-1"), `"allow"`},
		{"deny/wrong-secret", f.brokerKey, "B-2", "not-the-derived-secret", `"deny"`},
		{"deny/beyond-max-devices", f.brokerKey, "B-3", credential.DeriveSecret(raw, "B-3"), `"deny"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if status, got := authn(c.key, c.id, c.secret); status != http.StatusOK || !strings.Contains(got, c.want) {
				t.Errorf("authn = %d %s, want 200 %s", status, got, c.want)
			}
		})
	}
	if _, err := f.srv.Service.Device(actx, "B-0"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a broker key of another type enrolled a device: %v", err)
	}
	if d, err := f.srv.Service.Device(actx, "B-1"); err != nil || d.DeviceTypeID != f.typeID {
		t.Errorf("the device enrolled through the broker: %+v, %v", d, err)
	}
}
