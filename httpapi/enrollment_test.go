package httpapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/server"
	"devreg/store"
)

// newEnrollmentGroup stores an enrollment group of type typeID of the admin key's account, as
// the groups API (another branch's) would make it.
func (e *env) newEnrollmentGroup(t *testing.T, typeID, id, pattern string) {
	t.Helper()
	cfg := server.Config{DataDir: e.dataDir, Database: e.database}
	db, err := store.Open(context.Background(), cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := credential.LoadOrCreateKeyring(cfg.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := credential.NewGroupKey()
	now := e.clock.Now()
	current := keys.Current()
	g := devreg.EnrollmentGroup{ID: id, AccountID: e.accountID, DeviceTypeID: typeID, Name: "group " + id, IDPattern: pattern,
		MaxDevices: 10, MaxPerHour: 10, Status: devreg.StatusEnabled, Temporary: true, CreatedAt: now,
		Keys: []devreg.EnrollmentKey{{ID: "egk_" + id, CreatedAt: now, SealKeyID: current.ID,
			Sealed: credential.Seal(current, raw, credential.SealContext(e.accountID, id, "egk_"+id))}}}
	if err := db.CreateEnrollmentGroup(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
}

// TestEnrollmentAllowListAndReenroll: the allow-list and reenroll endpoints answer as the
// OpenAPI document says (every request and answer here is checked against it), to admin keys
// of the group's account only, and refuse bad entries by index and line.
func TestEnrollmentAllowListAndReenroll(t *testing.T) {
	pgtest.Each(t, testEnrollmentAllowListAndReenroll)
}

func testEnrollmentAllowListAndReenroll(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Tracker", 0)
	e.newEnrollmentGroup(t, dt.ID, "eg_api", `^TR-[0-9]{4}$`)
	base := "/api/v1/devicetypes/" + dt.ID + "/enrollment_groups/eg_api"

	status, b := e.send(t, req{key: e.admin, method: "PUT", path: base + "/allowed_ids", contentType: "text/csv", body: "TR-0001, TR-0002\nTR-0001\n"})
	var allowed struct{ Allowed int64 }
	if json.Unmarshal(b, &allowed); status != 200 || allowed.Allowed != 2 {
		t.Fatalf("allow-list = %d %s; want 200 and 2", status, b)
	}
	status, b = e.send(t, req{key: e.admin, method: "PUT", path: base + "/allowed_ids", contentType: "text/csv", body: "TR-0001,\nTR-1\n\"TR-0003\nx\""})
	eb := decodeError(t, b)
	if status != 422 || eb.ProblemCount != 2 || eb.Problems[0].Index != 1 || eb.Problems[0].Line != 2 || eb.Problems[1].Index != 2 || eb.Problems[1].Line != 3 {
		t.Errorf("bad entries = %d %s; want 422 naming index 1 (line 2) and 2 (line 3)", status, b)
	}
	for _, c := range []struct {
		name string
		r    req
		want int
	}{
		{"415/json", req{key: e.admin, method: "PUT", path: base + "/allowed_ids", contentType: "application/json", body: `["TR-0001"]`, invalid: true}, 415},
		{"403/read-key", req{key: e.read, method: "PUT", path: base + "/allowed_ids", contentType: "text/csv", body: "TR-0001"}, 403},
		{"404/other-account", req{key: e.other, method: "PUT", path: base + "/allowed_ids", contentType: "text/csv", body: "TR-0001"}, 404},
		{"404/no-group", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/enrollment_groups/eg_none/allowed_ids", contentType: "text/csv", body: "TR-0001"}, 404},
		{"200/reenroll-none-enrolled", req{key: e.admin, method: "POST", path: base + "/reenroll", body: `{"device_ids": ["TR-0001"]}`}, 200},
		{"422/reenroll-empty", req{key: e.admin, method: "POST", path: base + "/reenroll", body: `{"device_ids": []}`, invalid: true}, 422},
		{"400/reenroll-unknown-field", req{key: e.admin, method: "POST", path: base + "/reenroll", body: `{"ids": ["TR-0001"]}`, invalid: true}, 400},
		{"404/reenroll-other-account", req{key: e.other, method: "POST", path: base + "/reenroll", body: `{"device_ids": ["TR-0001"]}`}, 404},
	} {
		t.Run(c.name, func(t *testing.T) {
			if status, b := e.send(t, c.r); status != c.want {
				t.Errorf("%s %s = %d %s; want %d", c.r.method, c.r.path, status, b, c.want)
			}
		})
	}
}
