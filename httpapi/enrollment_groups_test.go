package httpapi_test

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// enrollmentGroupCreated is the answer to creating a group: the group and its key.
type enrollmentGroupCreated struct {
	devreg.EnrollmentGroup
	GroupKey string `json:"group_key"`
}

// enrollmentKeyCreated is the answer to rotating a group's key.
type enrollmentKeyCreated struct {
	ID       string                 `json:"id"`
	GroupKey string                 `json:"group_key"`
	Group    devreg.EnrollmentGroup `json:"group"`
}

type enrollmentGroupList struct {
	Groups []devreg.EnrollmentGroup `json:"enrollment_groups"`
}

func groupsPath(typeID string) string { return "/api/v1/devicetypes/" + typeID + "/enrollment_groups" }

// groupKeyBytes decodes a group key as the API shows it, failing unless it is 32 bytes.
func groupKeyBytes(t *testing.T, key string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil || len(raw) != 32 {
		t.Fatalf("group key %d characters is not base64 of 32 bytes: %v", len(key), err)
	}
	return raw
}

// openDB opens the server's database beside it, to read or set what the API does not show.
func (e *env) openDB(t *testing.T) *sql.DB {
	t.Helper()
	driver, dsn := "sqlite", "file:"+strings.TrimPrefix(e.database, "sqlite:")+"?_pragma=busy_timeout(10000)"
	if store.IsPostgres(e.database) {
		driver, dsn = "pgx", e.database
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// sealedGroupKeys reads the enrollment_group_keys rows of a group as stored: key ID → sealed.
func (e *env) sealedGroupKeys(t *testing.T, groupID string) map[string][]byte {
	t.Helper()
	db := e.openDB(t)
	defer db.Close()
	rows, err := db.Query(`SELECT id, sealed FROM enrollment_group_keys WHERE group_id = $1`, groupID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var id string
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			t.Fatal(err)
		}
		out[id] = sealed
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEnrollmentGroups creates, reads, changes, rotates the key of and deletes an enrollment
// group over the API. The group key is in the answers that made it and nowhere else: not in a
// listing, a read, the audit log, the server's log or the database, where it is sealed.
func TestEnrollmentGroups(t *testing.T) { pgtest.Each(t, testEnrollmentGroups) }

func testEnrollmentGroups(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Thermostat T1", 0)
	start := e.clock.Now().UTC()

	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": " Line 3 T1 ", "id_pattern": "^T1-[0-9A-F]{12}$", "max_devices": 50000}`, 201, &g)
	key1 := groupKeyBytes(t, g.GroupKey)
	if !strings.HasPrefix(g.ID, "eg_") || g.Name != "Line 3 T1" || g.DeviceTypeID != dt.ID || g.IDPattern != "^T1-[0-9A-F]{12}$" ||
		g.MaxDevices != 50000 || g.MaxPerHour != devreg.DefaultEnrollmentPerHour || !g.Temporary || g.Status != devreg.StatusEnabled ||
		g.NotBefore != nil || g.NotAfter != nil || g.AllowList || g.EnrolledCount != 0 || g.CreatedAt.Before(start.Add(-time.Second)) {
		t.Errorf("created %+v", g.EnrollmentGroup)
	}
	if len(g.Keys) != 1 || !strings.HasPrefix(g.Keys[0].ID, "egk_") || g.Keys[0].NotAfter != nil {
		t.Fatalf("the new group's keys: %+v", g.Keys)
	}
	firstKey := g.Keys[0].ID

	var g2 enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Line 4", "id_pattern": "^T1-4[0-9]{6}$", "max_devices": 10, "max_per_hour": 5,
		"not_before": "2027-01-01T00:00:00Z", "not_after": "2027-07-01T00:00:00+02:00", "temporary": false}`, 201, &g2)
	if g2.MaxPerHour != 5 || g2.Temporary || g2.NotBefore == nil || !g2.NotBefore.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) ||
		g2.NotAfter == nil || !g2.NotAfter.Equal(time.Date(2027, 6, 30, 22, 0, 0, 0, time.UTC)) {
		t.Errorf("created with every field: %+v", g2.EnrollmentGroup)
	}
	keys := []string{g.GroupKey, g2.GroupKey}

	// Listings and reads never carry a key.
	status, body := e.send(t, req{key: e.admin, method: "GET", path: groupsPath(dt.ID)})
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if status != 200 || len(list.Groups) != 2 || list.Groups[0].ID != g.ID || list.Groups[1].ID != g2.ID || len(list.Groups[0].Keys) != 1 {
		t.Fatalf("listed %d %s", status, body)
	}
	status, one := e.send(t, req{key: e.admin, method: "GET", path: groupsPath(dt.ID) + "/" + g.ID})
	if status != 200 || !strings.Contains(string(one), `"name":"Line 3 T1"`) {
		t.Errorf("GET the group = %d %s", status, one)
	}
	for _, b := range [][]byte{body, one} {
		if strings.Contains(string(b), "group_key") || strings.Contains(string(b), g.GroupKey) || strings.Contains(string(b), "sealed") {
			t.Errorf("a read shows a key: %s", b)
		}
	}

	// Change, disable, enable: each field as the body sets it, null clears an end of the window.
	var changed devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "PATCH", groupsPath(dt.ID)+"/"+g2.ID, `{"name": "Line 4b", "id_pattern": "^T1-5[0-9]{6}$", "max_devices": 20, "max_per_hour": 7,
		"not_before": null, "status": "disabled", "temporary": true}`, 200, &changed)
	if changed.Name != "Line 4b" || changed.IDPattern != "^T1-5[0-9]{6}$" || changed.MaxDevices != 20 || changed.MaxPerHour != 7 ||
		changed.NotBefore != nil || changed.NotAfter == nil || changed.Status != devreg.StatusDisabled || !changed.Temporary || len(changed.Keys) != 1 {
		t.Errorf("after PATCH: %+v", changed)
	}
	e.mustDo(t, e.admin, "PATCH", groupsPath(dt.ID)+"/"+g2.ID, `{"status": "enabled", "not_after": null}`, 200, &changed)
	if changed.Status != devreg.StatusEnabled || changed.NotAfter != nil || changed.Name != "Line 4b" {
		t.Errorf("after enabling: %+v", changed)
	}
	e.mustDo(t, e.admin, "PATCH", groupsPath(dt.ID)+"/"+g2.ID, `{"status": "enabled"}`, 200, &changed) // changes nothing, records nothing
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g2.ID, "", 200, &read)
	if read.Name != "Line 4b" || read.Status != devreg.StatusEnabled || read.MaxDevices != 20 {
		t.Errorf("read back after PATCH: %+v", read)
	}

	// Rotate: a new key beside the old one, which ends a week from now by default, or when asked.
	var rot enrollmentKeyCreated
	before := e.clock.Now().UTC()
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID)+"/"+g.ID+"/keys", "", 201, &rot)
	key2 := groupKeyBytes(t, rot.GroupKey)
	keys = append(keys, rot.GroupKey)
	if bytes.Equal(key1, key2) || !strings.HasPrefix(rot.ID, "egk_") || rot.Group.ID != g.ID || len(rot.Group.Keys) != 2 {
		t.Fatalf("rotation answered %+v", rot)
	}
	old, nu := rot.Group.Keys[0], rot.Group.Keys[1]
	if old.ID != firstKey || old.NotAfter == nil || old.NotAfter.Before(before.Add(devreg.DefaultOldKeysGrace-time.Second)) ||
		old.NotAfter.After(e.clock.Now().Add(devreg.DefaultOldKeysGrace)) || nu.ID != rot.ID || nu.NotAfter != nil {
		t.Errorf("keys after a rotation without a body: old %s ends %v, new %s ends %v", old.ID, old.NotAfter, nu.ID, nu.NotAfter)
	}
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID)+"/"+g.ID+"/keys", `{"old_keys_not_after": "2030-01-01T00:00:00Z"}`, 201, &rot)
	keys = append(keys, rot.GroupKey)
	ends := []*time.Time{rot.Group.Keys[0].NotAfter, rot.Group.Keys[1].NotAfter, rot.Group.Keys[2].NotAfter}
	if !ends[0].Equal(*old.NotAfter) || ends[1] == nil || !ends[1].Equal(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)) || ends[2] != nil {
		t.Errorf("ends after a rotation to 2030 (a sooner end stays): %v %v %v", ends[0], ends[1], ends[2])
	}

	// Sealed in the database: neither the key nor its base64 is stored; each row differs.
	sealed := e.sealedGroupKeys(t, g.ID)
	if len(sealed) != 3 {
		t.Fatalf("%d stored keys, want 3", len(sealed))
	}
	for id, s := range sealed {
		for _, k := range [][]byte{key1, key2, groupKeyBytes(t, rot.GroupKey)} {
			if len(s) < 32+12 || bytes.Contains(s, k) || bytes.Contains(s, []byte(base64.StdEncoding.EncodeToString(k))) {
				t.Errorf("stored key %s holds a group key in clear (%d bytes)", id, len(s))
			}
		}
	}
	dump := e.dump(t)
	for _, k := range keys {
		raw, _ := base64.StdEncoding.DecodeString(k)
		if bytes.Contains(dump, []byte(k)) || bytes.Contains(dump, raw) {
			t.Errorf("the database holds a group key in clear")
		}
	}

	// Delete: the group is gone; the other stays.
	e.mustDo(t, e.admin, "DELETE", groupsPath(dt.ID)+"/"+g2.ID, "", 204, nil)
	if status, b := e.send(t, req{key: e.admin, method: "GET", path: groupsPath(dt.ID) + "/" + g2.ID}); status != 404 {
		t.Errorf("a deleted group = %d %s", status, b)
	}
	if status, b := e.send(t, req{key: e.admin, method: "DELETE", path: groupsPath(dt.ID) + "/" + g2.ID}); status != 404 {
		t.Errorf("deleting it again = %d %s", status, b)
	}
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if len(list.Groups) != 1 || list.Groups[0].ID != g.ID {
		t.Errorf("after the delete: %+v", list.Groups)
	}

	// The audit log has each change, and no key.
	status, auditBody := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/audit?object_id=" + dt.ID})
	var audit struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?object_id="+dt.ID, "", 200, &audit)
	var actions []string
	for _, en := range audit.Entries {
		actions = append(actions, en.Action)
	}
	want := "enrollment_group.delete enrollment_group.key_create enrollment_group.key_create enrollment_group.update enrollment_group.update " +
		"enrollment_group.create enrollment_group.create devicetype.create"
	if got := strings.Join(actions, " "); status != 200 || got != want {
		t.Errorf("audit entries of the type, newest first:\n%s\nwant\n%s", got, want)
	}
	if d := audit.Entries[len(audit.Entries)-2].Details; d["group_id"] != g.ID || d["key_id"] != firstKey || d["id_pattern"] != "^T1-[0-9A-F]{12}$" {
		t.Errorf("enrollment_group.create details %v", d)
	}
	if d := audit.Entries[3].Details; d["group_id"] != g2.ID || fmt.Sprint(d["new"]) != "map[not_after: status:enabled]" {
		t.Errorf("enrollment_group.update details %v", d)
	}
	if d := audit.Entries[1].Details; d["group_id"] != g.ID || d["key_id"] == "" || d["old_keys_not_after"] == "" {
		t.Errorf("enrollment_group.key_create details %v", d)
	}
	logged := e.log.String()
	for _, k := range keys {
		if strings.Contains(string(auditBody), k) || strings.Contains(logged, k) {
			t.Errorf("a group key is in the audit log or the server's log")
		}
	}
	if !strings.Contains(logged, "/enrollment_groups") {
		t.Errorf("the server's log has no request to the groups: the check above proves nothing")
	}
}

// TestEnrollmentGroupRefusals: every bad request is refused with a message that names what is
// wrong, and nothing is stored.
func TestEnrollmentGroupRefusals(t *testing.T) { pgtest.Each(t, testEnrollmentGroupRefusals) }

func testEnrollmentGroupRefusals(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`, 201, &g)
	one := groupsPath(dt.ID) + "/" + g.ID
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		says                     string
		invalid                  bool // the request breaks the document, on purpose
	}{
		{"unanchored", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "S-[0-9]+", "max_devices": 5}`, 422, "ID pattern is not anchored", true},
		{"end-unanchored", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S-[0-9]+", "max_devices": 5}`, 422, "ID pattern is not anchored", true},
		{"alternative-escapes", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S|T$", "max_devices": 5}`, 422, "each alternative needs both anchors", false},
		{"too-long", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^` + strings.Repeat("S", 255) + `$", "max_devices": 5}`, 422, "at most 256 are allowed", true},
		{"not-re2", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^(?=S)[0-9]$", "max_devices": 5}`, 422, "does not compile as a regular expression (RE2 syntax)", false},
		{"control-character", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S\t$", "max_devices": 5}`, 422, "control character", true},
		{"unknown-field", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 5, "group_key": "AAAA"}`, 400, `unknown field "group_key"`, true},
		{"max-devices-0", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 0}`, 422, "max_devices is required", true},
		{"max-devices-absent", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$"}`, 422, "max_devices is required", true},
		{"max-devices-huge", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 1099511627777}`, 422, "max_devices must be between 1 and 1099511627776", true},
		{"max-per-hour-0", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 5, "max_per_hour": 0}`, 422, "max_per_hour must be between 1 and 100000", true},
		{"window-reversed", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 5, "not_before": "2027-02-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}`, 422, "not_before (2027-02-01T00:00:00Z) must be before not_after", false},
		{"window-empty", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 5, "not_before": "2027-01-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}`, 422, "must be before not_after", false},
		{"bad-time", "POST", groupsPath(dt.ID), `{"name": "L", "id_pattern": "^S$", "max_devices": 5, "not_after": "tomorrow"}`, 422, "not_after must be an RFC 3339 time", true},
		{"no-name", "POST", groupsPath(dt.ID), `{"name": " ", "id_pattern": "^S$", "max_devices": 5}`, 422, "name is required", false},
		{"same-name", "POST", groupsPath(dt.ID), `{"name": "line 1", "id_pattern": "^T$", "max_devices": 5}`, 409, `named "Line 1" already`, false},
		{"not-json", "POST", groupsPath(dt.ID), `{"name": `, 400, "not valid JSON", true},
		{"patch-status", "PATCH", one, `{"status": "paused"}`, 422, `status must be "enabled" or "disabled"`, true},
		{"patch-unknown-field", "PATCH", one, `{"enrolled_count": 0}`, 400, `unknown field "enrolled_count"`, true},
		{"patch-window-reversed", "PATCH", one, `{"not_before": "2027-02-01T00:00:00Z", "not_after": "2026-02-01T00:00:00Z"}`, 422, "must be before not_after", false},
		{"patch-pattern", "PATCH", one, `{"id_pattern": "S.*"}`, 422, "ID pattern is not anchored", true},
		{"patch-max-devices-0", "PATCH", one, `{"max_devices": 0}`, 422, "max_devices must be between 1", true},
		{"rotate-bad-time", "POST", one + "/keys", `{"old_keys_not_after": "soon"}`, 422, "old_keys_not_after must be an RFC 3339 time", true},
		{"rotate-unknown-field", "POST", one + "/keys", `{"not_after": "2027-01-01T00:00:00Z"}`, 400, `unknown field "not_after"`, true},
		{"404/no-such-group", "PATCH", groupsPath(dt.ID) + "/eg_nosuch", `{"status": "disabled"}`, 404, "has no enrollment group eg_nosuch", false},
		{"404/no-such-group-keys", "POST", groupsPath(dt.ID) + "/eg_nosuch/keys", ``, 404, "has no enrollment group eg_nosuch", false},
		{"404/no-such-type", "GET", groupsPath("dt_nosuch"), ``, 404, "dt_nosuch", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.admin, method: tc.method, path: tc.path, body: tc.body, invalid: tc.invalid})
			if eb := decodeError(t, b); status != tc.status || !strings.Contains(eb.Error.Message, tc.says) {
				t.Errorf("= %d %s, want %d saying %q", status, b, tc.status, tc.says)
			}
		})
	}
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", one, "", 200, &read)
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if len(list.Groups) != 1 || read.Name != "Line 1" || read.Status != devreg.StatusEnabled || read.NotBefore != nil || read.MaxDevices != 5 || len(read.Keys) != 1 {
		t.Errorf("refused requests changed something: %d groups, %+v", len(list.Groups), read)
	}

	// Lowering max_devices below what the group has enrolled is allowed (it only stops
	// enrolment), and the count stays what enrolment made it.
	db := e.openDB(t)
	defer db.Close()
	if _, err := db.Exec(`UPDATE enrollment_groups SET enrolled_count = 4 WHERE id = $1`, g.ID); err != nil {
		t.Fatal(err)
	}
	e.mustDo(t, e.admin, "PATCH", one, `{"max_devices": 2}`, 200, &read)
	if read.MaxDevices != 2 || read.EnrolledCount != 4 {
		t.Errorf("after lowering max_devices below the count: max %d, enrolled %d", read.MaxDevices, read.EnrolledCount)
	}
	e.mustDo(t, e.admin, "GET", one, "", 200, &read)
	if read.MaxDevices != 2 || read.EnrolledCount != 4 {
		t.Errorf("read back: max %d, enrolled %d", read.MaxDevices, read.EnrolledCount)
	}
}

// TestEnrollmentGroupAccess: only an admin key of the type's account reaches its groups; another
// account's key finds nothing there, and keys below admin are refused.
func TestEnrollmentGroupAccess(t *testing.T) { pgtest.Each(t, testEnrollmentGroupAccess) }

func testEnrollmentGroupAccess(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`, 201, &g)
	calls := []req{
		{method: "GET", path: groupsPath(dt.ID)},
		{method: "POST", path: groupsPath(dt.ID), body: `{"name": "Line 2", "id_pattern": "^T-[0-9]+$", "max_devices": 5}`},
		{method: "GET", path: groupsPath(dt.ID) + "/" + g.ID},
		{method: "PATCH", path: groupsPath(dt.ID) + "/" + g.ID, body: `{"status": "disabled"}`},
		{method: "POST", path: groupsPath(dt.ID) + "/" + g.ID + "/keys", body: `{}`},
		{method: "DELETE", path: groupsPath(dt.ID) + "/" + g.ID},
	}
	t.Run("404/other-account", func(t *testing.T) {
		for _, r := range calls {
			r.key = e.other
			if status, b := e.send(t, r); status != 404 {
				t.Errorf("%s %s by another account = %d %s", r.method, r.path, status, b)
			}
		}
		// Nor through a type of its own.
		other := e.createType(t, e.other, "Other sensor", 0)
		for _, r := range calls[2:] {
			r.key, r.path = e.other, strings.Replace(r.path, dt.ID, other.ID, 1)
			if status, b := e.send(t, r); status != 404 {
				t.Errorf("%s %s: another account through its own type = %d %s", r.method, r.path, status, b)
			}
		}
	})
	t.Run("403/below-admin", func(t *testing.T) {
		var restricted struct{ Key string }
		e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line 3", "scope": "register", "device_type_ids": ["`+dt.ID+`"]}`, 201, &restricted)
		for _, key := range []string{e.read, e.registerKey, restricted.Key} {
			for _, r := range calls {
				r.key = key
				if status, b := e.send(t, r); status != 403 {
					t.Errorf("%s %s below admin = %d %s", r.method, r.path, status, b)
				}
			}
		}
	})
	t.Run("401/no-key", func(t *testing.T) {
		if status, b := e.send(t, calls[0]); status != 401 {
			t.Errorf("no key = %d %s", status, b)
		}
	})
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g.ID, "", 200, &read)
	if read.Status != devreg.StatusEnabled || len(read.Keys) != 1 {
		t.Errorf("refused callers changed the group: %+v", read)
	}
}

