package deviceauth_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/server"
	"devreg/store"
)

// groupSpec is an enrollment group a test makes.
type groupSpec struct {
	id, pattern, typeID  string // typeID: the env's device type if ""
	maxDevices           int64
	maxPerHour           int
	status               devreg.DeviceStatus
	notBefore, notAfter  *time.Time
	keyNotAfter          *time.Time // the group key's end; nil: none
	temporary, allowList bool
	created              time.Time
}

// enrollDB opens the server's database and key file beside it, for what the Operations API of
// this branch does not do yet: making enrollment groups (the groups API is another branch's).
func (e *env) enrollDB(t *testing.T) (*store.DB, *credential.Keyring) {
	t.Helper()
	cfg := server.Config{DataDir: e.dataDir, Database: e.db}
	db, err := store.Open(context.Background(), cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := credential.LoadOrCreateKeyring(cfg.KeyFile())
	if err != nil {
		t.Fatal(err)
	}
	return db, keys
}

// newGroup stores an enrollment group of the env's device type with one key, sealed as the
// groups API seals it, and returns the key in clear.
func (e *env) newGroup(t *testing.T, db *store.DB, keys *credential.Keyring, g groupSpec) []byte {
	t.Helper()
	raw, _ := credential.NewGroupKey()
	if g.status == "" {
		g.status = devreg.StatusEnabled
	}
	if g.created.IsZero() {
		g.created = e.clock.Now()
	}
	if g.typeID == "" {
		g.typeID = e.typeID
	}
	keyID := "egk_" + g.id
	current := keys.Current()
	group := devreg.EnrollmentGroup{ID: g.id, AccountID: e.account, DeviceTypeID: g.typeID, Name: "group " + g.id, IDPattern: g.pattern,
		MaxDevices: g.maxDevices, MaxPerHour: g.maxPerHour, NotBefore: g.notBefore, NotAfter: g.notAfter, Status: g.status,
		Temporary: g.temporary, AllowList: g.allowList, CreatedAt: g.created,
		Keys: []devreg.EnrollmentKey{{ID: keyID, CreatedAt: g.created, NotAfter: g.keyNotAfter, SealKeyID: current.ID,
			Sealed: credential.Seal(current, raw, credential.SealContext(e.account, g.id, keyID))}}}
	if err := db.CreateEnrollmentGroup(context.Background(), group, nil); err != nil {
		t.Fatal(err)
	}
	return raw
}

// token asks for a device token with HTTP Basic, as a device would.
func (e *env) tokenFor(t *testing.T, deviceID, secret string) (int, map[string]any, http.Header) {
	t.Helper()
	return e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth(deviceID, secret)})
}

