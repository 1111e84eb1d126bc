package deviceauth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
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
)

// The outside review of issue 24's first-connection path: each test is an attack that failed (or
// one that found a hole, fixed since).

// TestAttack24WrongSecretNeverEnrollmentLimit: the enrollment_limit answers (403 beyond
// max_devices, 429 beyond max_per_hour) tell whoever gets them that the ID matches a full group;
// only the right secret may get them. A wrong secret, an ID off the allow-list or one that
// enrolled before is 401 invalid_client whatever the group's limits.
func TestAttack24WrongSecretNeverEnrollmentLimit(t *testing.T) {
	pgtest.Each(t, testAttack24WrongSecretNeverEnrollmentLimit)
}

func testAttack24WrongSecretNeverEnrollmentLimit(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	total := e.newGroup(t, db, keys, groupSpec{id: "eg_total", pattern: `^TOT-[0-9]+$`, maxDevices: 1, maxPerHour: 100, temporary: true})
	hour := e.newGroup(t, db, keys, groupSpec{id: "eg_hour", pattern: `^HR-[0-9]+$`, maxDevices: 100, maxPerHour: 1, temporary: true})
	list := e.newGroup(t, db, keys, groupSpec{id: "eg_list", pattern: `^L-[0-9]+$`, maxDevices: 1, maxPerHour: 100, temporary: true})
	for id, key := range map[string][]byte{"TOT-1": total, "HR-1": hour, "L-1": list} {
		if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != http.StatusOK {
			t.Fatalf("first connection of %s = %d %v", id, status, body)
		}
	}
	if status, body := e.apiCall(t, "PUT", "/api/v1/devicetypes/"+e.typeID+"/enrollment_groups/eg_list/allowed_ids", "text/csv", "L-1\nL-2\n"); status != http.StatusOK {
		t.Fatalf("allow-list = %d %v", status, body)
	}
	if err := e.admin.DeleteDevice(ctx, "TOT-1"); err != nil {
		t.Fatal(err)
	}
	// The right secret beyond the limits: the contract's answers.
	if status, body, _ := e.tokenFor(t, "TOT-2", credential.DeriveSecret(total, "TOT-2")); status != http.StatusForbidden || body["error"] != "enrollment_limit" {
		t.Fatalf("right secret, group full = %d %v; want 403 enrollment_limit", status, body)
	}
	if status, body, h := e.tokenFor(t, "HR-2", credential.DeriveSecret(hour, "HR-2")); status != http.StatusTooManyRequests || body["error"] != "enrollment_limit" || h.Get("Retry-After") == "" {
		t.Fatalf("right secret, hour full = %d %v; want 429 enrollment_limit with Retry-After", status, body)
	}
	other := []byte("0123456789abcdef0123456789abcdef")
	for _, c := range []struct{ why, id, secret string }{
		{"wrong secret, group full", "TOT-3", credential.DeriveSecret(other, "TOT-3")},
		{"wrong secret, hour full", "HR-3", credential.DeriveSecret(other, "HR-3")},
		{"garbage secret, group full", "TOT-4", "x"},
		{"empty secret, hour full", "HR-4", ""},
		{"another ID's secret, group full", "TOT-5", credential.DeriveSecret(total, "TOT-6")},
		{"right secret, enrolled before, group full", "TOT-1", credential.DeriveSecret(total, "TOT-1")},
		{"right secret, off the allow-list, group full", "L-3", credential.DeriveSecret(list, "L-3")},
		{"wrong secret, on the allow-list, group full", "L-2", credential.DeriveSecret(other, "L-2")},
	} {
		status, body, h := e.tokenFor(t, c.id, c.secret)
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || h.Get("Retry-After") != "" {
			t.Errorf("%s = %d %v (Retry-After %q); want 401 invalid_client, which tells nothing of the group", c.why, status, body, h.Get("Retry-After"))
		}
	}
}

// TestAttack24SameIDInParallel: one new device ID connecting 50 times at once, spread over two
// servers (so that neither server's turns serialize them): every connection gets in, and the
// device is registered once: one device, one enrollments row, enrolled_count 1, the type's and
// batch's counts 1, one device.enroll audit entry.
func TestAttack24SameIDInParallel(t *testing.T) { pgtest.Each(t, testAttack24SameIDInParallel) }