// TestEnrollmentKeyLimit: a group holds at most 5 keys. A sixth rotation while every old key is
// still live is refused; ending the old keys at once lets the next rotation drop an ended one.
func TestEnrollmentKeyLimit(t *testing.T) { pgtest.Each(t, testEnrollmentKeyLimit) }

func testEnrollmentKeyLimit(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`, 201, &g)
	keysPath := groupsPath(dt.ID) + "/" + g.ID + "/keys"
	var rot enrollmentKeyCreated
	for range devreg.MaxEnrollmentGroupKeys - 1 {
		e.mustDo(t, e.admin, "POST", keysPath, "", 201, &rot)
	}
	if len(rot.Group.Keys) != devreg.MaxEnrollmentGroupKeys {
		t.Fatalf("after 4 rotations the group has %d keys", len(rot.Group.Keys))
	}
	status, b := e.send(t, req{key: e.admin, method: "POST", path: keysPath})
	if eb := decodeError(t, b); status != 422 || !strings.Contains(eb.Error.Message, "holds 5 keys, the most a group may hold") ||
		!strings.Contains(eb.Error.Message, "old_keys_not_after") {
		t.Errorf("a sixth key = %d %s, want 422 naming the limit and the way out", status, b)
	}
	// End the old keys now: this rotation is still one too many (none has ended before it), but
	// old_keys_not_after in the past ends them at once, so it makes room for itself.
	e.mustDo(t, e.admin, "POST", keysPath, `{"old_keys_not_after": "2020-01-01T00:00:00Z"}`, 201, &rot)
	if len(rot.Group.Keys) != devreg.MaxEnrollmentGroupKeys || rot.Group.Keys[0].ID == g.Keys[0].ID {
		t.Fatalf("after ending the old keys at once: %+v", rot.Group.Keys)
	}
	now := e.clock.Now()
	for _, k := range rot.Group.Keys[:len(rot.Group.Keys)-1] {
		if k.NotAfter == nil || k.NotAfter.After(now) || k.NotAfter.Before(now.Add(-time.Minute)) {
			t.Errorf("old key %s ends %v, want now (a time in the past ends them at once)", k.ID, k.NotAfter)
		}
	}
	if last := rot.Group.Keys[len(rot.Group.Keys)-1]; last.ID != rot.ID || last.NotAfter != nil {
		t.Errorf("the new key: %+v", last)
	}
	// From now on every rotation drops the key that ended first.
	e.clock.Add(time.Second)
	e.mustDo(t, e.admin, "POST", keysPath, `{}`, 201, &rot)
	if len(rot.Group.Keys) != devreg.MaxEnrollmentGroupKeys {
		t.Errorf("keys after another rotation: %d", len(rot.Group.Keys))
	}
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g.ID, "", 200, &read)
	if len(e.sealedGroupKeys(t, g.ID)) != devreg.MaxEnrollmentGroupKeys || len(read.Keys) != devreg.MaxEnrollmentGroupKeys {
		t.Errorf("stored keys: %d", len(read.Keys))
	}
}

// TestEnrollmentGroupLimitHoldsUnderParallelCreates sends 16 creates at once to a type with 18
// groups: exactly 2 are taken (20 is the most a type holds), the rest are 422 naming the limit.
func TestEnrollmentGroupLimitHoldsUnderParallelCreates(t *testing.T) {
	pgtest.Each(t, testEnrollmentGroupLimitHoldsUnderParallelCreates)
}

func testEnrollmentGroupLimitHoldsUnderParallelCreates(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	for i := range devreg.MaxEnrollmentGroupsPerType - 2 {
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Line %d", "id_pattern": "^S%d-[0-9]+$", "max_devices": 5}`, i, i), 201, nil)
	}
	const n = 16
	statuses := make([]int, n)
	messages := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var b []byte
			statuses[i], b = e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID),
				body: fmt.Sprintf(`{"name": "Parallel %d", "id_pattern": "^P%d-[0-9]+$", "max_devices": 5}`, i, i)})
			messages[i] = string(b)
		})
	}
	wg.Wait()
	created := 0
	for i, s := range statuses {
		switch {
		case s == 201:
			created++
		case s == 422 && strings.Contains(messages[i], "the most a type may hold"):
		default:
			t.Errorf("create %d = %d %s", i, s, messages[i])
		}
	}
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if created != 2 || len(list.Groups) != devreg.MaxEnrollmentGroupsPerType {
		t.Errorf("%d creates answered 201 and %d groups are stored; want 2 and %d", created, len(list.Groups), devreg.MaxEnrollmentGroupsPerType)
	}
}