// apiCall sends a request to the Operations API with the account's admin key.
func (e *env) apiCall(t *testing.T, method, path, contentType, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func (e *env) adminContext() context.Context {
	return devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: e.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
}

// TestEnrollment: a device the account does not have, whose ID matches an enrollment group's
// pattern, is registered at its first connection with the secret derived from the group's key
// (Azure DPS's formula), into the group's batch of the day, with a temporary credential of source
// enrollment; then it is a device like any other. A wrong secret is a wrong secret (401, counted
// in the device's throttle and the group's failures); a device that exists is never touched by
// a group; an ID enrols once until an administrator re-allows it; an allow-list admits only its
// IDs; a disabled group or one outside its window registers nothing.
func TestEnrollment(t *testing.T) { pgtest.Each(t, testEnrollment) }

func testEnrollment(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	admin := e.adminContext()
	db, keys := e.enrollDB(t)
	grace := 3600
	if _, err := e.srv.Service.UpdateDeviceType(admin, e.typeID, devreg.DeviceTypeUpdate{RotationGraceSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_t1", pattern: `^T1-[0-9A-F]{12}$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	enrolledAt := e.clock.Now()

	// The first connection enrols the device and gets a token.
	id := "T1-00000000000A"
	status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id))
	if status != http.StatusOK || body["access_token"] == nil {
		t.Fatalf("first connection with the derived secret = %d %v; want 200 and a token", status, body)
	}
	_, claims := e.verifyWithJWKS(t, body["access_token"].(string))
	if claims["sub"] != id || claims["device_type_id"] != e.typeID {
		t.Errorf("the token's claims %v; want the device and the group's type", claims)
	}
	dev, err := e.admin.Device(ctx, id)
	if err != nil || dev.DeviceTypeID != e.typeID || dev.Status != devreg.StatusEnabled {
		t.Fatalf("the enrolled device: %+v, %v", dev, err)
	}
	batch, err := e.admin.Batch(ctx, dev.BatchID)
	if err != nil || batch.Source != devreg.SourceEnrollment || batch.DeviceCount != 1 || !strings.Contains(batch.CreatedBy, "eg_t1") {
		t.Fatalf("its batch: %+v, %v; want the group's batch of enrollments holding it", batch, err)
	}
	creds, err := e.admin.ListCredentials(ctx, id)
	if err != nil || len(creds) != 1 || creds[0].Source != devreg.CredentialFromEnrollment || creds[0].NotAfter == nil ||
		!creds[0].NotAfter.Equal(enrolledAt.Add(time.Hour)) {
		t.Fatalf("its credentials: %+v, %v; want the derived secret, source enrollment, ending after the type's grace (1 h)", creds, err)
	}
	// A second device of the same day joins the same batch; the same device again is a login.
	id2 := "T1-00000000000B"
	if status, body, _ := e.tokenFor(t, id2, credential.DeriveSecret(key, id2)); status != http.StatusOK {
		t.Fatalf("second device = %d %v", status, body)
	}
	if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != http.StatusOK {
		t.Fatalf("the enrolled device again = %d %v", status, body)
	}
	if d2, _ := e.admin.Device(ctx, id2); d2.BatchID != dev.BatchID {
		t.Errorf("two enrollments of a day made batches %s and %s", dev.BatchID, d2.BatchID)
	}
	if entries := e.auditEntries(t, "device.enroll"); len(entries) != 2 || entries[0].Actor.Type != devreg.ActorEnrollmentGroup ||
		entries[0].Actor.ID != "eg_t1" || entries[0].Details["batch_id"] != dev.BatchID {
		t.Errorf("audit entries of the enrollments: %+v", entries)
	}

	// A wrong secret is refused and counted like any wrong secret: after DeviceMaxFailures of
	// them the right one is throttled too, and nothing was registered.
	id3 := "T1-00000000000C"
	for i := range registry.DeviceMaxFailures {
		if status, body, _ := e.tokenFor(t, id3, credential.DeriveSecret([]byte("another group key, not this one!"), id3)); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
			t.Fatalf("wrong secret %d = %d %v; want 401 invalid_client", i, status, body)
		}
	}
	if status, body, _ := e.tokenFor(t, id3, credential.DeriveSecret(key, id3)); status != http.StatusTooManyRequests || body["error"] != "invalid_client" {
		t.Fatalf("the right secret after %d wrong ones = %d %v; want 429 invalid_client (throttled)", registry.DeviceMaxFailures, status, body)
	}
	if _, err := e.admin.Device(ctx, id3); !isNotFound(err) {
		t.Errorf("a throttled first connection registered the device: %v", err)
	}
	if n, err := e.srv.Service.EnrollmentFailures(admin, e.account, "eg_t1"); err != nil || n != registry.DeviceMaxFailures {
		t.Errorf("the group's failures in the hour = %d, %v; want %d", n, err, registry.DeviceMaxFailures)
	}

	// A device that exists is never touched by a group: its own secret decides, and a disabled
	// one stays out.
	e.newGroup(t, db, keys, groupSpec{id: "eg_dev", pattern: `^device[0-9]$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	if status, _, _ := e.tokenFor(t, "device1", credential.DeriveSecret(key, "device1")); status != http.StatusUnauthorized {
		t.Errorf("an existing device with a derived secret = %d; want 401", status)
	}
	if status, _, _ := e.tokenFor(t, "device1", "secretfordevice1"); status != http.StatusOK {
		t.Errorf("an existing device with its own secret = %d; want 200", status)
	}
	if _, err := e.admin.SetDeviceStatus(ctx, "device2", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if status, _, _ := e.tokenFor(t, "device2", credential.DeriveSecret(key, "device2")); status != http.StatusUnauthorized {
		t.Errorf("a disabled device with a derived secret = %d; want 401", status)
	}
	if d, _ := e.admin.Device(ctx, "device2"); d.Status != devreg.StatusDisabled || d.BatchID == dev.BatchID {
		t.Errorf("the disabled device was touched: %+v", d)
	}

	// Once: a deleted device does not come back through the group, until it is re-allowed.
	if err := e.admin.DeleteDevice(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := e.tokenFor(t, id2, credential.DeriveSecret(key, id2)); status != http.StatusUnauthorized {
		t.Fatalf("a deleted device's first connection again = %d %v; want 401", status, body)
	}
	path := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups/eg_t1/reenroll"
	if status, body := e.apiCall(t, "POST", path, "application/json", `{"device_ids": ["`+id2+`", "T1-000000000FFF"]}`); status != http.StatusOK || body["reenrolled"] != 1.0 {
		t.Fatalf("reenroll = %d %v; want 200 {\"reenrolled\": 1}", status, body)
	}
	if status, body, _ := e.tokenFor(t, id2, credential.DeriveSecret(key, id2)); status != http.StatusOK {
		t.Fatalf("a re-allowed device's first connection = %d %v; want 200", status, body)
	}
	if status, body := e.apiCall(t, "POST", "/api/v1/devicetypes/"+e.typeID+"/enrollment_groups/eg_nope/reenroll", "application/json", `{"device_ids": ["x"]}`); status != http.StatusNotFound {
		t.Errorf("reenroll on a group that does not exist = %d %v; want 404", status, body)
	}
	if entries := e.auditEntries(t, "enrollment_group.reenroll"); len(entries) != 1 || entries[0].Details["reenrolled"] != 1.0 || entries[0].Details["device_ids"] != nil {
		t.Errorf("the reenroll's audit entries: %+v", entries)
	}

	// An allow-list admits its IDs only; a bad entry anywhere leaves the list as it was.
	listKey := e.newGroup(t, db, keys, groupSpec{id: "eg_list", pattern: `^L-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	listPath := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups/eg_list/allowed_ids"
	status, body = e.apiCall(t, "PUT", listPath, "text/csv", "L-1, X-2\nL-3,\n,L-4\n")
	problems, _ := body["problems"].([]any)
	if status != http.StatusUnprocessableEntity || len(problems) != 2 {
		t.Fatalf("an allow-list with bad entries = %d %v; want 422 naming two", status, body)
	}
	if p := problems[0].(map[string]any); p["index"] != 1.0 || p["line"] != 1.0 || p["device_id"] != "X-2" {
		t.Errorf("first problem %v; want index 1, line 1, X-2", p)
	}
	if p := problems[1].(map[string]any); p["index"] != 3.0 || p["line"] != 3.0 {
		t.Errorf("second problem %v; want the empty field at index 3, line 3", p)
	}
	if status, body, _ := e.tokenFor(t, "L-9", credential.DeriveSecret(listKey, "L-9")); status != http.StatusOK {
		t.Fatalf("a group without an allow-list yet = %d %v; want 200", status, body)
	}
	if status, body := e.apiCall(t, "PUT", listPath, "text/csv", "L-1, L-2\nL-1\n"); status != http.StatusOK || body["allowed"] != 2.0 {
		t.Fatalf("an allow-list = %d %v; want 200 {\"allowed\": 2}", status, body)
	}
	if status, body, _ := e.tokenFor(t, "L-1", credential.DeriveSecret(listKey, "L-1")); status != http.StatusOK {
		t.Errorf("a listed ID = %d %v; want 200", status, body)
	}
	if status, body, _ := e.tokenFor(t, "L-3", credential.DeriveSecret(listKey, "L-3")); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("an ID off the list = %d %v; want 401", status, body)
	}
	if status, body := e.apiCall(t, "PUT", listPath, "application/json", `["L-1"]`); status != http.StatusUnsupportedMediaType {
		t.Errorf("an allow-list as JSON = %d %v; want 415", status, body)
	}
	if status, body := e.apiCall(t, "PUT", listPath, "text/csv", ""); status != http.StatusOK || body["allowed"] != 0.0 {
		t.Fatalf("an empty allow-list = %d %v; want 200 {\"allowed\": 0}", status, body)
	}
	if status, _, _ := e.tokenFor(t, "L-2", credential.DeriveSecret(listKey, "L-2")); status != http.StatusUnauthorized {
		t.Errorf("an ID of an emptied allow-list = %d; want 401 (an empty list allows nothing)", status)
	}
	if entries := e.auditEntries(t, "enrollment_group.allowed_ids"); len(entries) != 2 || entries[1].Details["allowed"] != 2.0 {
		t.Errorf("the allow-lists' audit entries: %+v", entries)
	}

	// A disabled group, one outside its window or one whose key has ended registers nothing; an ID that matches but
	// breaks devreg's ID rules is refused like any invalid ID.
	past, future := e.clock.Now().Add(-time.Minute), e.clock.Now().Add(time.Hour)
	offKey := e.newGroup(t, db, keys, groupSpec{id: "eg_off", pattern: `^OFF-.*$`, maxDevices: 100, maxPerHour: 100, status: devreg.StatusDisabled})
	overKey := e.newGroup(t, db, keys, groupSpec{id: "eg_over", pattern: `^OVER-[0-9]+$`, maxDevices: 100, maxPerHour: 100, notAfter: &past})
	soonKey := e.newGroup(t, db, keys, groupSpec{id: "eg_soon", pattern: `^SOON-[0-9]+$`, maxDevices: 100, maxPerHour: 100, notBefore: &future})
	endedKey := e.newGroup(t, db, keys, groupSpec{id: "eg_ended", pattern: `^ENDED-[0-9]+$`, maxDevices: 100, maxPerHour: 100, keyNotAfter: &past})
	for _, c := range []struct {
		id  string
		key []byte
	}{{"OFF-1", offKey}, {"OVER-1", overKey}, {"SOON-1", soonKey}, {"ENDED-1", endedKey}, {"OFF-" + strings.Repeat("x", 130), offKey}, {"OFF-\x00", offKey}} {
		if status, body, _ := e.tokenFor(t, c.id, credential.DeriveSecret(c.key, c.id)); status != http.StatusUnauthorized {
			t.Errorf("%.20q = %d %v; want 401", c.id, status, body)
		}
	}
	e.clock.Add(2 * time.Hour)
	if status, body, _ := e.tokenFor(t, "SOON-1", credential.DeriveSecret(soonKey, "SOON-1")); status != http.StatusOK {
		t.Errorf("once its window opened = %d %v; want 200", status, body)
	}
	// After the grace, the derived secret of a temporary credential no longer works.
	if status, _, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != http.StatusUnauthorized {
		t.Errorf("a derived secret after the grace = %d; want 401", status)
	}
	checkClean(t, db)
}

// isNotFound reports whether err is the Operations API's 404.
func isNotFound(err error) bool {
	var ce *client.Error
	return errors.As(err, &ce) && ce.Status == http.StatusNotFound
}

// TestEnrollmentOlderGroupWins: where the patterns of groups of different device types overlap,
// the older group decides alone: the newer group's derived secret is a wrong secret.
func TestEnrollmentOlderGroupWins(t *testing.T) { pgtest.Each(t, testEnrollmentOlderGroupWins) }

func testEnrollmentOlderGroupWins(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	name := "Gateway"
	gw, err := e.admin.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	older := e.newGroup(t, db, keys, groupSpec{id: "eg_old", pattern: `^W-[0-9]+$`, typeID: gw.ID, maxDevices: 10, maxPerHour: 10, created: e.clock.Now().Add(-time.Hour)})
	newer := e.newGroup(t, db, keys, groupSpec{id: "eg_new", pattern: `^W-1[0-9]*$`, maxDevices: 10, maxPerHour: 10})
	if status, _, _ := e.tokenFor(t, "W-1", credential.DeriveSecret(newer, "W-1")); status != http.StatusUnauthorized {
		t.Errorf("the newer group's secret for an ID both match = %d; want 401", status)
	}
	if status, body, _ := e.tokenFor(t, "W-1", credential.DeriveSecret(older, "W-1")); status != http.StatusOK {
		t.Fatalf("the older group's secret = %d %v; want 200", status, body)
	}
	if d, err := e.admin.Device(ctx, "W-1"); err != nil || d.DeviceTypeID != gw.ID {
		t.Errorf("the device: %+v, %v; want the older group's type %s", d, err, gw.ID)
	}
}

// TestEnrollmentGraceFloor: under a type whose rotation grace is 0, the derived secret of a
// temporary group still lasts an hour: long enough for the device to log in and rotate.
func TestEnrollmentGraceFloor(t *testing.T) { pgtest.Each(t, testEnrollmentGraceFloor) }

func testEnrollmentGraceFloor(t *testing.T, database string) {
	e := newEnv(t, database)
	db, keys := e.enrollDB(t)
	zero := 0
	if _, err := e.srv.Service.UpdateDeviceType(e.adminContext(), e.typeID, devreg.DeviceTypeUpdate{RotationGraceSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_zero", pattern: `^Z-[0-9]+$`, maxDevices: 10, maxPerHour: 10, temporary: true})
	if status, body, _ := e.tokenFor(t, "Z-1", credential.DeriveSecret(key, "Z-1")); status != http.StatusOK {
		t.Fatalf("first connection under a grace of 0 = %d %v; want 200", status, body)
	}
	creds, err := e.admin.ListCredentials(context.Background(), "Z-1")
	if err != nil || len(creds) != 1 || creds[0].NotAfter == nil || !creds[0].NotAfter.Equal(e.clock.Now().Add(devreg.MinEnrollmentCredentialLife)) {
		t.Fatalf("credentials %+v, %v; want the derived secret ending in an hour", creds, err)
	}
	if status, body, _ := e.rotate(t, "Z-1", credential.DeriveSecret(key, "Z-1"), ""); status != http.StatusCreated {
		t.Errorf("rotation within the hour = %d %v; want 201", status, body)
	}
}

// checkClean runs devreg check's counters on the database: every count equals its rows.
func checkClean(t *testing.T, db *store.DB) {
	t.Helper()
	r, err := db.CheckCounters(context.Background())
	if err != nil || len(r.Problems) > 0 {
		t.Errorf("check: %v, %v", r.Problems, err)
	}
}

// TestEnrollmentRotation: the first connection may be the rotation itself: it enrols the device,
// which gets a secret of its own; once the device has used it, a rotation with the derived
// secret is refused, the derived secret ends after the grace, and a leaked group key no longer
// opens the device.
func TestEnrollmentRotation(t *testing.T) { pgtest.Each(t, testEnrollmentRotation) }

func testEnrollmentRotation(t *testing.T, database string) {
	e := newEnv(t, database)
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_rot", pattern: `^R-[0-9]+$`, maxDevices: 10, maxPerHour: 10, temporary: false})
	id := "R-1"
	derived := credential.DeriveSecret(key, id)
	status, body, _ := e.rotate(t, id, derived, "")
	if status != http.StatusCreated {
		t.Fatalf("rotation as the first connection = %d %v; want 201", status, body)
	}
	secret, _ := body["secret"].(string)
	if status, body, _ := e.tokenFor(t, id, secret); status != http.StatusOK {
		t.Fatalf("the new secret = %d %v", status, body)
	}
	if status, _, _ := e.tokenFor(t, id, derived); status != http.StatusOK {
		t.Errorf("the derived secret within the grace = %d; want 200", status)
	}
	// A device that rotated (a second after it enrolled: the test's clock stands still otherwise)
	// and used its own secret since: whoever rotates with the derived one holds a leaked group
	// key, and gets no secret of the device's.
	id2 := "R-2"
	derived2 := credential.DeriveSecret(key, id2)
	if status, body, _ := e.tokenFor(t, id2, derived2); status != http.StatusOK {
		t.Fatalf("R-2's first connection = %d %v", status, body)
	}
	e.clock.Add(time.Second)
	status, body, _ = e.rotate(t, id2, derived2, "")
	own, _ := body["secret"].(string)
	if status != http.StatusCreated {
		t.Fatalf("R-2's rotation = %d %v", status, body)
	}
	if status, body, _ := e.tokenFor(t, id2, own); status != http.StatusOK {
		t.Fatalf("R-2's own secret = %d %v", status, body)
	}
	if status, body, _ := e.rotate(t, id2, derived2, ""); status != http.StatusUnauthorized {
		t.Errorf("a rotation with the derived secret after the device used its own = %d %v; want 401", status, body)
	}
	e.clock.Add(devreg.DefaultRotationGraceSeconds*time.Second + time.Second)
	if status, _, _ := e.tokenFor(t, id, derived); status != http.StatusUnauthorized {
		t.Errorf("the derived secret after the grace = %d; want 401", status)
	}
	if status, _, _ := e.tokenFor(t, id, secret); status != http.StatusOK {
		t.Errorf("the device's own secret after the grace = %d; want 200", status)
	}
}

// firstConnections sends one first connection for each of ids at once, over HTTP to the servers
// in turn, and returns the answers' statuses, bodies and headers.
func firstConnections(t *testing.T, servers []*env, key []byte, ids []string) ([]int, []map[string]any, []http.Header) {
	t.Helper()
	statuses, bodies, headers := make([]int, len(ids)), make([]map[string]any, len(ids)), make([]http.Header, len(ids))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, id := range ids {
		wg.Go(func() {
			<-start
			statuses[i], bodies[i], headers[i] = servers[i%len(servers)].tokenFor(t, id, credential.DeriveSecret(key, id))
		})
	}
	close(start)
	wg.Wait()
	return statuses, bodies, headers
}

// TestEnrollmentLimits: max_devices and max_per_hour are exact under parallel first
// connections: of 200 against max_devices 50 exactly 50 register and 150 get 403
// enrollment_limit; of 60 against max_per_hour 20 exactly 20 register and 40 get 429
// enrollment_limit with Retry-After; the counts stay consistent (devreg check is clean).
func TestEnrollmentLimits(t *testing.T) { pgtest.Each(t, testEnrollmentLimits) }

func testEnrollmentLimits(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	testLimits(t, []*env{e}, e)
}

// TestEnrollmentLimitsTwoServers: the limits hold as exactly across two servers on one
// PostgreSQL database, the connections spread over both.
func TestEnrollmentLimitsTwoServers(t *testing.T) {
	e := newEnvWith(t, &env{db: pgtest.NewDatabase(t), configure: manyPending})
	other := &env{db: e.db, dataDir: e.dataDir, clock: e.clock, account: e.account, key: e.key, typeID: e.typeID, configure: manyPending}
	other.start(t)
	testLimits(t, []*env{e, other}, e)
}

// manyPending lets the 200 parallel connections of one test client in: by default one address
// may have 128 connections sending their headers at once.
func manyPending(c *server.Config) { c.MaxPendingPerAddr = 512 }

// testLimits runs the limits' test against servers, which share e's database.
func testLimits(t *testing.T, servers []*env, e *env) {
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_total", pattern: `^TOT-[0-9]+$`, maxDevices: 50, maxPerHour: 1000, temporary: true})
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprintf("TOT-%d", i)
	}
	statuses, bodies, _ := firstConnections(t, servers, key, ids)
	count := map[int]int{}
	for i, s := range statuses {
		count[s]++
		if s == http.StatusForbidden && (bodies[i]["error"] != "enrollment_limit" || bodies[i]["error_description"] == nil) {
			t.Errorf("beyond max_devices: %v; want enrollment_limit", bodies[i])
		}
	}
	if count[http.StatusOK] != 50 || count[http.StatusForbidden] != 150 {
		t.Fatalf("200 parallel first connections against max_devices 50 were answered %v; want 50 × 200 and 150 × 403", count)
	}
	g, err := db.EnrollmentGroup(ctx, e.account, e.typeID, "eg_total")
	if err != nil || g.EnrolledCount != 50 {
		t.Errorf("enrolled_count = %d, %v; want 50", g.EnrolledCount, err)
	}
	dt, err := e.admin.DeviceType(ctx, e.typeID)
	if err != nil || dt.DeviceCount != 6+50 {
		t.Errorf("the type's device_count = %d, %v; want 56", dt.DeviceCount, err)
	}

	hourKey := e.newGroup(t, db, keys, groupSpec{id: "eg_hour", pattern: `^HR-[0-9]+$`, maxDevices: 1000, maxPerHour: 20, temporary: true})
	ids = make([]string, 60)
	for i := range ids {
		ids[i] = fmt.Sprintf("HR-%d", i)
	}
	statuses, bodies, headers := firstConnections(t, servers, hourKey, ids)
	count = map[int]int{}
	for i, s := range statuses {
		count[s]++
		if s == http.StatusTooManyRequests && (bodies[i]["error"] != "enrollment_limit" || headers[i].Get("Retry-After") != "3600") {
			t.Errorf("beyond max_per_hour: %v, Retry-After %q; want enrollment_limit and 3600 (the clock stands still)", bodies[i], headers[i].Get("Retry-After"))
		}
	}
	if count[http.StatusOK] != 20 || count[http.StatusTooManyRequests] != 40 {
		t.Fatalf("60 parallel first connections against max_per_hour 20 were answered %v; want 20 × 200 and 40 × 429", count)
	}
	// The hour over, the group registers again.
	e.clock.Add(time.Hour + time.Second) // the servers share it
	if status, body, _ := e.tokenFor(t, "HR-100", credential.DeriveSecret(hourKey, "HR-100")); status != http.StatusOK {
		t.Errorf("an hour later = %d %v; want 200", status, body)
	}
	checkClean(t, db)
}

// TestEnrollmentAllowListMillion: an allow-list of a million IDs goes in one request, as a
// registration of a million devices does, and its IDs enrol.
func TestEnrollmentAllowListMillion(t *testing.T) { pgtest.Each(t, testEnrollmentAllowListMillion) }

func testEnrollmentAllowListMillion(t *testing.T, database string) {
	e := newEnv(t, database)
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_m", pattern: `^M-[0-9A-F]{8}$`, maxDevices: 10, maxPerHour: 10, temporary: true})
	const n = 1_000_000
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriter(pw)
		for i := range n {
			fmt.Fprintf(w, "M-%08X\n", i*2) // the odd ones are not listed
		}
		w.Flush()
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", e.url+"/api/v1/devicetypes/"+e.typeID+"/enrollment_groups/eg_m/allowed_ids", pr)
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("Content-Type", "text/csv")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["allowed"] != float64(n) {
		t.Fatalf("an allow-list of a million IDs = %d %v", resp.StatusCode, body)
	}
	t.Logf("a million IDs in %v", time.Since(start))
	for _, c := range []struct {
		id   string
		want int
	}{{"M-00000000", http.StatusOK}, {fmt.Sprintf("M-%08X", 2*(n-1)), http.StatusOK}, {"M-00000001", http.StatusUnauthorized}} {
		if status, body, _ := e.tokenFor(t, c.id, credential.DeriveSecret(key, c.id)); status != c.want {
			t.Errorf("%s = %d %v; want %d", c.id, status, body, c.want)
		}
	}
}

// TestEnrollmentPatternMatchesWholeIDs: a pattern matches whole device IDs only, even one whose
// anchors bind only some branches (^A|B$): an ID that merely contains a match does not enrol.
func TestEnrollmentPatternMatchesWholeIDs(t *testing.T) {
	pgtest.Each(t, testEnrollmentPatternMatchesWholeIDs)
}

func testEnrollmentPatternMatchesWholeIDs(t *testing.T, database string) {
	e := newEnv(t, database)
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_alt", pattern: `^P-1|P-2$`, maxDevices: 10, maxPerHour: 10})
	for _, c := range []struct {
		id   string
		want int
	}{{"P-1", http.StatusOK}, {"P-2", http.StatusOK}, {"P-1-and-more", http.StatusUnauthorized}, {"X-P-2", http.StatusUnauthorized}} {
		if status, body, _ := e.tokenFor(t, c.id, credential.DeriveSecret(key, c.id)); status != c.want {
			t.Errorf("%s = %d %v; want %d", c.id, status, body, c.want)
		}
	}
}

// TestReenrollAfterItsGroupIsDeleted: deleting a group keeps the record of the IDs it enrolled,
// so a deleted device does not come back through a new group with the same pattern; the new
// group's reenroll re-allows it (no other group could). An ID enrolled through a group that
// still exists, of another type, is that group's to re-allow.
func TestReenrollAfterItsGroupIsDeleted(t *testing.T) {
	pgtest.Each(t, testReenrollAfterItsGroupIsDeleted)
}

func testReenrollAfterItsGroupIsDeleted(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	groups := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups"
	oldKey := e.newGroup(t, db, keys, groupSpec{id: "eg_old", pattern: `^R-[0-9]+$`, maxDevices: 10, maxPerHour: 10})
	name := "Other"
	other, err := e.admin.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	otherKey := e.newGroup(t, db, keys, groupSpec{id: "eg_other", typeID: other.ID, pattern: `^Q-[0-9]+$`, maxDevices: 10, maxPerHour: 10})
	for id, key := range map[string][]byte{"R-1": oldKey, "Q-1": otherKey} {
		if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != http.StatusOK {
			t.Fatalf("first connection of %s = %d %v", id, status, body)
		}
		if err := e.admin.DeleteDevice(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if status, body := e.apiCall(t, "DELETE", groups+"/eg_old", "", ""); status != http.StatusNoContent {
		t.Fatalf("delete group = %d %v", status, body)
	}
	status, created := e.apiCall(t, "POST", groups, "application/json", `{"name": "New", "id_pattern": "^[QR]-[0-9]+$", "max_devices": 10}`)
	if status != http.StatusCreated {
		t.Fatalf("create group = %d %v", status, created)
	}
	newKey, err := credential.ParseGroupKey(created["group_key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	newID := created["id"].(string)
	if status, _, _ := e.tokenFor(t, "R-1", credential.DeriveSecret(newKey, "R-1")); status != http.StatusUnauthorized {
		t.Errorf("a deleted device of a deleted group through a new group = %d; want 401 (it enrolled once)", status)
	}
	status, body := e.apiCall(t, "POST", groups+"/"+newID+"/reenroll", "application/json", `{"device_ids": ["R-1", "Q-1"]}`)
	if status != http.StatusOK || body["reenrolled"] != 1.0 {
		t.Fatalf("reenroll = %d %v; want 200 {\"reenrolled\": 1}: R-1 (its group is gone), not Q-1 (another type's group has it)", status, body)
	}
	if status, body, _ := e.tokenFor(t, "R-1", credential.DeriveSecret(newKey, "R-1")); status != http.StatusOK {
		t.Errorf("R-1 re-allowed, through the new group = %d %v; want 200", status, body)
	}
}