func testAttack24SameIDInParallel(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	other := &env{db: e.db, dataDir: e.dataDir, clock: e.clock, account: e.account, key: e.key, typeID: e.typeID, configure: manyPending}
	other.start(t)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_same", pattern: `^S-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = "S-1"
	}
	statuses, bodies, _ := firstConnections(t, []*env{e, other}, key, ids)
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("connection %d = %d %v; want 200", i, s, bodies[i])
		}
	}
	g, err := db.EnrollmentGroup(ctx, e.account, e.typeID, "eg_same")
	if err != nil || g.EnrolledCount != 1 {
		t.Errorf("enrolled_count = %d, %v; want 1", g.EnrolledCount, err)
	}
	dev, err := e.admin.Device(ctx, "S-1")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := e.admin.Batch(ctx, dev.BatchID); err != nil || b.DeviceCount != 1 {
		t.Errorf("the batch's device_count = %d, %v; want 1", b.DeviceCount, err)
	}
	if dt, err := e.admin.DeviceType(ctx, e.typeID); err != nil || dt.DeviceCount != 6+1 {
		t.Errorf("the type's device_count = %d, %v; want 7", dt.DeviceCount, err)
	}
	if entries := e.auditEntries(t, "device.enroll"); len(entries) != 1 {
		t.Errorf("%d device.enroll audit entries; want 1", len(entries))
	}
	checkClean(t, db)
}

// TestAttack24ThrottledIDUsesNoLimit: an ID throttled by wrong secrets is refused before its
// group is asked: the right secret then neither registers it nor uses up max_per_hour or
// max_devices, and the group's failures count the wrong secrets only.
func TestAttack24ThrottledIDUsesNoLimit(t *testing.T) {
	pgtest.Each(t, testAttack24ThrottledIDUsesNoLimit)
}

func testAttack24ThrottledIDUsesNoLimit(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_thr", pattern: `^TH-[0-9]+$`, maxDevices: 2, maxPerHour: 1, temporary: true})
	for range registry.DeviceMaxFailures {
		if status, _, _ := e.tokenFor(t, "TH-1", "wrong"); status != http.StatusUnauthorized {
			t.Fatalf("wrong secret = %d; want 401", status)
		}
	}
	for range 5 {
		if status, body, _ := e.tokenFor(t, "TH-1", credential.DeriveSecret(key, "TH-1")); status != http.StatusTooManyRequests || body["error"] != "invalid_client" {
			t.Fatalf("right secret of a throttled ID = %d %v; want 429 invalid_client", status, body)
		}
	}
	if g, err := db.EnrollmentGroup(ctx, e.account, e.typeID, "eg_thr"); err != nil || g.EnrolledCount != 0 {
		t.Errorf("enrolled_count = %d, %v; want 0", g.EnrolledCount, err)
	}
	if n, err := e.srv.Service.EnrollmentFailures(e.adminContext(), e.account, "eg_thr"); err != nil || n != registry.DeviceMaxFailures {
		t.Errorf("the group's failures = %d, %v; want %d (the throttled attempts are not the group's)", n, err, registry.DeviceMaxFailures)
	}
	if status, body, _ := e.tokenFor(t, "TH-2", credential.DeriveSecret(key, "TH-2")); status != http.StatusOK {
		t.Errorf("another ID within max_per_hour 1 = %d %v; want 200 (the throttled one used none of it)", status, body)
	}
	e.clock.Add(registry.DeviceFailureWindow + time.Hour)
	if status, body, _ := e.tokenFor(t, "TH-1", credential.DeriveSecret(key, "TH-1")); status != http.StatusOK {
		t.Errorf("the throttled ID once its window passed = %d %v; want 200", status, body)
	}
}

// TestAttack24LeakedKeyAfterRotation: a leaked group key against devices that enrolled and
// rotated to secrets of their own: after the grace the derived secret neither logs in nor
// rotates, at the token endpoint or the broker; a device deleted since does not come back
// through the group; a disabled enrolled device stays out; a device of another type whose ID
// the pattern matches is never touched.
func TestAttack24LeakedKeyAfterRotation(t *testing.T) {
	pgtest.Each(t, testAttack24LeakedKeyAfterRotation)
}

