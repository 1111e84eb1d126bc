package deviceauth_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// factoryFile is newEnv's registration, as the factory would send it again.
const factoryFile = "device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3, device4, secretfordevice4, device5, secretfordevice5, AA:BB:CC:DD:EE:FF, mac-secret+with:colon"

// stolenRotation is the attack of issue 22: whoever holds device1's leaked factory secret rotates
// first and uses the secret it got, after which the real device's rotation is refused. It
// returns the attacker's secret.
func (e *env) stolenRotation(t *testing.T) string {
	t.Helper()
	e.clock.Add(time.Hour) // the device is in the field, or still in a warehouse
	status, body, _ := e.rotate(t, "device1", "secretfordevice1", "")
	if status != http.StatusCreated {
		t.Fatalf("the attacker's rotation = %d %v", status, body)
	}
	stolen := body["secret"].(string)
	if _, err := client.DeviceToken(context.Background(), nil, e.url, e.account, "device1", stolen, ""); err != nil {
		t.Fatalf("the attacker's token: %v", err)
	}
	e.clock.Add(time.Minute)
	if status, body, _ := e.rotate(t, "device1", "secretfordevice1", ""); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Fatalf("the real device's rotation after the attacker's = %d %v; want 401 invalid_client", status, body)
	}
	return stolen
}

// wantRecovered checks that the attacker's secret no longer gets a token and that the real
// device can rotate with its factory secret, and use what it gets.
func (e *env) wantRecovered(t *testing.T, stolen string) {
	t.Helper()
	ctx := context.Background()
	if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", stolen, ""); !isDeviceError(err, 401, "invalid_client") {
		t.Errorf("a token for the attacker's secret: %v; want 401 invalid_client", err)
	}
	status, body, _ := e.rotate(t, "device1", "secretfordevice1", "")
	if status != http.StatusCreated {
		t.Fatalf("the real device's rotation = %d %v; want 201", status, body)
	}
	if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", body["secret"].(string), ""); err != nil {
		t.Errorf("a token for the real device's new secret: %v", err)
	}
}

