package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/server"
)

// TestAttack24OverlapSearchHoldsNoLock: comparing a new pattern with the type's other groups
// may take tens of milliseconds per group (enrollpattern.Overlap searches up to 262,144 states),
// and it ran under the type's row lock, which on SQLite is the write lock of the whole server.
// An administrator with a dozen groups of patterns like ^(?:[0-9]?){170}a$ (each taken, none
// overlapping) made every create or PATCH of a pattern hold the lock for several hundred
// milliseconds (seconds under -race): every other account's writes waited that long, on
// PostgreSQL every write of the type. Fixed: the comparisons run before the lock, and under it
// only patterns that appeared meanwhile are compared. A write of another account, and a change
// to the same type, sent while a heavy create is comparing, must now finish first.
func TestAttack24OverlapSearchHoldsNoLock(t *testing.T) {
	pgtest.Each(t, testAttack24OverlapSearchHoldsNoLock)
}

func testAttack24OverlapSearchHoldsNoLock(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	heavy := func(c rune) string { return fmt.Sprintf(`^(?:[0-9]?){170}%c$`, c) }
	const groups = 12
	for i := range groups {
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Heavy %d", "id_pattern": %q, "max_devices": 5}`, i, heavy(rune('a'+i))), 201, nil)
	}
	for _, tc := range []struct {
		name  string
		light req
	}{
		{"other-account", req{key: e.other, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "Elsewhere"}`}},
		{"same-type", req{key: e.admin, method: "PATCH", path: "/api/v1/devicetypes/" + dt.ID, body: `{"description": "renamed meanwhile"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var heavyDone, lightDone time.Time
			var heavyStatus int
			var heavyBody []byte
			var wg sync.WaitGroup
			wg.Go(func() {
				// Overlaps none of the others, so it is compared with every one of them.
				heavyStatus, heavyBody = e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID),
					body: fmt.Sprintf(`{"name": "Heavy %s", "id_pattern": %q, "max_devices": 5}`, tc.name, heavy(rune('A'+len(tc.name)%26)))})
				heavyDone = time.Now()
			})
			time.Sleep(60 * time.Millisecond)
			start := time.Now()
			status, b := e.send(t, tc.light)
			lightDone = time.Now()
			wg.Wait()
			if status/100 != 2 {
				t.Fatalf("%s %s = %d %s", tc.light.method, tc.light.path, status, b)
			}
			if heavyStatus != 201 {
				t.Fatalf("heavy create = %d %s", heavyStatus, heavyBody)
			}
			if lightDone.After(heavyDone) {
				t.Errorf("%s %s waited %v, until the create comparing %d patterns had ended: the comparison holds the lock",
					tc.light.method, tc.light.path, lightDone.Sub(start), groups)
			}
		})
	}
}

// TestAttack24ParallelOverlappingGroups: patterns that each overlap the others, sent in parallel
// to the same type, whether as creates or as changes of disjoint groups: exactly one lands, the
// others are refused as overlapping, on both databases.
func TestAttack24ParallelOverlappingGroups(t *testing.T) {
	pgtest.Each(t, testAttack24ParallelOverlappingGroups)
}

func testAttack24ParallelOverlappingGroups(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	const n = 8
	// ^X-[0-9]{1,i}$ for i = 1..n: every two share X-0.
	statuses, bodies := parallel(n, func(i int) (int, []byte) {
		return e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID),
			body: fmt.Sprintf(`{"name": "Parallel %d", "id_pattern": "^X-[0-9]{1,%d}$", "max_devices": 5}`, i, i+1)})
	})
	if got := landed(t, statuses, bodies); got != 1 {
		t.Errorf("%d of %d overlapping creates landed; want 1", got, n)
	}
	// Pairs of disjoint groups, P%dA and P%dB; in parallel, each changed to a pattern that
	// overlaps the other's new pattern (on Q%d-) but not its old one: one of each pair lands.
	const pairs = 4
	ids := make([]string, 2*pairs)
	for i := range 2 * pairs {
		var g enrollmentGroupCreated
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Own %d", "id_pattern": "^P%d%c-[0-9]+$", "max_devices": 5}`, i, i/2, 'A'+i%2), 201, &g)
		ids[i] = g.ID
	}
	statuses, bodies = parallel(2*pairs, func(i int) (int, []byte) {
		return e.send(t, req{key: e.admin, method: "PATCH", path: groupsPath(dt.ID) + "/" + ids[i],
			body: fmt.Sprintf(`{"id_pattern": "^(?:P%d%c|Q%d)-[0-9]+$"}`, i/2, 'A'+i%2, i/2)})
	})
	for p := range pairs {
		if got := landed(t, statuses[2*p:2*p+2], bodies[2*p:2*p+2]); got != 1 {
			t.Errorf("pair %d: %d of 2 overlapping changes landed; want 1", p, got)
		}
	}
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	for p := range pairs {
		changed := 0
		for _, g := range list.Groups {
			if strings.Contains(g.IDPattern, fmt.Sprintf("|Q%d)", p)) {
				changed++
			}
		}
		if changed != 1 {
			t.Errorf("pair %d: %d groups hold an overlapping pattern after the parallel changes; want 1", p, changed)
		}
	}
}

