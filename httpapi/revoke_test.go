package httpapi_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestRevokeAndResetShapes: the ways out of a leaked factory secret as the Operations API takes
// them, every request and answer checked against the OpenAPI document: credentials=reset on a
// registration (CSV and JSON, dry run, refused without replace or with a register key), and the
// revocation of device-made credentials per device and per batch (admin only, source=device
// only, other accounts' objects not found).
func TestRevokeAndResetShapes(t *testing.T) { pgtest.Each(t, testRevokeAndResetShapes) }

func testRevokeAndResetShapes(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Leaky", 0)
	res := e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "lk-1, factory-secret-1\nlk-2, factory-secret-2\nlk-3, factory-secret-3")
	batch := res.BatchID
	rotateAndUse := func(id, secret string) string {
		t.Helper()
		status, rot := e.atkRotate(t, id, secret)
		if status != 201 {
			t.Fatalf("rotation of %s: %d", id, status)
		}
		if status, _ := e.atkToken(t, id, rot.Secret); status != 200 {
			t.Fatalf("token with %s's new secret: %d", id, status)
		}
		return rot.Secret
	}
	rotateAndUse("lk-1", "factory-secret-1")
	rotateAndUse("lk-2", "factory-secret-2")

	// credentials=reset
	status, body := e.register(t, e.admin, dt.ID, "credentials=reset", "text/csv", "lk-1, factory-secret-1")
	if eb := decodeError(t, body); status != 400 || !strings.Contains(eb.Error.Message, "on_conflict=replace") {
		t.Errorf("credentials=reset without replace = %d %s", status, body)
	}
	status, body = e.send(t, req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids?on_conflict=replace&credentials=some",
		contentType: "text/csv", body: "lk-1, factory-secret-1", invalid: true})
	if eb := decodeError(t, body); status != 400 || !strings.Contains(eb.Error.Message, "keep or reset") {
		t.Errorf("credentials=some = %d %s", status, body)
	}
	status, body = e.register(t, e.registerKey, dt.ID, "on_conflict=replace&credentials=reset", "text/csv", "lk-1, factory-secret-1")
	if status != 403 {
		t.Errorf("a reset with a register key = %d %s", status, body)
	}
	dry := e.mustRegister(t, e.admin, dt.ID, "on_conflict=replace&credentials=reset&dry_run=true", "text/csv", "lk-1, factory-secret-1\nlk-3, factory-secret-3")
	if dry != (devreg.RegisterResult{Unchanged: 1, Replaced: 1, DryRun: true, DeviceCredentialsDropped: 1}) {
		t.Errorf("dry run of a reset = %+v", dry)
	}
	reset := e.mustRegister(t, e.admin, dt.ID, "on_conflict=replace&credentials=reset", "application/json",
		`{"devices": [{"device_id": "lk-1", "secret": "factory-secret-1"}, {"device_id": "lk-3", "secret": "factory-secret-3"}]}`)
	if reset.Replaced != 1 || reset.Unchanged != 1 || reset.DeviceCredentialsDropped != 1 || reset.BatchID == "" {
		t.Errorf("a reset as JSON = %+v", reset)
	}

	// Revoking per device: lk-1 made none any more, lk-2 one.
	for _, c := range []struct {
		name, key, path string
		invalid         bool
		status          int
		says            string
	}{
		{"400/no-source", e.admin, "/api/v1/devices/lk-2/credentials", true, 400, "source=device"},
		{"400/other-source", e.admin, "/api/v1/devices/lk-2/credentials?source=api", true, 400, "source must be device"},
		{"403/read-key", e.read, "/api/v1/devices/lk-2/credentials?source=device", false, 403, "admin"},
		{"403/register-key", e.registerKey, "/api/v1/devices/lk-2/credentials?source=device", false, 403, "admin"},
		{"404/unknown", e.admin, "/api/v1/devices/lk-9/credentials?source=device", false, 404, "lk-9"},
		{"404/other-account", e.other, "/api/v1/devices/lk-2/credentials?source=device", false, 404, "lk-2"},
		{"400/batch-no-source", e.admin, "/api/v1/batches/" + batch + "/credentials", true, 400, "source=device"},
		{"403/batch-register-key", e.registerKey, "/api/v1/batches/" + batch + "/credentials?source=device", false, 403, "admin"},
		{"404/batch-other-account", e.other, "/api/v1/batches/" + batch + "/credentials?source=device", false, 404, batch},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := e.send(t, req{key: c.key, method: "DELETE", path: c.path, invalid: c.invalid})
			if eb := decodeError(t, body); status != c.status || !strings.Contains(eb.Error.Message, c.says) {
				t.Errorf("DELETE %s = %d %s; want %d saying %q", c.path, status, body, c.status, c.says)
			}
		})
	}
	var deleted struct{ Deleted int }
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lk-1/credentials?source=device", "", 200, &deleted)
	if deleted.Deleted != 0 {
		t.Errorf("lk-1 after its reset: %d deleted, want 0", deleted.Deleted)
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lk-2/credentials?source=device", "", 200, &deleted)
	if deleted.Deleted != 1 {
		t.Errorf("lk-2: %d deleted, want 1", deleted.Deleted)
	}

	// Per batch: the first batch still holds lk-2 and lk-3 (the reset moved lk-1 to a batch of
	// its own); lk-2 rotates again.
	rotateAndUse("lk-2", "factory-secret-2")
	var r devreg.BatchRevocation
	e.mustDo(t, e.admin, "DELETE", "/api/v1/batches/"+batch+"/credentials?source=device", "", 200, &r)
	if r.Devices != 2 || r.Deleted != 1 || r.DevicesChanged != 1 || r.DevicesLeft != 0 || r.Problems != nil {
		t.Errorf("revoking the first batch = %+v", r)
	}
	var audit struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?action=credentials.revoke", "", 200, &audit)
	if len(audit.Entries) != 2 || audit.Entries[0].Object.Type != "batch" || audit.Entries[1].Object.Type != "device" {
		b, _ := json.Marshal(audit.Entries)
		t.Errorf("revocations audited: %s; want one for lk-2, then one for the batch", b)
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?action=devices.register", "", 200, &audit)
	if d := audit.Entries[0].Details; d["credentials"] != "reset" || d["device_credentials_dropped"] != float64(1) {
		t.Errorf("the reset's audit details: %v", d)
	}

	// max_rotations_per_hour on the device type.
	var typ devreg.DeviceType
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "Chatty", "max_rotations_per_hour": 50}`, 201, &typ)
	if typ.MaxRotationsPerHour == nil || *typ.MaxRotationsPerHour != 50 {
		t.Errorf("created with max_rotations_per_hour 50: %+v", typ.MaxRotationsPerHour)
	}
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+typ.ID, `{"max_rotations_per_hour": 1000}`, 200, &typ)
	if *typ.MaxRotationsPerHour != 1000 {
		t.Errorf("patched to 1000: %d", *typ.MaxRotationsPerHour)
	}
	status, body = e.send(t, req{key: e.admin, method: "PATCH", path: "/api/v1/devicetypes/" + typ.ID, body: `{"max_rotations_per_hour": 0}`, invalid: true})
	if eb := decodeError(t, body); status != 422 || !strings.Contains(eb.Error.Message, "between 1 and 1000") {
		t.Errorf("max_rotations_per_hour 0 = %d %s", status, body)
	}
}

// TestRevokeRacingRotations: a batch's revocation while its devices rotate, over real HTTP,
// round after round: every device still holds one to five credentials afterwards, one of which
// lets it in, and the one it can rotate from works.
func TestRevokeRacingRotations(t *testing.T) { pgtest.Each(t, testRevokeRacingRotations) }

func testRevokeRacingRotations(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Racy", 0)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"max_rotations_per_hour": 1000}`, 200, nil)
	const devices = 12
	var csv strings.Builder
	for i := range devices {
		fmt.Fprintf(&csv, "rr-%02d, factory-secret-%02d\n", i, i)
	}
	batch := e.mustRegister(t, e.admin, dt.ID, "", "text/csv", csv.String()).BatchID
	for round := range 4 {
		var wg sync.WaitGroup
		for i := range devices {
			wg.Go(func() {
				id, secret := fmt.Sprintf("rr-%02d", i), fmt.Sprintf("factory-secret-%02d", i)
				if status, rot := e.atkRotate(t, id, secret); status == 201 {
					e.atkToken(t, id, rot.Secret)
				}
			})
		}
		wg.Go(func() {
			status, body := e.send(t, req{key: e.admin, method: "DELETE", path: "/api/v1/batches/" + batch + "/credentials?source=device"})
			if status != 200 {
				t.Errorf("round %d: revocation = %d %s", round, status, body)
			}
		})
		wg.Wait()
		for i := range devices {
			id := fmt.Sprintf("rr-%02d", i)
			var list credentialList
			e.mustDo(t, e.admin, "GET", "/api/v1/devices/"+id+"/credentials", "", 200, &list)
			if n := len(list.Credentials); n < 1 || n > devreg.MaxCredentials {
				t.Fatalf("round %d: %s holds %d credentials", round, id, n)
			}
		}
		// Whatever the order was, the factory secrets still work (grace) and a revocation now
		// leaves none of the devices' own.
		var r devreg.BatchRevocation
		e.mustDo(t, e.admin, "DELETE", "/api/v1/batches/"+batch+"/credentials?source=device", "", 200, &r)
		if r.DevicesLeft != 0 {
			t.Fatalf("round %d: %d devices left: %+v", round, r.DevicesLeft, r.Problems)
		}
		for i := range devices {
			if status, _ := e.atkToken(t, fmt.Sprintf("rr-%02d", i), fmt.Sprintf("factory-secret-%02d", i)); status != 200 {
				t.Fatalf("round %d: rr-%02d's factory secret = %d", round, i, status)
			}
		}
	}
}