// TestLeakedFactorySecret: the way out when a leaked factory secret won the rotation race, with
// no work per device: the factory file sent again with on_conflict=replace&credentials=reset, or
// the batch's device-made credentials revoked, or the device's. Afterwards the attacker's secret
// is refused at the token endpoint and the real device rotates with its factory secret. (Before,
// a replace kept the attacker's credential, the only one the device could not rotate from.)
func TestLeakedFactorySecret(t *testing.T) {
	ctx := context.Background()
	way := func(name string, fn func(t *testing.T, database string)) {
		t.Run(name, func(t *testing.T) { pgtest.Each(t, fn) })
	}
	way("reset", func(t *testing.T, database string) {
		e := newEnv(t, database)
		stolen := e.stolenRotation(t)
		// A replace that keeps device-made credentials leaves the attacker in (the contract).
		res, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(factoryFile), client.RegisterOptions{OnConflict: devreg.ConflictReplace})
		if err != nil || res.Unchanged != 6 {
			t.Fatalf("replace keeping credentials: %+v, %v", res, err)
		}
		if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", stolen, ""); err != nil {
			t.Fatalf("after a plain replace the attacker's secret: %v; want it still working", err)
		}
		reset := client.RegisterOptions{OnConflict: devreg.ConflictReplace, Credentials: devreg.CredentialsReset}
		// Without replace, reset is refused.
		if _, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(factoryFile), client.RegisterOptions{Credentials: devreg.CredentialsReset}); !client.IsCode(err, devreg.EBADREQUEST) ||
			!strings.Contains(err.Error(), "on_conflict=replace") {
			t.Errorf("credentials=reset without on_conflict=replace: %v; want 400 naming on_conflict=replace", err)
		}
		// A dry run tells what it would do and does nothing.
		dry := reset
		dry.DryRun = true
		if res, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(factoryFile), dry); err != nil ||
			res != (devreg.RegisterResult{Unchanged: 5, Replaced: 1, DryRun: true, DeviceCredentialsDropped: 1}) {
			t.Errorf("dry run of the reset: %+v, %v", res, err)
		}
		if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", stolen, ""); err != nil {
			t.Fatalf("after the dry run the attacker's secret: %v; want it still working", err)
		}
		res, err = e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(factoryFile), reset)
		if err != nil || res.Replaced != 1 || res.Unchanged != 5 || res.DeviceCredentialsDropped != 1 || res.BatchID == "" {
			t.Fatalf("the factory file with credentials=reset: %+v, %v; want device1 replaced, 1 credential dropped", res, err)
		}
		entries := e.auditEntries(t, "devices.register")
		if d := entries[0].Details; d["credentials"] != "reset" || d["device_credentials_dropped"] != float64(1) || d["replaced"] != float64(1) {
			t.Errorf("the reset's audit details = %v", d)
		}
		e.wantRecovered(t, stolen)
		// Sent again (as JSON this time), the file changes nothing but the real device's new
		// credential, which reset drops too: it needs its factory secret again.
		devices := []client.Credential{{DeviceID: "device1", Secret: "secretfordevice1"}, {DeviceID: "device2", Secret: "secretfordevice2"},
			{DeviceID: "device3", Secret: "secretfordevice3"}, {DeviceID: "device4", Secret: "secretfordevice4"}, {DeviceID: "device5", Secret: "secretfordevice5"}}
		if res, err := e.admin.Register(ctx, e.typeID, devices[1:5], reset); err != nil || res != (devreg.RegisterResult{Unchanged: 4}) {
			t.Errorf("the rest of the file as JSON with credentials=reset: %+v, %v; want 4 unchanged", res, err)
		}
		if res, err := e.admin.Register(ctx, e.typeID, devices[:1], reset); err != nil || res.Replaced != 1 || res.DeviceCredentialsDropped != 1 {
			t.Errorf("device1 as JSON with credentials=reset after its own rotation: %+v, %v; want replaced, 1 dropped", res, err)
		}
	})
	way("batch", func(t *testing.T, database string) {
		e := newEnv(t, database)
		stolen := e.stolenRotation(t)
		d, err := e.admin.Device(ctx, "device1")
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.admin.RevokeBatchCredentials(ctx, d.BatchID, devreg.CredentialFromDevice)
		if err != nil || res.Devices != 6 || res.Deleted != 1 || res.DevicesChanged != 1 || res.DevicesLeft != 0 || len(res.Problems) != 0 {
			t.Fatalf("revoking the batch's device-made credentials: %+v, %v", res, err)
		}
		entries := e.auditEntries(t, "credentials.revoke")
		if len(entries) != 1 || entries[0].Object.ID != d.BatchID || entries[0].Details["deleted"] != float64(1) || entries[0].Details["devices_changed"] != float64(1) {
			t.Errorf("the revocation's audit entries = %+v", entries)
		}
		e.wantRecovered(t, stolen)
	})
	way("device", func(t *testing.T, database string) {
		e := newEnv(t, database)
		stolen := e.stolenRotation(t)
		if n, err := e.admin.RevokeCredentials(ctx, "device1", devreg.CredentialFromDevice); err != nil || n != 1 {
			t.Fatalf("revoking device1's device-made credentials: %d, %v", n, err)
		}
		if n, err := e.admin.RevokeCredentials(ctx, "device2", devreg.CredentialFromDevice); err != nil || n != 0 {
			t.Errorf("revoking on a device that made none: %d, %v; want 0", n, err)
		}
		if n := len(e.auditEntries(t, "credentials.revoke")); n != 1 {
			t.Errorf("%d revocations audited; want 1 (the one that deleted anything)", n)
		}
		e.wantRecovered(t, stolen)
	})
	way("left", func(t *testing.T, database string) {
		// Once the factory secret's grace has passed, only the attacker's credential lets
		// the device in: revoking it would lock the device out, so it is refused (per device)
		// or the device left and listed (per batch); the reset is the way out.
		e := newEnv(t, database)
		admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: e.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
		grace := 600
		if _, err := e.srv.Service.UpdateDeviceType(admin, e.typeID, devreg.DeviceTypeUpdate{RotationGraceSeconds: &grace}); err != nil {
			t.Fatal(err)
		}
		stolen := e.stolenRotation(t)
		e.clock.Add(10 * time.Minute)
		_, err := e.admin.RevokeCredentials(ctx, "device1", devreg.CredentialFromDevice)
		if !client.IsCode(err, devreg.ECONFLICT) || !strings.Contains(err.Error(), "credentials=reset") {
			t.Errorf("revoking device1's only valid credentials: %v; want 409 saying what to do", err)
		}
		d, _ := e.admin.Device(ctx, "device1")
		res, err := e.admin.RevokeBatchCredentials(ctx, d.BatchID, devreg.CredentialFromDevice)
		if err != nil || res.Deleted != 0 || res.DevicesLeft != 1 || res.ProblemCount != 1 || len(res.Problems) != 1 ||
			res.Problems[0].DeviceID != "device1" || res.Problems[0].Index != 0 || !strings.Contains(res.Problems[0].Message, "credentials=reset") {
			t.Errorf("revoking the batch: %+v, %v; want device1 left and listed", res, err)
		}
		if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", stolen, ""); err != nil {
			t.Fatalf("the attacker's secret after refused revocations: %v; want it untouched", err)
		}
		res2, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(factoryFile), client.RegisterOptions{OnConflict: devreg.ConflictReplace, Credentials: devreg.CredentialsReset})
		if err != nil || res2.Replaced != 1 {
			t.Fatalf("the reset: %+v, %v", res2, err)
		}
		e.wantRecovered(t, stolen)
	})
}

// TestRotationAuditNamesSource: a rotation's audit entry names the source of the credential it
// rotated from, so that a factory secret's first rotation ("registration") shows.
func TestRotationAuditNamesSource(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnv(t, database)
		status, body, _ := e.rotate(t, "device1", "secretfordevice1", "")
		if status != http.StatusCreated {
			t.Fatalf("rotation = %d %v", status, body)
		}
		if _, err := client.DeviceToken(context.Background(), nil, e.url, e.account, "device1", body["secret"].(string), ""); err != nil {
			t.Fatal(err)
		}
		if status, body, _ = e.rotate(t, "device1", body["secret"].(string), ""); status != http.StatusCreated {
			t.Fatalf("second rotation = %d %v", status, body)
		}
		entries := e.auditEntries(t, "credential.rotate")
		if len(entries) != 2 || entries[1].Details["previous_source"] != "registration" || entries[0].Details["previous_source"] != "device" ||
			entries[1].Actor.Type != devreg.ActorDevice || entries[1].IP == "" {
			t.Errorf("rotation entries, newest first: %+v; want previous_source device, then registration, with the device's address", entries)
		}
	})
}