func parallel(n int, do func(i int) (int, []byte)) ([]int, [][]byte) {
	statuses, bodies := make([]int, n), make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { statuses[i], bodies[i] = do(i) })
	}
	wg.Wait()
	return statuses, bodies
}

// landed counts the 2xx answers, failing on any answer that is neither that nor an overlap.
func landed(t *testing.T, statuses []int, bodies [][]byte) int {
	t.Helper()
	n := 0
	for i, s := range statuses {
		switch {
		case s/100 == 2:
			n++
		case s == 409 && strings.Contains(string(bodies[i]), "two groups of one device type may not share a device ID"):
		default:
			t.Errorf("answer %d = %d %s", i, s, bodies[i])
		}
	}
	return n
}

// TestAttack24GroupKeyAnswersAreNotStored: the answers that carry a group key (creating a group,
// rotating its key) must say Cache-Control: no-store, as the answer that may carry a generated
// device secret does, so that no browser, proxy or HTTP cache between the admin and the server
// keeps the one copy of a key that opens every device of the group. They did not say it.
func TestAttack24GroupKeyAnswersAreNotStored(t *testing.T) {
	pgtest.Each(t, testAttack24GroupKeyAnswersAreNotStored)
}

func testAttack24GroupKeyAnswersAreNotStored(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	do := func(method, path, body string) (*http.Response, []byte) {
		hr, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("Authorization", "Bearer "+e.admin)
		hr.Header.Set("Content-Type", "application/json")
		resp, err := e.http.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	resp, b := do("POST", groupsPath(dt.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`)
	var g enrollmentGroupCreated
	if err := json.Unmarshal(b, &g); err != nil || resp.StatusCode != 201 || g.GroupKey == "" {
		t.Fatalf("create = %d %s", resp.StatusCode, b)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the answer with a new group's key says Cache-Control %q; want no-store", cc)
	}
	resp, b = do("POST", groupsPath(dt.ID)+"/"+g.ID+"/keys", `{}`)
	if resp.StatusCode != 201 || !strings.Contains(string(b), `"group_key"`) {
		t.Fatalf("rotate = %d %s", resp.StatusCode, b)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the answer with a rotated group key says Cache-Control %q; want no-store", cc)
	}
	// Nor is the key in any header of any answer.
	for _, path := range []string{groupsPath(dt.ID), groupsPath(dt.ID) + "/" + g.ID} {
		resp, b := do("GET", path, "")
		for k, v := range resp.Header {
			if strings.Contains(strings.Join(v, " "), g.GroupKey) {
				t.Errorf("GET %s: header %s holds the group key", path, k)
			}
		}
		if strings.Contains(string(b), g.GroupKey) || strings.Contains(string(b), "group_key") {
			t.Errorf("GET %s shows a group key: %s", path, b)
		}
	}
}

// TestAttack24PatternFormsMatchTheDocument: enrollpattern takes patterns anchored in every
// alternative in any of RE2's forms (\A…\z, a flag first, a group around, ^A$|^B$), but the
// OpenAPI document said an id_pattern starts with ^ and ends with $: the server answered 201
// with a group the document calls invalid (the validating transport fails the test), and a
// client checking answers against the document refused it. Fixed in the document. A pattern
// with an invisible character (a bidi override, a zero-width space), which made two patterns
// look alike in the console and the audit log, is refused like an invisible character in a
// name.
func TestAttack24PatternFormsMatchTheDocument(t *testing.T) {
	pgtest.Each(t, testAttack24PatternFormsMatchTheDocument)
}

func testAttack24PatternFormsMatchTheDocument(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	for i, p := range []string{`\AT1-[0-9]+\z`, `(?i)^t2-[0-9a-f]+$`, `(^T3-[0-9]+$)`, `^T4$|^T5$`, "(?i)^\u212a6-[0-9]+$"} {
		var g enrollmentGroupCreated
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Form %d", "id_pattern": %q, "max_devices": 5}`, i, p), 201, &g)
		var read devreg.EnrollmentGroup
		e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g.ID, "", 200, &read)
		if read.IDPattern != p {
			t.Errorf("pattern %q reads back as %q", p, read.IDPattern)
		}
	}
	for _, tc := range []struct{ pattern, want string }{
		{"^(?:T7-[0-9]+|\u202e)$", "invisible character U+202E at character 15"},
		{"^T8-[0-9\u200b]+$", "invisible character U+200B at character 9"},
		{"^T9-[0-9]+$\ufeff", "invisible character U+FEFF"},
		{"^(?:TA-[0-9]+|\u00a0)$", "invisible character U+00A0"},
	} {
		status, b := e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID), body: fmt.Sprintf(`{"name": "Hidden", "id_pattern": %q, "max_devices": 5}`, tc.pattern)})
		if eb := decodeError(t, b); status != 422 || !strings.Contains(eb.Error.Message, tc.want) || !strings.Contains(eb.Error.Message, `\x{`) {
			t.Errorf("pattern %+q = %d %s; want 422 saying %q and how to write it", tc.pattern, status, b, tc.want)
		}
	}
}