// TestEnrollmentGroupsOfATypeMayNotOverlap: a pattern that shares a device ID with another
// group's of the same type is refused with an ID both match, on creation and on change; groups
// of different types may overlap (the older one wins at enrolment).
func TestEnrollmentGroupsOfATypeMayNotOverlap(t *testing.T) {
	pgtest.Each(t, testEnrollmentGroupsOfATypeMayNotOverlap)
}

func testEnrollmentGroupsOfATypeMayNotOverlap(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	other := e.createType(t, e.admin, "Gateway", 0)
	var hex, digits enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Hex", "id_pattern": "^T1-[0-9A-F]{12}$", "max_devices": 5}`, 201, &hex)
	status, b := e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID), body: `{"name": "Digits", "id_pattern": "^T1-[0-9]{12}$", "max_devices": 5}`})
	if eb := decodeError(t, b); status != 409 || !strings.Contains(eb.Error.Message, "both match the device ID T1-000000000000") || !strings.Contains(eb.Error.Message, hex.ID) {
		t.Errorf("overlapping group = %d %s, want 409 naming the group and an ID both match", status, b)
	}
	e.mustDo(t, e.admin, "POST", groupsPath(other.ID), `{"name": "Digits", "id_pattern": "^T1-[0-9]{12}$", "max_devices": 5}`, 201, &digits)
	var disjoint enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "T2", "id_pattern": "^T2-[0-9]{12}$", "max_devices": 5}`, 201, &disjoint)
	status, b = e.send(t, req{key: e.admin, method: "PATCH", path: groupsPath(dt.ID) + "/" + disjoint.ID, body: `{"id_pattern": "^T[12]-[0-9]{12}$"}`})
	if eb := decodeError(t, b); status != 409 || !strings.Contains(eb.Error.Message, "both match the device ID T1-000000000000") {
		t.Errorf("changing a pattern to overlap = %d %s, want 409", status, b)
	}
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+disjoint.ID, "", 200, &read)
	if read.IDPattern != "^T2-[0-9]{12}$" {
		t.Errorf("a refused change changed the pattern to %q", read.IDPattern)
	}
	// A change to another field of a group leaves its pattern alone.
	e.mustDo(t, e.admin, "PATCH", groupsPath(dt.ID)+"/"+disjoint.ID, `{"max_devices": 7}`, 200, &read)
}
