package store_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// TestDeviceLogin checks the one read of a device login against the two reads it replaces,
// DeviceAuth and Failures, on each database: for a device with several credentials, one disabled;
// for a device and an account that do not exist, whose throttle state is read all the same; and
// as failures are counted and their window passes.
func TestDeviceLogin(t *testing.T) {
	pgtest.Each(t, testDeviceLogin)
}

// entries are device IDs and secrets, in turn, as a registration's source.
type entries struct {
	list []string
	i    int
}

func (e *entries) Next() (devreg.DeviceEntry, error) {
	if e.i >= len(e.list) {
		return devreg.DeviceEntry{}, io.EOF
	}
	d := devreg.DeviceEntry{Index: e.i / 2, DeviceID: e.list[e.i], Secret: e.list[e.i+1]}
	e.i += 2
	return d, nil
}

func testDeviceLogin(t *testing.T, url string) {
	ctx := context.Background()
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := credential.LoadOrCreateKeyring(filepath.Join(t.TempDir(), "secret.keys"))
	if err != nil {
		t.Fatal(err)
	}
	svc := registry.New(db, keys)
	acc, _, err := svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(admin, dt.ID, &entries{list: []string{"d1", "secret-of-d1", "d2", "secret-of-d2"}}, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"second-secret-of-d1", "third-secret-of-d1"} {
		if _, err := svc.AddCredential(admin, "d1", devreg.NewCredential{Secret: secret}); err != nil {
			t.Fatal(err)
		}
	}
	creds, err := svc.ListCredentials(admin, "d1")
	if err != nil {
		t.Fatal(err)
	}
	disabled := devreg.StatusDisabled
	if _, err := svc.UpdateCredential(admin, "d1", creds[1].ID, devreg.CredentialUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}

	const window = 15 * time.Minute
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	check := func(name, accountID, deviceID, key string, now time.Time) {
		t.Helper()
		d, failures, since, err := db.DeviceLogin(ctx, accountID, deviceID, key, now, window)
		if err != nil {
			t.Fatalf("%s: DeviceLogin: %v", name, err)
		}
		want, err := db.DeviceAuth(ctx, accountID, deviceID)
		if devreg.ErrorCode(err) == devreg.ENOTFOUND {
			want, err = devreg.DeviceAuth{}, nil
		}
		if err != nil {
			t.Fatalf("%s: DeviceAuth: %v", name, err)
		}
		if diff := cmp.Diff(want, d); diff != "" {
			t.Errorf("%s: DeviceLogin's device differs from DeviceAuth's (-want +got):\n%s", name, diff)
		}
		wantFailures, wantSince, err := db.Failures(ctx, key, now, window)
		if err != nil {
			t.Fatal(err)
		}
		if failures != wantFailures || !since.Equal(wantSince) {
			t.Errorf("%s: DeviceLogin's throttle = %d since %v, Failures = %d since %v", name, failures, since, wantFailures, wantSince)
		}
	}
	if d, _, _, _ := db.DeviceLogin(ctx, acc.ID, "d1", "device:k1", t0, window); len(d.Credentials) != 3 || !d.Enabled {
		t.Fatalf("d1 = %+v, want enabled with 3 credentials", d)
	}
	missingAccount := "acc_" + credential.RandomString(16)
	for _, c := range []struct{ name, accountID, deviceID, key string }{
		{"d1-three-credentials", acc.ID, "d1", "device:k1"},
		{"d2-one-credential", acc.ID, "d2", "device:k2"},
		{"unknown-device", acc.ID, "ghost", "device:k3"},
		{"unknown-account", missingAccount, "d1", "device:k4"},
	} {
		check(c.name+"/no-failures", c.accountID, c.deviceID, c.key, t0)
		for i := range 3 {
			if _, _, err := db.ReserveAttempt(ctx, c.key, t0.Add(time.Duration(i)*time.Minute), window); err != nil {
				t.Fatal(err)
			}
		}
		d, failures, since, err := db.DeviceLogin(ctx, c.accountID, c.deviceID, c.key, t0.Add(5*time.Minute), window)
		if err != nil || failures != 3 || !since.Equal(t0) {
			t.Errorf("%s after 3 failures: %d since %v, %v; want 3 since %v", c.name, failures, since, err, t0)
		}
		if c.deviceID == "ghost" || c.accountID == missingAccount {
			if len(d.Credentials) != 0 {
				t.Errorf("%s: %+v, want no credentials", c.name, d)
			}
		}
		check(c.name+"/3-failures", c.accountID, c.deviceID, c.key, t0.Add(5*time.Minute))
		check(c.name+"/window-passed", c.accountID, c.deviceID, c.key, t0.Add(window))
	}
}