func testAttack24LeakedKeyAfterRotation(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_leak", pattern: `^(?:LK-[0-9]+|device[0-9])$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	derived := func(id string) string { return credential.DeriveSecret(key, id) }
	own := map[string]string{}
	for _, id := range []string{"LK-1", "LK-2", "LK-3"} {
		status, body, _ := e.rotate(t, id, derived(id), "")
		if status != http.StatusCreated {
			t.Fatalf("rotation as first connection of %s = %d %v", id, status, body)
		}
		own[id] = body["secret"].(string)
		if status, _, _ := e.tokenFor(t, id, own[id]); status != http.StatusOK {
			t.Fatalf("%s with its own secret = %d", id, status)
		}
	}
	// Within the grace, after the device used its own secret: a rotation with the derived one is refused.
	e.clock.Add(time.Second)
	if status, body, _ := e.rotate(t, "LK-1", derived("LK-1"), ""); status != http.StatusUnauthorized {
		t.Errorf("rotation with the derived secret after the device used its own = %d %v; want 401", status, body)
	}
	if _, err := e.admin.SetDeviceStatus(ctx, "LK-2", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.DeleteDevice(ctx, "LK-3"); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(devreg.DefaultRotationGraceSeconds*time.Second + time.Second)
	for _, c := range []struct{ why, id string }{
		{"rotated device after the grace", "LK-1"},
		{"disabled enrolled device", "LK-2"},
		{"deleted enrolled device", "LK-3"},
		{"registered device the pattern matches", "device1"},
	} {
		if status, body, _ := e.tokenFor(t, c.id, derived(c.id)); status != http.StatusUnauthorized {
			t.Errorf("token, %s, derived secret = %d %v; want 401", c.why, status, body)
		}
		if status, body, _ := e.rotate(t, c.id, derived(c.id), ""); status != http.StatusUnauthorized {
			t.Errorf("rotation, %s, derived secret = %d %v; want 401", c.why, status, body)
		}
	}
	if _, err := e.admin.Device(ctx, "LK-3"); !isNotFound(err) {
		t.Errorf("the deleted device came back: %v", err)
	}
	if d, err := e.admin.Device(ctx, "device1"); err != nil || d.BatchID == "" || d.Status != devreg.StatusEnabled {
		t.Errorf("device1: %+v, %v", d, err)
	}
	if d, _ := e.admin.Device(ctx, "LK-2"); d.Status != devreg.StatusDisabled {
		t.Errorf("the disabled device: %+v; want it still disabled", d)
	}
	if status, _, _ := e.tokenFor(t, "LK-1", own["LK-1"]); status != http.StatusOK {
		t.Errorf("LK-1's own secret = %d; want 200", status)
	}
	if status, _, _ := e.tokenFor(t, "device1", "secretfordevice1"); status != http.StatusOK {
		t.Errorf("device1's own secret = %d; want 200", status)
	}
	if g, err := db.EnrollmentGroup(ctx, e.account, e.typeID, "eg_leak"); err != nil || g.EnrolledCount != 3 {
		t.Errorf("enrolled_count = %d, %v; want 3", g.EnrolledCount, err)
	}
	checkClean(t, db)
}

// parallel runs fn n times at once.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() { <-start; fn(i) })
	}
	close(start)
	wg.Wait()
}

// syncBuffer is a log sink the server's goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestAttack24NoSecretInLogsAuditOrErrors: a server logging at DEBUG through the whole
// first-connection path (groups made through the API, enrolment, wrong secrets, limits, an
// allow-list, reenroll, key rotation, rotation by the device): neither a group key nor a derived
// secret, in any of their encodings, appears in its log, its audit log or any answer but the
// one that creates it.
func TestAttack24NoSecretInLogsAuditOrErrors(t *testing.T) {
	pgtest.Each(t, testAttack24NoSecretInLogsAuditOrErrors)
}