// TestAttack24LimitsAcrossTwoServers: two servers on one database (SQLite in one data directory,
// or PostgreSQL), requests split between them, all at once: a type's last places for groups go
// to exactly as many creates as there are places, of two overlapping patterns exactly one lands,
// and a group's last places for keys go to exactly as many rotations.
func TestAttack24LimitsAcrossTwoServers(t *testing.T) {
	pgtest.Each(t, testAttack24LimitsAcrossTwoServers)
}

func testAttack24LimitsAcrossTwoServers(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	second, err := server.Open(context.Background(), server.Config{Addr: "127.0.0.1:0", DataDir: e.dataDir, Database: database,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go second.Serve()
	t.Cleanup(func() { second.Shutdown(context.Background()) })
	urls := []string{e.url, second.URL()}
	send := func(i int, method, path, body string) (int, []byte) {
		hr, err := http.NewRequest(method, urls[i%2]+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("Authorization", "Bearer "+e.admin)
		hr.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	dt := e.createType(t, e.admin, "Sensor", 0)
	for i := range devreg.MaxEnrollmentGroupsPerType - 4 {
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Line %d", "id_pattern": "^S%d-[0-9]+$", "max_devices": 5}`, i, i), 201, nil)
	}
	// Two overlapping patterns, one on each server, at once: one lands.
	statuses, bodies := parallel(2, func(i int) (int, []byte) {
		return send(i, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Overlap %d", "id_pattern": "^O-[0-9]{%d,4}$", "max_devices": 5}`, i, i+1))
	})
	if got := landed(t, statuses, bodies); got != 1 {
		t.Errorf("%d of 2 overlapping creates on two servers landed; want 1", got)
	}
	// 3 places left, 12 creates.
	const n = 12
	statuses, bodies = parallel(n, func(i int) (int, []byte) {
		return send(i, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Parallel %d", "id_pattern": "^P%d-[0-9]+$", "max_devices": 5}`, i, i))
	})
	created := 0
	for i, s := range statuses {
		switch {
		case s == 201:
			created++
		case s == 422 && strings.Contains(string(bodies[i]), "the most a type may hold"):
		default:
			t.Errorf("create %d = %d %s", i, s, bodies[i])
		}
	}
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if created != 3 || len(list.Groups) != devreg.MaxEnrollmentGroupsPerType {
		t.Errorf("%d creates on two servers answered 201 and %d groups are stored; want 3 and %d", created, len(list.Groups), devreg.MaxEnrollmentGroupsPerType)
	}

	// A group with one key has 4 places for keys; 12 rotations whose old keys stay live.
	g := list.Groups[0]
	statuses, bodies = parallel(n, func(i int) (int, []byte) {
		return send(i, "POST", groupsPath(dt.ID)+"/"+g.ID+"/keys", `{}`)
	})
	rotated := 0
	for i, s := range statuses {
		switch {
		case s == 201:
			rotated++
		case s == 422 && strings.Contains(string(bodies[i]), "the most a group may hold"):
		default:
			t.Errorf("rotation %d = %d %s", i, s, bodies[i])
		}
	}
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g.ID, "", 200, &read)
	if rotated != devreg.MaxEnrollmentGroupKeys-1 || len(read.Keys) != devreg.MaxEnrollmentGroupKeys {
		t.Errorf("%d rotations on two servers answered 201 and the group holds %d keys; want %d and %d", rotated, len(read.Keys), devreg.MaxEnrollmentGroupKeys-1, devreg.MaxEnrollmentGroupKeys)
	}
}

// TestAttack24GroupUnderAnotherTypePath: a group of one type, named under another type of the
// same account (or by an ID with path tricks), is not found, and nothing changes.
func TestAttack24GroupUnderAnotherTypePath(t *testing.T) {
	pgtest.Each(t, testAttack24GroupUnderAnotherTypePath)
}

func testAttack24GroupUnderAnotherTypePath(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	a := e.createType(t, e.admin, "Sensor", 0)
	b := e.createType(t, e.admin, "Gateway", 0)
	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(a.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`, 201, &g)
	for _, id := range []string{g.ID, g.ID + "%2F..", "..%2F" + g.ID, strings.ToUpper(g.ID)} {
		for _, r := range []req{
			{method: "GET", path: groupsPath(b.ID) + "/" + id},
			{method: "PATCH", path: groupsPath(b.ID) + "/" + id, body: `{"status": "disabled"}`},
			{method: "POST", path: groupsPath(b.ID) + "/" + id + "/keys", body: `{}`},
			{method: "DELETE", path: groupsPath(b.ID) + "/" + id},
		} {
			r.key, r.invalid = e.admin, true
			if status, body := e.send(t, r); status != 404 {
				t.Errorf("%s %s = %d %s; want 404", r.method, r.path, status, body)
			}
		}
	}
	var read devreg.EnrollmentGroup
	e.mustDo(t, e.admin, "GET", groupsPath(a.ID)+"/"+g.ID, "", 200, &read)
	if read.Status != devreg.StatusEnabled || len(read.Keys) != 1 {
		t.Errorf("requests under another type changed the group: %+v", read)
	}
}

// TestAttack24RotateWithEmptyChunkedBody: the rotation's body is optional, and a client that
// sends none in chunked encoding (no Content-Length) is answered as one that sends none at all.
func TestAttack24RotateWithEmptyChunkedBody(t *testing.T) {
	pgtest.Each(t, testAttack24RotateWithEmptyChunkedBody)
}

func testAttack24RotateWithEmptyChunkedBody(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	var g enrollmentGroupCreated
	e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), `{"name": "Line 1", "id_pattern": "^S-[0-9]+$", "max_devices": 5}`, 201, &g)
	hr, err := http.NewRequest("POST", e.url+groupsPath(dt.ID)+"/"+g.ID+"/keys", io.MultiReader()) // unknown length: chunked
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.Contains(string(b), `"group_key"`) {
		t.Errorf("rotation with an empty chunked body = %d %s; want 201", resp.StatusCode, b)
	}
}

// TestAttack24GroupInputLimits: what held up. Counts at and past their limits, numbers past
// int64, negative and fractional ones, times at the ends of RFC 3339's range, names with bidi
// or invisible characters, and bodies that are huge or deeply nested are each taken or refused
// with a message naming the field, and nothing half-made is stored.
func TestAttack24GroupInputLimits(t *testing.T) {
	pgtest.Each(t, testAttack24GroupInputLimits)
}

func testAttack24GroupInputLimits(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	created := 0
	for i, tc := range []struct {
		fields string // after name and id_pattern
		status int
		want   string
	}{
		{`"max_devices": 1099511627776`, 201, ""},
		{`"max_devices": 1099511627777`, 422, "max_devices must be between 1 and 1099511627776"},
		{`"max_devices": 9223372036854775808`, 400, `field "max_devices"`},
		{`"max_devices": -1`, 422, "max_devices must be between 1"},
		{`"max_devices": 0`, 422, "max_devices is required"},
		{`"max_devices": 1.5`, 400, `field "max_devices"`},
		{`"max_devices": 5, "max_per_hour": 9223372036854775807`, 422, "max_per_hour must be between 1 and 100000"},
		{`"max_devices": 5, "max_per_hour": 0`, 422, "max_per_hour must be between 1 and 100000"},
		{`"max_devices": 5, "not_before": "0001-01-01T00:00:00Z", "not_after": "9999-12-31T23:59:59.999999Z"`, 201, ""},
		{`"max_devices": 5, "not_before": "9999-12-31T23:59:59Z", "not_after": "0001-01-01T00:00:00Z"`, 422, "not_before (9999-12-31T23:59:59Z) must be before not_after"},
		{`"max_devices": 5, "not_after": "10000-01-01T00:00:00Z"`, 422, "not_after must be an RFC 3339 time"},
		{`"max_devices": 5, "not_after": 253402300800`, 400, `field "not_after" must be an RFC 3339 time string`},
	} {
		body := fmt.Sprintf(`{"name": "Limit %d", "id_pattern": "^L%d-[0-9]+$", %s}`, i, i, tc.fields)
		status, b := e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID), body: body, invalid: tc.status != 201})
		if status != tc.status || tc.want != "" && !strings.Contains(decodeError(t, b).Error.Message, tc.want) {
			t.Errorf("%s = %d %s; want %d saying %q", tc.fields, status, b, tc.status, tc.want)
		}
		if status == 201 {
			created++
			var g enrollmentGroupCreated
			json.Unmarshal(b, &g)
			var read devreg.EnrollmentGroup
			e.mustDo(t, e.admin, "GET", groupsPath(dt.ID)+"/"+g.ID, "", 200, &read)
			if read.MaxDevices != g.MaxDevices || fmt.Sprint(read.NotBefore) != fmt.Sprint(g.NotBefore) || fmt.Sprint(read.NotAfter) != fmt.Sprint(g.NotAfter) {
				t.Errorf("%s reads back as %+v, was answered %+v", tc.fields, read, g.EnrollmentGroup)
			}
		}
	}
	for _, tc := range []struct{ body, want string }{
		{`{"name": "A` + "\u202e" + `B", "id_pattern": "^N1-[0-9]+$", "max_devices": 5}`, "bidi control U+202E"},
		{`{"name": "A` + "\u200b" + `B", "id_pattern": "^N2-[0-9]+$", "max_devices": 5}`, "invisible character U+200B"},
		{`{"name": "x", "id_pattern": "^N3-[0-9]+$", "max_devices": 5, "x": ` + strings.Repeat("[", 20000) + `}`, "exceeded max depth"},
		{`{"name": "` + strings.Repeat("x", 2<<20) + `", "id_pattern": "^N4-[0-9]+$", "max_devices": 5}`, "body is larger than"},
	} {
		status, b := e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID), body: tc.body, invalid: true})
		if status/100 != 4 || !strings.Contains(decodeError(t, b).Error.Message, tc.want) {
			t.Errorf("%.80s… = %d %.300s; want a refusal saying %q", tc.body, status, b, tc.want)
		}
	}
	var list enrollmentGroupList
	e.mustDo(t, e.admin, "GET", groupsPath(dt.ID), "", 200, &list)
	if len(list.Groups) != created {
		t.Errorf("%d groups stored; want the %d answered 201", len(list.Groups), created)
	}
}

// TestNewAPIKeyAnswerIsNotStored: the answer with a new API key, its only copy, says
// Cache-Control: no-store, as the answers with a group key or a generated secret do; a key
// listing, which holds no key, is answered as any other.
func TestNewAPIKeyAnswerIsNotStored(t *testing.T) {
	e := newEnv(t, "", 0)
	hr, _ := http.NewRequest("POST", e.url+"/api/v1/apikeys", strings.NewReader(`{"name": "station", "scope": "register"}`))
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("create API key = %d with Cache-Control %q; want 201 with no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
}