func testAttack24NoSecretInLogsAuditOrErrors(t *testing.T, database string) {
	logs := &syncBuffer{}
	e := newEnvWith(t, &env{db: database, configure: func(c *server.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	groups := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups"
	var answers strings.Builder
	call := func(method, path, ctype, body string) map[string]any {
		status, out := e.apiCall(t, method, path, ctype, body)
		fmt.Fprintf(&answers, "%s %s = %d %v\n", method, path, status, out)
		return out
	}
	created := call("POST", groups, "application/json", `{"name": "Line", "id_pattern": "^SEC-[0-9]+$", "max_devices": 3, "max_per_hour": 2}`)
	gid, _ := created["id"].(string)
	groupKey, _ := created["group_key"].(string)
	raw, err := credential.ParseGroupKey(groupKey)
	if err != nil {
		t.Fatalf("create group: %v (%v)", created, err)
	}
	answers.Reset() // the creation's answer is the one place the key may be
	var secrets []string
	login := func(id, secret string) {
		status, body, _ := e.tokenFor(t, id, secret)
		fmt.Fprintf(&answers, "token %s = %d %v\n", id, status, body)
	}
	for _, id := range []string{"SEC-1", "SEC-2", "SEC-3", "SEC-4"} { // the third is beyond max_per_hour
		secrets = append(secrets, credential.DeriveSecret(raw, id))
		login(id, credential.DeriveSecret(raw, id))
		login(id, credential.DeriveSecret(raw, id)+"x")
	}
	status, body, _ := e.rotate(t, "SEC-1", credential.DeriveSecret(raw, "SEC-1"), "")
	fmt.Fprintf(&answers, "rotate = %d %v\n", status, body)
	call("PUT", groups+"/"+gid+"/allowed_ids", "text/csv", "SEC-1\nSEC-9\n")
	login("SEC-8", credential.DeriveSecret(raw, "SEC-8"))
	if err := e.admin.DeleteDevice(context.Background(), "SEC-2"); err != nil {
		t.Fatal(err)
	}
	login("SEC-2", credential.DeriveSecret(raw, "SEC-2"))
	call("POST", groups+"/"+gid+"/reenroll", "application/json", `{"device_ids": ["SEC-2"]}`)
	_, rotated := e.apiCall(t, "POST", groups+"/"+gid+"/keys", "application/json", `{"old_keys_not_after": "2000-01-01T00:00:00Z"}`)
	newKey, _ := rotated["group_key"].(string) // shown once: this answer is the one place it may be
	if newKey == "" {
		t.Fatalf("key rotation: %v", rotated)
	}
	delete(rotated, "group_key")
	fmt.Fprintf(&answers, "rotate key = %v\n", rotated)
	login("SEC-9", credential.DeriveSecret(raw, "SEC-9")) // the ended key
	call("PATCH", groups+"/"+gid, "application/json", `{"status": "disabled"}`)
	call("GET", groups+"/"+gid, "", "")
	call("GET", groups, "", "")
	call("DELETE", groups+"/"+gid, "", "")
	req, _ := http.NewRequest("GET", e.url+"/api/v1/audit?limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	audit, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(audit, []byte("device.enroll")) {
		t.Fatalf("the audit log holds no enrolment: %s", audit)
	}
	var needles []string
	for _, k := range []string{groupKey, newKey} {
		b, _ := base64.StdEncoding.DecodeString(k)
		needles = append(needles, k, url.QueryEscape(k), base64.RawURLEncoding.EncodeToString(b), hex.EncodeToString(b), strings.TrimRight(k, "="))
	}
	for _, s := range secrets {
		needles = append(needles, s, url.QueryEscape(s), strings.TrimRight(s, "="))
	}
	for where, text := range map[string]string{"the log": logs.String(), "the audit log": string(audit), "the answers": answers.String()} {
		for _, n := range needles {
			if n != "" && strings.Contains(text, n) {
				t.Errorf("%s holds a secret or group key (%.8s…)", where, n)
			}
		}
	}
	if !strings.Contains(logs.String(), "enrollment refused") {
		t.Errorf("the log holds no refused enrolment: the test logged nothing to search")
	}
}

// TestAttack24RacesWithAdministration: first connections racing the administrator. Once a
// group's disabling, its key's ending or a device's deletion has been answered, no first
// connection gets in through it; first connections racing registrations and deletions of the
// same IDs, and reenroll, leave every count consistent (devreg check clean), and the group's
// enrolled_count equals the devices it registered.
func TestAttack24RacesWithAdministration(t *testing.T) {
	pgtest.Each(t, testAttack24RacesWithAdministration)
}

func testAttack24RacesWithAdministration(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	other := &env{db: e.db, dataDir: e.dataDir, clock: e.clock, account: e.account, key: e.key, typeID: e.typeID, configure: manyPending}
	other.start(t)
	servers := []*env{e, other}
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	groups := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups"
	enrolled := 0
	count := func(statuses []int) {
		for _, s := range statuses {
			if s == http.StatusOK {
				enrolled++
			}
		}
	}

	// Disabling, while 80 first connections run.
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_race", pattern: `^RC-[0-9]+$`, maxDevices: 10000, maxPerHour: 10000, temporary: true})
	ids := make([]string, 80)
	for i := range ids {
		ids[i] = fmt.Sprintf("RC-%d", i)
	}
	var statuses []int
	parallel(2, func(i int) {
		if i == 0 {
			statuses, _, _ = firstConnections(t, servers, key, ids)
			return
		}
		time.Sleep(20 * time.Millisecond)
		if status, body := e.apiCall(t, "PATCH", groups+"/eg_race", "application/json", `{"status": "disabled"}`); status != http.StatusOK {
			t.Errorf("disable = %d %v", status, body)
		}
	})
	count(statuses)
	for i, s := range statuses {
		if s != http.StatusOK && s != http.StatusUnauthorized {
			t.Errorf("%s racing the disabling = %d; want 200 or 401", ids[i], s)
		}
	}
	later := make([]string, 20)
	for i := range later {
		later[i] = fmt.Sprintf("RC-%d", 1000+i)
	}
	statuses, _, _ = firstConnections(t, servers, key, later)
	for i, s := range statuses {
		if s != http.StatusUnauthorized {
			t.Errorf("%s after the group was disabled = %d; want 401", later[i], s)
		}
	}
	if status, body := e.apiCall(t, "PATCH", groups+"/eg_race", "application/json", `{"status": "enabled"}`); status != http.StatusOK {
		t.Fatalf("enable = %d %v", status, body)
	}

	// The key's end, while 60 first connections with it run.
	ids = ids[:0]
	for i := range 60 {
		ids = append(ids, fmt.Sprintf("RC-%d", 2000+i))
	}
	past := e.clock.Now().Add(-time.Second).Format(time.RFC3339)
	var newKey []byte
	parallel(2, func(i int) {
		if i == 0 {
			statuses, _, _ = firstConnections(t, servers, key, ids)
			return
		}
		time.Sleep(20 * time.Millisecond)
		status, body := e.apiCall(t, "POST", groups+"/eg_race/keys", "application/json", `{"old_keys_not_after": "`+past+`"}`)
		if status != http.StatusCreated {
			t.Errorf("key rotation = %d %v", status, body)
			return
		}
		newKey, _ = credential.ParseGroupKey(body["group_key"].(string))
	})
	count(statuses)
	later = later[:0]
	for i := range 20 {
		later = append(later, fmt.Sprintf("RC-%d", 3000+i))
	}
	statuses, _, _ = firstConnections(t, servers, key, later)
	for i, s := range statuses {
		if s != http.StatusUnauthorized {
			t.Errorf("%s with a key ended = %d; want 401", later[i], s)
		}
	}
	statuses, _, _ = firstConnections(t, servers, newKey, later)
	count(statuses)
	for i, s := range statuses {
		if s != http.StatusOK {
			t.Errorf("%s with the new key = %d; want 200", later[i], s)
		}
	}

	// Registrations and first connections of the same IDs at once: one device each, whichever
	// comes first; the first connection with the derived secret gets in only if it registered
	// the device.
	for i := range 30 {
		id := fmt.Sprintf("RC-%d", 4000+i)
		var regErr error
		var status int
		parallel(2, func(j int) {
			if j == 0 {
				_, regErr = e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(id+", registered-secret-"+id), client.RegisterOptions{})
				return
			}
			status, _, _ = servers[i%2].tokenFor(t, id, credential.DeriveSecret(newKey, id))
		})
		if _, err := e.admin.Device(ctx, id); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		switch {
		case regErr == nil && status == http.StatusOK:
			t.Errorf("%s: both the registration and the first connection succeeded", id)
		case regErr != nil && status != http.StatusOK:
			t.Errorf("%s: neither succeeded: %v, %d", id, regErr, status)
		}
		if status == http.StatusOK {
			enrolled++
		}
	}

	// Deleting an enrolled device while it connects again and again: once deleted, it stays so.
	for i := range 10 {
		id := fmt.Sprintf("RC-%d", 3000+i)
		parallel(6, func(j int) {
			if j == 0 {
				if err := e.admin.DeleteDevice(ctx, id); err != nil {
					t.Errorf("delete %s: %v", id, err)
				}
				return
			}
			servers[j%2].tokenFor(t, id, credential.DeriveSecret(newKey, id))
		})
		if status, _, _ := e.tokenFor(t, id, credential.DeriveSecret(newKey, id)); status != http.StatusUnauthorized {
			t.Errorf("%s after its deletion = %d; want 401 (it enrolled once)", id, status)
		}
		if _, err := e.admin.Device(ctx, id); !isNotFound(err) {
			t.Errorf("%s came back after its deletion: %v", id, err)
		}
	}

	// Reenroll racing the first connection it allows.
	for i := range 10 {
		id := fmt.Sprintf("RC-%d", 3000+i)
		var status int
		parallel(2, func(j int) {
			if j == 0 {
				if s, body := e.apiCall(t, "POST", groups+"/eg_race/reenroll", "application/json", `{"device_ids": ["`+id+`"]}`); s != http.StatusOK {
					t.Errorf("reenroll = %d %v", s, body)
				}
				return
			}
			status, _, _ = servers[i%2].tokenFor(t, id, credential.DeriveSecret(newKey, id))
		})
		if status == http.StatusOK {
			enrolled++
		} else if status, _, _ = e.tokenFor(t, id, credential.DeriveSecret(newKey, id)); status != http.StatusOK {
			t.Errorf("%s after reenroll = %d; want 200", id, status)
		} else {
			enrolled++
		}
	}

	g, err := db.EnrollmentGroup(ctx, e.account, e.typeID, "eg_race")
	if err != nil || g.EnrolledCount != int64(enrolled) {
		t.Errorf("enrolled_count = %d, %v; want %d, the first connections answered 200", g.EnrolledCount, err, enrolled)
	}
	if entries := e.auditEntries(t, "device.enroll"); len(entries) != enrolled {
		t.Errorf("%d device.enroll audit entries; want %d", len(entries), enrolled)
	}
	checkClean(t, db)
}

// TestAttack24SlowAllowListHoldsNothing: an allow-list trickled in slowly holds no transaction
// or lock while it arrives: first connections through the same group, registrations and another
// group's allow-list go on meanwhile, and the old list decides until the new one has arrived
// whole; a body cut off midway changes nothing.
func TestAttack24SlowAllowListHoldsNothing(t *testing.T) {
	pgtest.Each(t, testAttack24SlowAllowListHoldsNothing)
}

func testAttack24SlowAllowListHoldsNothing(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_slow", pattern: `^SL-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	e.newGroup(t, db, keys, groupSpec{id: "eg_other", pattern: `^OT-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	path := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups/"
	if status, body := e.apiCall(t, "PUT", path+"eg_slow/allowed_ids", "text/csv", "SL-1\nSL-2\nSL-3\n"); status != http.StatusOK {
		t.Fatalf("allow-list = %d %v", status, body)
	}
	for _, cut := range []bool{true, false} {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("PUT", e.url+path+"eg_slow/allowed_ids", pr)
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("Content-Type", "text/csv")
		done := make(chan int, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		fmt.Fprint(pw, "SL-2\nSL-4\nSL-")
		time.Sleep(100 * time.Millisecond)
		deadline := time.Now().Add(5 * time.Second)
		id := "SL-1"
		if !cut {
			id = "SL-3"
		}
		if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != http.StatusOK {
			t.Errorf("an ID of the old list while the new one trickles in = %d %v; want 200", status, body)
		}
		if status, _, _ := e.tokenFor(t, "SL-4", credential.DeriveSecret(key, "SL-4")); status != http.StatusUnauthorized {
			t.Errorf("an ID of the list still arriving = %d; want 401", status)
		}
		if _, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(fmt.Sprintf("reg-%v, secret-of-a-registered-device", cut)), client.RegisterOptions{}); err != nil {
			t.Errorf("a registration while an allow-list trickles in: %v", err)
		}
		if status, body := e.apiCall(t, "PUT", path+"eg_other/allowed_ids", "text/csv", "OT-1\n"); status != http.StatusOK {
			t.Errorf("another group's allow-list meanwhile = %d %v", status, body)
		}
		if time.Now().After(deadline) {
			t.Errorf("the work beside a trickling allow-list took over 5 s: something waited for it")
		}
		if cut {
			pw.CloseWithError(io.ErrUnexpectedEOF)
			<-done
			continue
		}
		fmt.Fprint(pw, "5\n")
		pw.Close()
		if status := <-done; status != http.StatusOK {
			t.Fatalf("the trickled allow-list = %d", status)
		}
	}
	for id, want := range map[string]int{"SL-2": http.StatusOK, "SL-5": http.StatusOK, "SL-6": http.StatusUnauthorized} {
		if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != want {
			t.Errorf("%s after the new list = %d %v; want %d", id, status, body, want)
		}
	}
	checkClean(t, db)
}

// TestAttack24ClientEncodesDerivedSecret: derived secrets hold +, / and =; the Go client (what
// devreg device connect --rotate uses) form-urlencodes them in HTTP Basic, so a rotation as the
// first connection enrols the device; the same secret sent raw, as some DPS firmware would, is a
// wrong secret (a + is a space in form encoding) and enrols nothing.
func TestAttack24ClientEncodesDerivedSecret(t *testing.T) {
	pgtest.Each(t, testAttack24ClientEncodesDerivedSecret)
}

func testAttack24ClientEncodesDerivedSecret(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_enc", pattern: `^EN-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	id := ""
	for i := range 1000 {
		candidate := fmt.Sprintf("EN-%d", i)
		if s := credential.DeriveSecret(key, candidate); strings.Contains(s, "+") && strings.Contains(s, "/") {
			id = candidate
			break
		}
	}
	if id == "" {
		t.Fatal("no ID of 1000 derives a secret with both + and /")
	}
	secret := credential.DeriveSecret(key, id)
	req, _ := http.NewRequest("POST", e.url+"/device/v1/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "account_id": {e.account}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret) // raw
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the derived secret sent raw in Basic = %d; want 401", resp.StatusCode)
	}
	if _, err := e.admin.Device(ctx, id); !isNotFound(err) {
		t.Fatalf("a raw secret enrolled the device: %v", err)
	}
	rot, err := client.RotateCredential(ctx, http.DefaultClient, e.url, e.account, id, secret)
	if err != nil || rot.Secret == "" {
		t.Fatalf("rotation as the first connection through the client: %+v, %v", rot, err)
	}
	if _, err := client.DeviceToken(ctx, http.DefaultClient, e.url, e.account, id, rot.Secret, ""); err != nil {
		t.Errorf("a token with the rotated secret: %v", err)
	}
	if _, err := client.DeviceToken(ctx, http.DefaultClient, e.url, e.account, id, secret, ""); err != nil {
		t.Errorf("a token with the derived secret within the grace: %v", err)
	}
}

// TestAttack24DeletedRegisteredDeviceStaysOut: a device registered by upload (its ID matches a
// group's pattern) that an administrator deleted, say because it was stolen, does not come back
// through the group at the next connection of whoever holds the group key (issue 24: "a device
// that was deleted does not come back through the group unless an admin re-allows it").
func TestAttack24DeletedRegisteredDeviceStaysOut(t *testing.T) {
	pgtest.Each(t, testAttack24DeletedRegisteredDeviceStaysOut)
}

func testAttack24DeletedRegisteredDeviceStaysOut(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_del", pattern: `^device[0-9]$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	if err := e.admin.DeleteDevice(ctx, "device3"); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := e.tokenFor(t, "device3", credential.DeriveSecret(key, "device3")); status != http.StatusUnauthorized {
		t.Errorf("a deleted registered device through the group = %d %v; want 401", status, body)
	}
	if _, err := e.admin.Device(ctx, "device3"); !isNotFound(err) {
		t.Errorf("the deleted device came back through the group: %v", err)
	}
	// An administrator who wants it back through the group re-allows it.
	path := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups/eg_del/reenroll"
	if status, body := e.apiCall(t, "POST", path, "application/json", `{"device_ids": ["device3", "device4"]}`); status != http.StatusOK || body["reenrolled"] != 1.0 {
		t.Fatalf("reenroll = %d %v; want 200 {\"reenrolled\": 1} (device4 was never deleted)", status, body)
	}
	if status, body, _ := e.tokenFor(t, "device3", credential.DeriveSecret(key, "device3")); status != http.StatusOK {
		t.Errorf("the re-allowed device through the group = %d %v; want 200", status, body)
	}
	checkClean(t, db)
}

// TestAttack24GroupDeletedMidFlood: a group deleted while 80 first connections through it run
// (over two servers): each is answered 200 or 401, never an error; none gets in once the
// deletion was answered; the devices it registered stay, counted, and the record of their
// enrolment stays (devreg check clean).
func TestAttack24GroupDeletedMidFlood(t *testing.T) {
	pgtest.Each(t, testAttack24GroupDeletedMidFlood)
}

func testAttack24GroupDeletedMidFlood(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	other := &env{db: e.db, dataDir: e.dataDir, clock: e.clock, account: e.account, key: e.key, typeID: e.typeID, configure: manyPending}
	other.start(t)
	servers := []*env{e, other}
	ctx := context.Background()
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_gone", pattern: `^GN-[0-9]+$`, maxDevices: 10000, maxPerHour: 10000, temporary: true})
	ids := make([]string, 80)
	for i := range ids {
		ids[i] = fmt.Sprintf("GN-%d", i)
	}
	var statuses []int
	parallel(2, func(i int) {
		if i == 0 {
			statuses, _, _ = firstConnections(t, servers, key, ids)
			return
		}
		time.Sleep(20 * time.Millisecond)
		if status, body := e.apiCall(t, "DELETE", "/api/v1/devicetypes/"+e.typeID+"/enrollment_groups/eg_gone", "", ""); status != http.StatusNoContent {
			t.Errorf("delete = %d %v", status, body)
		}
	})
	enrolled := 0
	for i, s := range statuses {
		switch s {
		case http.StatusOK:
			enrolled++
			if _, err := e.admin.Device(ctx, ids[i]); err != nil {
				t.Errorf("%s answered 200 but is not registered: %v", ids[i], err)
			}
		case http.StatusUnauthorized:
			if _, err := e.admin.Device(ctx, ids[i]); !isNotFound(err) {
				t.Errorf("%s answered 401 but is registered: %v", ids[i], err)
			}
		default:
			t.Errorf("%s racing the group's deletion = %d; want 200 or 401", ids[i], s)
		}
	}
	statuses, _, _ = firstConnections(t, servers, key, []string{"GN-1000", "GN-1001"})
	for _, s := range statuses {
		if s != http.StatusUnauthorized {
			t.Errorf("after the group's deletion = %d; want 401", s)
		}
	}
	if entries := e.auditEntries(t, "device.enroll"); len(entries) != enrolled {
		t.Errorf("%d device.enroll audit entries; want %d", len(entries), enrolled)
	}
	if dt, err := e.admin.DeviceType(ctx, e.typeID); err != nil || dt.DeviceCount != int64(6+enrolled) {
		t.Errorf("the type's device_count = %d, %v; want %d", dt.DeviceCount, err, 6+enrolled)
	}
	checkClean(t, db)
}

// TestAttack24AllowListAbuse: odd allow-list bodies get clear answers and change nothing: a
// 64 MiB field without a separator, IDs off the pattern among many good ones (each reported, the
// list left as it was), a million repeats of one ID (one ID listed), and a wrong media type with a
// large body (refused without reading it).
func TestAttack24AllowListAbuse(t *testing.T) { pgtest.Each(t, testAttack24AllowListAbuse) }

func testAttack24AllowListAbuse(t *testing.T, database string) {
	e := newEnv(t, database)
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_ab", pattern: `^AB-[0-9]+$`, maxDevices: 100, maxPerHour: 100, temporary: true})
	path := "/api/v1/devicetypes/" + e.typeID + "/enrollment_groups/eg_ab/allowed_ids"
	if status, body := e.apiCall(t, "PUT", path, "text/csv", "AB-1\n"); status != http.StatusOK || body["allowed"] != 1.0 {
		t.Fatalf("allow-list = %d %v", status, body)
	}
	put := func(ctype string, body io.Reader) (int, map[string]any) {
		req, _ := http.NewRequest("PUT", e.url+path, body)
		req.Header.Set("Authorization", "Bearer "+e.key)
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	huge := io.MultiReader(strings.NewReader("AB-2\n"), io.LimitReader(repeatReader('7'), 64<<20), strings.NewReader("\nAB-3\n"))
	if status, body := put("text/csv", huge); status != http.StatusUnprocessableEntity {
		t.Errorf("a 64 MiB field = %d %.300v; want 422", status, body)
	} else if p, _ := body["problems"].([]any); len(p) != 1 || len(fmt.Sprint(p)) > 4096 {
		t.Errorf("a 64 MiB field's problems: %.300v; want one, short", p)
	}
	var b strings.Builder
	for i := range 5000 {
		if i%1000 == 7 {
			fmt.Fprintf(&b, "XX-%d\n", i)
			continue
		}
		fmt.Fprintf(&b, "AB-%d\n", i)
	}
	if status, body := put("text/csv", strings.NewReader(b.String())); status != http.StatusUnprocessableEntity || body["problem_count"] != 5.0 {
		t.Errorf("five IDs off the pattern among 5000 = %d %.300v; want 422 naming five", status, body)
	}
	if status, body := put("text/csv", io.MultiReader(io.LimitReader(&cycleReader{s: "AB-9\n"}, 5_000_000), strings.NewReader("AB-1\n"))); status != http.StatusOK || body["allowed"] != 2.0 {
		t.Errorf("a million repeats of one ID = %d %.300v; want 200 {\"allowed\": 2}", status, body)
	}
	start := time.Now()
	if status, body := put("application/octet-stream", io.LimitReader(repeatReader('x'), 1<<30)); status != http.StatusUnsupportedMediaType {
		t.Errorf("a wrong media type = %d %.300v; want 415", status, body)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a wrong media type took %v: the body was read", d)
	}
	for id, want := range map[string]int{"AB-9": http.StatusOK, "AB-2": http.StatusUnauthorized, "AB-1": http.StatusOK} {
		if status, body, _ := e.tokenFor(t, id, credential.DeriveSecret(key, id)); status != want {
			t.Errorf("%s = %d %v; want %d", id, status, body, want)
		}
	}
}

// repeatReader yields c forever.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// cycleReader yields s again and again.
type cycleReader struct {
	s   string
	off int
}

func (r *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.s[r.off:])
		n += c
		r.off = (r.off + c) % len(r.s)
	}
	return n, nil
}
