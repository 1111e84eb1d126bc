package httpapi_test

import (
	"bytes"
	"context"
	"devreg/internal/logtest"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/apitest"
	"devreg/internal/passwordtest"
	"devreg/internal/pgtest"
	"devreg/server"
	"devreg/store"
)

// clock is the server's clock: the real time, moved on by what a test adds, so that a test lets
// a key expire, or an export's next check come, without waiting for it.
type clock struct{ ahead atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Now().Add(time.Duration(c.ahead.Load())) }
func (c *clock) Add(d time.Duration) { c.ahead.Add(int64(d)) }

// env is a real server on a fresh database, with an account whose keys have each scope and a
// second account for isolation checks.
type env struct {
	srv         *server.Server
	clock       *clock
	accountID   string // of the admin key's account
	url         string
	dataDir     string
	database    string // the URL of pgtest.Each: SQLite apart from dataDir, or PostgreSQL
	http        *http.Client
	transport   *apitest.Transport
	log         *logtest.Buffer
	admin       string
	registerKey string
	read        string
	other       string // admin key of another account
}

func newEnv(t *testing.T, database string, maxBody int64) *env {
	t.Helper()
	return newEnvWith(t, database, func(c *server.Config) { c.MaxBody = maxBody })
}

// newEnvWith is newEnv with a server configured further by configure.
func newEnvWith(t *testing.T, database string, configure func(*server.Config)) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{dataDir: t.TempDir(), database: database, log: &logtest.Buffer{}, clock: &clock{}}
	cfg := server.Config{
		Addr: "127.0.0.1:0", DataDir: e.dataDir, Database: database,
		Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	configure(&cfg)
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Service.Now = e.clock.Now
	srv.Service.HashPassword = passwordtest.Hash
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	e.url = srv.URL()
	if e.transport, err = apitest.NewTransport(nil, e.url); err != nil {
		t.Fatal(err)
	}
	e.http = &http.Client{Transport: e.transport}
	t.Cleanup(func() {
		for _, f := range e.transport.Failures() {
			t.Errorf("OpenAPI: %s", f)
		}
	})

	e.srv = srv
	var acct devreg.Account
	acct, e.admin, err = srv.Service.NewAccount(ctx, "Acme", "owner@acme.test", "correct horse")
	e.accountID = acct.ID
	if err != nil {
		t.Fatal(err)
	}
	_, e.other, err = srv.Service.NewAccount(ctx, "Other", "owner@other.test", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		scope devreg.Scope
		dst   *string
	}{{devreg.ScopeRegister, &e.registerKey}, {devreg.ScopeRead, &e.read}} {
		var out map[string]any
		e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "station `+string(k.scope)+`", "scope": "`+string(k.scope)+`"}`, 201, &out)
		*k.dst = out["key"].(string)
	}
	return e
}

type req struct {
	key         string
	method      string
	path        string
	contentType string
	body        string
	header      map[string]string // more request headers
	invalid     bool              // the request breaks the document on purpose
}

func (e *env) send(t *testing.T, r req) (int, []byte) {
	t.Helper()
	ctx := context.Background()
	if r.invalid {
		ctx = apitest.Invalid(ctx)
	}
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequestWithContext(ctx, r.method, e.url+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if r.key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	if r.contentType == "" && r.body != "" {
		r.contentType = "application/json"
	}
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	resp, err := e.http.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// mustDo sends a JSON request and decodes the answer into out, failing unless the status is want.
func (e *env) mustDo(t *testing.T, key, method, path, body string, want int, out any) {
	t.Helper()
	status, b := e.send(t, req{key: key, method: method, path: path, body: body})
	if status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Problems      []devreg.Problem      `json:"problems"`
	ProblemCount  int                   `json:"problem_count"`
	ProblemGroups []devreg.ProblemGroup `json:"problem_groups"`
}

func decodeError(t *testing.T, b []byte) errorBody {
	t.Helper()
	var eb errorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
		t.Fatalf("not the contract's error body: %s", b)
	}
	return eb
}

func (e *env) createType(t *testing.T, key, name string, minSecret int) devreg.DeviceType {
	t.Helper()
	var dt devreg.DeviceType
	body := fmt.Sprintf(`{"name": %q}`, name)
	if minSecret > 0 {
		body = fmt.Sprintf(`{"name": %q, "min_secret_length": %d}`, name, minSecret)
	}
	e.mustDo(t, key, "POST", "/api/v1/devicetypes", body, 201, &dt)
	return dt
}

func (e *env) register(t *testing.T, key, typeID, query, contentType, body string) (int, []byte) {
	t.Helper()
	path := "/api/v1/devicetypes/" + typeID + "/device_ids"
	if query != "" {
		path += "?" + query
	}
	return e.send(t, req{key: key, method: "PUT", path: path, contentType: contentType, body: body})
}

func (e *env) mustRegister(t *testing.T, key, typeID, query, contentType, body string) devreg.RegisterResult {
	t.Helper()
	status, b := e.register(t, key, typeID, query, contentType, body)
	if status != 200 {
		t.Fatalf("register = %d %s, want 200", status, b)
	}
	var res devreg.RegisterResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func (e *env) deviceType(t *testing.T, key, id string) devreg.DeviceType {
	t.Helper()
	var dt devreg.DeviceType
	e.mustDo(t, key, "GET", "/api/v1/devicetypes/"+id, "", 200, &dt)
	return dt
}

type deviceList struct {
	Devices    []devreg.Device `json:"devices"`
	NextCursor string          `json:"next_cursor"`
}

func (e *env) deviceIDs(t *testing.T, key, query string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for {
		q := query
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		var page deviceList
		e.mustDo(t, key, "GET", "/api/v1/devices?"+q, "", 200, &page)
		for _, d := range page.Devices {
			ids = append(ids, d.DeviceID)
		}
		if page.NextCursor == "" {
			return ids
		}
		cursor = page.NextCursor
	}
}

// dump returns everything the database holds, as stored: the SQLite files, or a pg_dump.
func (e *env) dump(t *testing.T) []byte {
	t.Helper()
	if store.IsPostgres(e.database) {
		out, err := exec.Command("pg_dump", "--data-only", e.database).Output()
		if err != nil {
			t.Fatalf("pg_dump: %v", err)
		}
		return out
	}
	var stored []byte
	files, _ := filepath.Glob(strings.TrimPrefix(e.database, "sqlite:") + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, b...)
	}
	return stored
}

// The contract's bulk upload example, verbatim.
const contractCSV = "device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3,\n\ndevice4, secretfordevice4, device5, secretfordevice5\n"

func TestSeedFlowCSVAndJSON(t *testing.T) { pgtest.Each(t, testSeedFlowCSVAndJSON) }

func testSeedFlowCSVAndJSON(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.registerKey, "Thermostat T1", 0)
	var list struct {
		DeviceTypes []devreg.DeviceType `json:"device_types"`
	}
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes", "", 200, &list)
	if len(list.DeviceTypes) != 1 || list.DeviceTypes[0].ID != dt.ID || list.DeviceTypes[0].MinSecretLength != 8 {
		t.Fatalf("device types = %+v, want just %s with the default minimum 8", list.DeviceTypes, dt.ID)
	}

	res := e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv; charset=utf-8", contractCSV)
	if res.Created != 5 || res.BatchID == "" {
		t.Fatalf("CSV result = %+v, want 5 created in a batch", res)
	}
	res = e.mustRegister(t, e.registerKey, dt.ID, "", "", `{"devices": [{"device_id": "aa:bb:cc:dd:ee:01", "secret": "another-secret"}]}`)
	if res.Created != 1 {
		t.Fatalf("JSON result = %+v, want 1 created", res)
	}
	other := e.createType(t, e.admin, "Gateway G2", 0)
	e.mustRegister(t, e.admin, other.ID, "", "", `{"devices": [{"device_id": "gw1", "secret": "gatewaysecret"}]}`)

	// Each device can later prove itself with its own secret, and only with it.
	for i := 1; i <= 5; i++ {
		id, secret := fmt.Sprintf("device%d", i), fmt.Sprintf("secretfordevice%d", i)
		for _, tc := range []struct {
			secret string
			want   bool
		}{{secret, true}, {secret + "x", false}, {"secretfordevice1", i == 1}} {
			_, err := e.srv.Service.AuthenticateDevice(context.Background(), e.accountID, id, tc.secret)
			if (err == nil) != tc.want {
				t.Errorf("AuthenticateDevice(%s, %q) = %v; want success %v", id, tc.secret, err, tc.want)
			}
		}
	}

	got := e.deviceIDs(t, e.read, "device_type_id="+dt.ID)
	want := []string{"device1", "device2", "device3", "device4", "device5", "aa:bb:cc:dd:ee:01"} // registration order
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("devices of %s (-want +got):\n%s", dt.Name, diff)
	}
	var byPath deviceList
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes/"+other.ID+"/device_ids", "", 200, &byPath)
	if len(byPath.Devices) != 1 || byPath.Devices[0].DeviceID != "gw1" {
		t.Errorf("devices of %s = %+v, want gw1", other.Name, byPath.Devices)
	}
	if n := e.deviceType(t, e.read, dt.ID).DeviceCount; n != 6 {
		t.Errorf("device_count = %d, want 6", n)
	}
	var b devreg.Batch
	e.mustDo(t, e.read, "GET", "/api/v1/batches/"+res.BatchID, "", 200, &b)
	if b.DeviceCount != 1 || b.Source != devreg.SourceAPI || b.CreatedBy != "station register" || b.DeviceTypeID != dt.ID || b.Status != devreg.StatusEnabled {
		t.Errorf("batch = %+v", b)
	}
}

func TestRegisterIsIdempotentAndHandlesConflicts(t *testing.T) {
	pgtest.Each(t, testRegisterIsIdempotentAndHandlesConflicts)
}

func testRegisterIsIdempotentAndHandlesConflicts(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	other := e.createType(t, e.admin, "Other", 0)
	first := e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv", contractCSV)

	t.Run("200/resend-is-unchanged", func(t *testing.T) {
		res := e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv", contractCSV)
		if diff := cmp.Diff(devreg.RegisterResult{Unchanged: 5}, res); diff != "" {
			t.Errorf("resend (-want +got):\n%s", diff)
		}
	})
	conflicting := "device1, a-different-secret\ndevice6, secretfordevice6\n"
	t.Run("409/same-id-other-secret", func(t *testing.T) {
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", conflicting)
		if status != 409 {
			t.Fatalf("status = %d %s, want 409", status, b)
		}
		eb := decodeError(t, b)
		want := []devreg.Problem{{Index: 0, Line: 1, DeviceID: "device1", Message: "device ID is already registered with a different secret"}}
		if diff := cmp.Diff(want, eb.Problems); diff != "" {
			t.Errorf("problems (-want +got):\n%s", diff)
		}
		if ids := e.deviceIDs(t, e.read, "prefix=device6"); len(ids) != 0 {
			t.Errorf("device6 registered by a refused request")
		}
	})
	t.Run("409/same-id-other-type", func(t *testing.T) {
		status, b := e.register(t, e.registerKey, other.ID, "", "", `{"devices": [{"device_id": "device2", "secret": "secretfordevice2"}]}`)
		if status != 409 || !strings.Contains(string(b), "under device type "+dt.ID) {
			t.Fatalf("status = %d %s, want 409 naming the other type", status, b)
		}
	})
	t.Run("200/skip", func(t *testing.T) {
		res := e.mustRegister(t, e.registerKey, dt.ID, "on_conflict=skip", "text/csv", conflicting)
		if res.Created != 1 || res.Skipped != 1 || res.BatchID == "" {
			t.Errorf("skip = %+v, want 1 created, 1 skipped", res)
		}
	})
	t.Run("403/replace-needs-admin", func(t *testing.T) {
		status, b := e.register(t, e.registerKey, other.ID, "on_conflict=replace", "text/csv", "device3, secretfordevice3")
		if status != 403 {
			t.Fatalf("status = %d %s, want 403", status, b)
		}
		decodeError(t, b)
	})
	t.Run("200/replace-moves-device-and-counts", func(t *testing.T) {
		res := e.mustRegister(t, e.admin, other.ID, "on_conflict=replace", "text/csv", "device3, secretfordevice3, device4, newsecret4444")
		if res.Replaced != 2 || res.Created != 0 {
			t.Fatalf("replace = %+v, want 2 replaced", res)
		}
		var d devreg.Device
		e.mustDo(t, e.read, "GET", "/api/v1/devices/device3", "", 200, &d)
		if d.DeviceTypeID != other.ID || d.BatchID != res.BatchID {
			t.Errorf("device3 = %+v, want it under %s in batch %s", d, other.ID, res.BatchID)
		}
		if n := e.deviceType(t, e.read, dt.ID).DeviceCount; n != 4 { // 5 + device6 - 2
			t.Errorf("old type device_count = %d, want 4", n)
		}
		if n := e.deviceType(t, e.read, other.ID).DeviceCount; n != 2 {
			t.Errorf("new type device_count = %d, want 2", n)
		}
		var b devreg.Batch
		e.mustDo(t, e.read, "GET", "/api/v1/batches/"+first.BatchID, "", 200, &b)
		if b.DeviceCount != 3 {
			t.Errorf("first batch device_count = %d, want 3", b.DeviceCount)
		}
		again := e.mustRegister(t, e.admin, other.ID, "", "text/csv", "device3, secretfordevice3, device4, newsecret4444")
		if again.Unchanged != 2 {
			t.Errorf("resend after replace = %+v, want 2 unchanged", again)
		}
	})
}

func TestRegisterRefusesBadEntriesWithEveryProblem(t *testing.T) {
	pgtest.Each(t, testRegisterRefusesBadEntriesWithEveryProblem)
}

func testRegisterRefusesBadEntriesWithEveryProblem(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.registerKey, "Lock", 12)
	e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv", "taken, secret-of-taken")
	tests := []struct {
		name        string
		contentType string
		body        string
		want        []devreg.Problem
	}{
		{"csv", "text/csv", "ok1, a-long-secret-1,\n dev 4, a-long-secret-4,\n-bad, a-long-secret-5, ok2, short\nok1, a-long-secret-7,\ntaken, conflicting-secret, lonely", []devreg.Problem{
			{Index: 1, Line: 2, DeviceID: "dev 4", Message: "device ID contains a space"},
			{Index: 2, Line: 3, DeviceID: "-bad", Message: `device ID starts with '-'; it must start with a letter or digit`},
			{Index: 3, Line: 3, DeviceID: "ok2", Message: "secret is 5 characters long; this device type needs at least 12"},
			{Index: 4, Line: 4, DeviceID: "ok1", Message: "device ID is listed more than once; first at index 0 (line 1)"},
			{Index: 6, Line: 5, DeviceID: "lonely", Message: "device ID has no secret after it (the file has an odd number of fields)"},
		}},
		{"csv-unterminated-quote", "text/csv", "ok1, a-long-secret-1,\n\"ok2, a-long-secret-2\n", []devreg.Problem{
			{Index: 1, Line: 2, Message: "unterminated quote: the field opened on line 2 has no closing double quote"},
		}},
		{"json", "application/json", `{"devices": [{"device_id": "ok1", "secret": "a-long-secret-1"}, {"device_id": "é", "secret": "a-long-secret-2"},
			{"device_id": "ok3"}, {"device_id": "ok4", "secret": "tab\there-long"}, {"device_id": "ok1", "secret": "a-long-secret-1"}, {"device_id": 7, "secret": "x"}]}`, []devreg.Problem{
			{Index: 1, DeviceID: "é", Message: `device ID contains the non-ASCII character 'é'; only A-Z a-z 0-9 . _ : - are allowed`},
			{Index: 2, DeviceID: "ok3", Message: "entry has no secret (or certificate, or certificate_sha256)"},
			{Index: 3, DeviceID: "ok4", Message: "secret contains a tab; only printable ASCII characters are allowed"},
			{Index: 4, DeviceID: "ok1", Message: "device ID is listed more than once; first at index 0"},
			{Index: 5, Message: "entry must be an object with string fields device_id and secret (device_id is number)"},
		}},
	}
	for _, tt := range tests {
		t.Run("422/"+tt.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.registerKey, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids",
				contentType: tt.contentType, body: tt.body, invalid: tt.contentType == "application/json"})
			if status != 422 {
				t.Fatalf("status = %d %s, want 422", status, b)
			}
			eb := decodeError(t, b)
			if diff := cmp.Diff(tt.want, eb.Problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if eb.ProblemCount != len(tt.want) || eb.Error.Code != "invalid_rows" || !strings.Contains(eb.Error.Message, "nothing was registered") {
				t.Errorf("error = %+v", eb.Error)
			}
			if got := e.deviceIDs(t, e.read, "device_type_id="+dt.ID); !cmp.Equal(got, []string{"taken"}) {
				t.Errorf("devices after a refused request = %v, want only the earlier one", got)
			}
		})
	}
	t.Run("422/at-most-1000-problems-listed", func(t *testing.T) {
		var sb strings.Builder
		for i := range 1500 {
			fmt.Fprintf(&sb, "bad id %d, a-long-secret-x\n", i)
		}
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", sb.String())
		eb := decodeError(t, b)
		if status != 422 || len(eb.Problems) != 1000 || eb.ProblemCount != 1500 || eb.Problems[999].Line != 1000 {
			t.Errorf("status %d, %d problems listed of %d, want 422 with 1000 of 1500", status, len(eb.Problems), eb.ProblemCount)
		}
	})
	t.Run("422/problems-grouped-by-message", func(t *testing.T) {
		// 3,000 short secrets read as one line of the report, not as 1,000 of 3,000.
		var sb strings.Builder
		for i := range 3000 {
			fmt.Fprintf(&sb, "grp-%05d, short\n", i)
		}
		sb.WriteString("twice-1, a-long-secret-x\ntwice-1, a-long-secret-x\n")
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", sb.String())
		eb := decodeError(t, b)
		if status != 422 || eb.ProblemCount != 3001 || len(eb.ProblemGroups) != 2 {
			t.Fatalf("= %d, %d problems in %d groups, want 422 with 3001 in 2: %+v", status, eb.ProblemCount, len(eb.ProblemGroups), eb.ProblemGroups)
		}
		short, twice := eb.ProblemGroups[0], eb.ProblemGroups[1]
		if want := (devreg.ProblemGroup{Message: eb.Problems[0].Message, Count: 3000, First: devreg.ProblemAt{Index: 0, Line: 1},
			Last: devreg.ProblemAt{Index: 2999, Line: 3000}}); short != want || !strings.Contains(short.Message, "secret") {
			t.Errorf("short secrets' group = %+v, want %+v", short, want)
		}
		if twice.Message != "device ID is listed more than once" || twice.Count != 1 || twice.First != (devreg.ProblemAt{Index: 3001, Line: 3002}) {
			t.Errorf("repeated ID's group = %+v", twice)
		}
		if where := short.Where(); where != "entries 1–3,000 (lines 1–3,000)" {
			t.Errorf("short secrets are at %q", where)
		}
	})
	t.Run("422/only-the-last-of-20000-is-bad", func(t *testing.T) {
		var sb strings.Builder
		for i := range 19999 {
			fmt.Fprintf(&sb, "bulk-%05d, a-long-secret-%05d,\n", i, i)
		}
		sb.WriteString("bulk last, a-long-secret-last\n")
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", sb.String())
		eb := decodeError(t, b)
		if status != 422 || eb.ProblemCount != 1 || eb.Problems[0].Index != 19999 || eb.Problems[0].Line != 20000 {
			t.Errorf("= %d %+v, want 422 naming entry 19999 on line 20000", status, eb)
		}
		if ids := e.deviceIDs(t, e.read, "prefix=bulk-"); len(ids) != 0 {
			t.Errorf("%d devices registered by a refused request", len(ids))
		}
	})
	t.Run("422/empty-body", func(t *testing.T) {
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", "\n\n")
		if status != 422 || !strings.Contains(decodeError(t, b).Error.Message, "no devices") {
			t.Errorf("status = %d %s, want 422 saying there are no devices", status, b)
		}
	})
	t.Run("422/invalid-before-conflict", func(t *testing.T) {
		status, b := e.register(t, e.registerKey, dt.ID, "", "text/csv", "taken, conflicting-secret, bad id, a-long-secret-1")
		if status != 422 {
			t.Errorf("status = %d %s, want 422 (invalid entries are reported before conflicts)", status, b)
		}
	})
}

func TestRegisterDryRunWritesNothing(t *testing.T) { pgtest.Each(t, testRegisterDryRunWritesNothing) }

func testRegisterDryRunWritesNothing(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.registerKey, "Meter", 0)
	res := e.mustRegister(t, e.registerKey, dt.ID, "dry_run=true", "text/csv", contractCSV)
	if diff := cmp.Diff(devreg.RegisterResult{Created: 5, DryRun: true}, res); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if ids := e.deviceIDs(t, e.read, ""); len(ids) != 0 {
		t.Errorf("dry run registered %v", ids)
	}
	var batches struct {
		Batches []devreg.Batch `json:"batches"`
	}
	e.mustDo(t, e.read, "GET", "/api/v1/batches", "", 200, &batches)
	if len(batches.Batches) != 0 {
		t.Errorf("dry run recorded batches %+v", batches.Batches)
	}
	e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv", contractCSV)
	status, b := e.register(t, e.registerKey, dt.ID, "dry_run=true", "text/csv", "device1, other-secret-1")
	if status != 409 {
		t.Errorf("dry run of a conflict = %d %s, want 409", status, b)
	}
}

func TestRequestRefusals(t *testing.T) { pgtest.Each(t, testRequestRefusals) }

func testRequestRefusals(t *testing.T, database string) {
	e := newEnv(t, database, 4096)
	dt := e.createType(t, e.admin, "Camera", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "cam1, secretforcam1")
	theirs := e.createType(t, e.other, "Theirs", 0)
	e.mustRegister(t, e.other, theirs.ID, "", "text/csv", "their1, secretfortheir1")

	tests := []struct {
		name   string
		req    req
		status int
		code   string
		says   string
	}{
		{"401/no-key", req{method: "GET", path: "/api/v1/devicetypes"}, 401, "unauthorized", "Authorization: Bearer"},
		{"401/unknown-key", req{key: "drk_nope", method: "GET", path: "/api/v1/devicetypes"}, 401, "unauthorized", "not valid"},
		{"403/read-key-creates-type", req{key: e.read, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "x"}`}, 403, "forbidden", `scope "register"`},
		{"403/read-key-registers", req{key: e.read, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", contentType: "text/csv", body: "a1, secretfora1"}, 403, "forbidden", "scope"},
		{"403/register-key-deletes-device", req{key: e.registerKey, method: "DELETE", path: "/api/v1/devices/cam1"}, 403, "forbidden", `scope "admin"`},
		{"403/register-key-disables-device", req{key: e.registerKey, method: "PATCH", path: "/api/v1/devices/cam1", body: `{"status": "disabled"}`}, 403, "forbidden", "admin"},
		{"403/register-key-lists-keys", req{key: e.registerKey, method: "GET", path: "/api/v1/apikeys"}, 403, "forbidden", "admin"},
		{"403/register-key-deletes-type", req{key: e.registerKey, method: "DELETE", path: "/api/v1/devicetypes/" + dt.ID}, 403, "forbidden", "admin"},
		{"404/other-accounts-type", req{key: e.admin, method: "GET", path: "/api/v1/devicetypes/" + theirs.ID}, 404, "not_found", theirs.ID},
		{"404/other-accounts-device", req{key: e.admin, method: "GET", path: "/api/v1/devices/their1"}, 404, "not_found", "their1"},
		{"404/register-into-other-accounts-type", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + theirs.ID + "/device_ids", contentType: "text/csv", body: "x1, secretforx1"}, 404, "not_found", ""},
		{"404/device-id-with-odd-bytes", req{key: e.admin, method: "GET", path: "/api/v1/devices/a%00%ff", invalid: true}, 404, "not_found", "no device"},
		{"404/type-id-with-odd-bytes", req{key: e.admin, method: "GET", path: "/api/v1/devicetypes/dt_%00", invalid: true}, 404, "not_found", "no device type"},
		{"404/batch-id-with-odd-bytes", req{key: e.admin, method: "PATCH", path: "/api/v1/batches/b%00", body: `{"status": "disabled"}`, invalid: true}, 404, "not_found", "no batch"},
		{"422/type-name-with-control-character", req{key: e.admin, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "a\u0000b"}`, invalid: true}, 422, "invalid", "control character"},
		{"404/unknown-path", req{key: e.admin, method: "GET", path: "/api/v1/nothing", invalid: true}, 404, "not_found", "/api/v1/nothing"},
		{"409/duplicate-type-name", req{key: e.admin, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "Camera"}`}, 409, "conflict", "Camera"},
		{"409/delete-type-with-devices", req{key: e.admin, method: "DELETE", path: "/api/v1/devicetypes/" + dt.ID}, 409, "conflict", "1 devices"},
		{"400/malformed-json", req{key: e.admin, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "x",}`, invalid: true}, 400, "bad_request", "byte offset"},
		{"400/malformed-json-registration", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", body: `{"devices": [{"device_id": "a"} {`, invalid: true}, 400, "bad_request", "byte offset"},
		{"400/unknown-field", req{key: e.admin, method: "PATCH", path: "/api/v1/devicetypes/" + dt.ID, body: `{"min_secret_lenght": 20}`, invalid: true}, 400, "bad_request", "min_secret_lenght"},
		{"400/bad-on-conflict", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids?on_conflict=merge", contentType: "text/csv", body: "a1, secretfora1", invalid: true}, 400, "bad_request", "on_conflict"},
		{"400/bad-cursor", req{key: e.read, method: "GET", path: "/api/v1/devices?cursor=!!", invalid: true}, 400, "invalid_cursor", "cursor"},
		{"400/cursor-not-percent-encoded", req{key: e.read, method: "GET", path: "/api/v1/devices?cursor=%%%garbage", invalid: true}, 400, "invalid_cursor", "cursor"},
		{"400/batch-cursor-not-percent-encoded", req{key: e.read, method: "GET", path: "/api/v1/batches?cursor=%zz", invalid: true}, 400, "invalid_cursor", "cursor"},
		{"400/cursor-of-another-order", req{key: e.read, method: "GET", path: "/api/v1/devices?prefix=a&cursor=czE", invalid: true}, 400, "invalid_cursor", "same filters"},
		{"400/malformed-query", req{key: e.read, method: "GET", path: "/api/v1/devices?prefix=%zz", invalid: true}, 400, "bad_request", "prefix"},
		{"413/body-over-max-body", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", contentType: "text/csv", body: strings.Repeat("d1234567, secret12345678,\n", 400)}, 413, "too_large", "--max-body"},
		{"415/form-body", req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", contentType: "application/x-www-form-urlencoded", body: "a=b", invalid: true}, 415, "unsupported_media_type", "text/csv"},
		{"422/type-without-name", req{key: e.admin, method: "POST", path: "/api/v1/devicetypes", body: `{"description": "no name"}`, invalid: true}, 422, "invalid", "name is required"},
		{"422/min-secret-too-small", req{key: e.admin, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "y", "min_secret_length": 4}`, invalid: true}, 422, "invalid", "min_secret_length"},
		{"422/bad-scope", req{key: e.admin, method: "POST", path: "/api/v1/apikeys", body: `{"name": "k", "scope": "root"}`, invalid: true}, 422, "invalid", "scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := e.send(t, tt.req)
			if status != tt.status {
				t.Fatalf("status = %d %s, want %d", status, b, tt.status)
			}
			eb := decodeError(t, b)
			if eb.Error.Code != tt.code || !strings.Contains(eb.Error.Message, tt.says) {
				t.Errorf("error = %+v, want code %s and a message with %q", eb.Error, tt.code, tt.says)
			}
		})
	}
	if got := e.deviceIDs(t, e.admin, ""); !cmp.Equal(got, []string{"cam1"}) {
		t.Errorf("devices after refusals = %v, want only cam1", got)
	}
}

func TestListingFiltersAndPages(t *testing.T) { pgtest.Each(t, testListingFiltersAndPages) }

func testListingFiltersAndPages(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	a := e.createType(t, e.admin, "A", 0)
	b := e.createType(t, e.admin, "B", 0)
	var csv strings.Builder
	for i := range 250 {
		fmt.Fprintf(&csv, "a-%03d, secret-a-%03d,\n", i, i)
	}
	batchA := e.mustRegister(t, e.admin, a.ID, "", "text/csv", csv.String()).BatchID
	e.mustRegister(t, e.admin, b.ID, "", "text/csv", "b-1, secret-b-1, a-999, secret-a-999")
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/a-007", `{"status": "disabled"}`, 200, nil)

	ids := e.deviceIDs(t, e.read, "device_type_id="+a.ID+"&limit=7")
	if len(ids) != 250 || ids[0] != "a-000" || ids[249] != "a-249" {
		t.Errorf("paged listing of A gave %d devices (%v...), want a-000..a-249", len(ids), ids[:min(3, len(ids))])
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"prefix=a-00&status=disabled", []string{"a-007"}},
		{"device_type_id=" + b.ID, []string{"b-1", "a-999"}}, // registration order
		{"device_type_id=" + b.ID + "&prefix=a-", []string{"a-999"}},
		{"batch_id=" + batchA + "&prefix=a-24", []string{"a-240", "a-241", "a-242", "a-243", "a-244", "a-245", "a-246", "a-247", "a-248", "a-249"}},
		{"connected=true", nil},
		{"prefix=%00", nil},
		{"device_type_id=%ff", nil},
		{"prefix=zzz", nil},
	}
	for _, tt := range tests {
		if got := e.deviceIDs(t, e.read, tt.query); !cmp.Equal(tt.want, got) {
			t.Errorf("devices?%s = %v, want %v", tt.query, got, tt.want)
		}
	}
	var page deviceList
	e.mustDo(t, e.read, "GET", "/api/v1/devices?limit=5000", "", 200, &page)
	if len(page.Devices) != 252 || page.NextCursor != "" {
		t.Errorf("limit=5000 gave %d devices, next %q; want all 252 (the cap is 1000) and no next page", len(page.Devices), page.NextCursor)
	}
	e.mustDo(t, e.read, "GET", "/api/v1/devices", "", 200, &page)
	if len(page.Devices) != 100 || page.NextCursor == "" {
		t.Errorf("default page has %d devices, want 100 and a next cursor", len(page.Devices))
	}
}

func TestManageDevicesBatchesTypesAndKeys(t *testing.T) {
	pgtest.Each(t, testManageDevicesBatchesTypesAndKeys)
}

func testManageDevicesBatchesTypesAndKeys(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Plug", 0)
	res := e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "p1, secretforp1, p2, secretforp2")

	var d devreg.Device
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/p1", `{"status": "disabled"}`, 200, &d)
	if d.Status != devreg.StatusDisabled || d.LastSeenAt != nil || d.FirmwareVersion != nil {
		t.Errorf("disabled device = %+v", d)
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/p2", "", 204, nil)
	e.mustDo(t, e.read, "GET", "/api/v1/devices/p2", "", 404, nil)
	if n := e.deviceType(t, e.read, dt.ID).DeviceCount; n != 1 {
		t.Errorf("device_count after delete = %d, want 1", n)
	}

	var b devreg.Batch
	e.mustDo(t, e.registerKey, "PATCH", "/api/v1/batches/"+res.BatchID, `{"status": "disabled"}`, 403, nil)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/batches/"+res.BatchID, `{"status": "disabled"}`, 200, &b)
	if b.Status != devreg.StatusDisabled || b.DeviceCount != 1 {
		t.Errorf("batch = %+v, want disabled with 1 device", b)
	}

	var updated devreg.DeviceType
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"min_secret_length": 20, "description": "Smart plug"}`, 200, &updated)
	if updated.MinSecretLength != 20 || updated.Description != "Smart plug" || updated.Name != "Plug" {
		t.Errorf("updated type = %+v", updated)
	}
	if status, _ := e.register(t, e.admin, dt.ID, "", "text/csv", "p3, shortish-secret"); status != 422 {
		t.Errorf("registration under the new minimum = %d, want 422", status)
	}
	empty := e.createType(t, e.admin, "Unused", 0)
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devicetypes/"+empty.ID, "", 204, nil)
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+empty.ID, "", 404, nil)

	var k devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line-3 station", "scope": "register"}`, 201, &k)
	if !strings.HasPrefix(k.Key, "drk_") || k.Scope != devreg.ScopeRegister {
		t.Fatalf("new key = %+v", k)
	}
	e.mustDo(t, k.Key, "GET", "/api/v1/devicetypes", "", 200, nil)
	status, listing := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/apikeys"})
	if status != 200 || strings.Contains(string(listing), k.Key) || !strings.Contains(string(listing), `"line-3 station"`) {
		t.Errorf("key listing = %d %s, want the key's name but never the key", status, listing)
	}
	var keys struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	json.Unmarshal(listing, &keys)
	for _, kk := range keys.APIKeys {
		if kk.Name == "line-3 station" && kk.LastUsedAt == nil {
			t.Errorf("key used once has no last_used_at")
		}
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/apikeys/"+k.ID, "", 204, nil)
	e.mustDo(t, k.Key, "GET", "/api/v1/devicetypes", "", 401, nil)
}

func TestSecretsNeverLeave(t *testing.T) { pgtest.Each(t, testSecretsNeverLeave) }

func testSecretsNeverLeave(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Secretive", 0)
	secrets := []string{"secretfordevice1", "secretfordevice5", "json-secret-xyz"}
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", contractCSV)
	e.mustRegister(t, e.admin, dt.ID, "", "", `{"devices": [{"device_id": "j1", "secret": "json-secret-xyz"}]}`)
	e.register(t, e.admin, dt.ID, "", "text/csv", "device1, secretfordevice1-but-other, bad id, secretfordevice5")
	e.deviceIDs(t, e.admin, "")
	e.mustDo(t, e.admin, "GET", "/api/v1/devices/j1", "", 200, nil)

	stored := e.dump(t)
	for _, s := range secrets {
		for _, body := range e.transport.Responses {
			if bytes.Contains(body, []byte(s)) {
				t.Errorf("secret %q returned in a response: %s", s, body)
			}
		}
		if strings.Contains(e.log.String(), s) {
			t.Errorf("secret %q written to the log", s)
		}
		if bytes.Contains(stored, []byte(s)) {
			t.Errorf("secret %q stored in clear in the database", s)
		}
	}
}

func TestDocsAndOperationsEndpointsNeedNoKey(t *testing.T) {
	pgtest.Each(t, testDocsAndOperationsEndpointsNeedNoKey)
}

func testDocsAndOperationsEndpointsNeedNoKey(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	for path, want := range map[string]string{
		"/api/v1/openapi.json":              `"openapi":"3.0.3"`,
		"/docs":                             "swagger-ui",
		"/docs/docs.js":                     "/api/v1/openapi.json",
		"/docs/assets/swagger-ui-bundle.js": "SwaggerUIBundle",
		"/docs/assets/swagger-ui.css":       ".swagger-ui",
		"/healthz":                          "ok",
		"/metrics":                          "devreg_http_requests_total",
	} {
		status, b := e.send(t, req{method: "GET", path: path})
		if status != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d, want 200 with %q", path, status, want)
		}
	}
	status, b := e.send(t, req{method: "GET", path: "/api/v1/openapi.json"})
	var doc map[string]any
	if status != 200 || json.Unmarshal(b, &doc) != nil {
		t.Fatalf("openapi.json is not JSON")
	}
	for _, p := range []string{"/devicetypes", "/devicetypes/{device_type_id}/device_ids", "/devices", "/batches", "/apikeys"} {
		if _, ok := doc["paths"].(map[string]any)[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
}

// A slow upload must not hold up other registrations: the request is staged apart from the
// registry and written in one short transaction once it has arrived whole.
func TestSlowUploadHoldsUpNoOne(t *testing.T) { pgtest.Each(t, testSlowUploadHoldsUpNoOne) }

func testSlowUploadHoldsUpNoOne(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Slow", 0)
	pr, pw := io.Pipe()
	hr, err := http.NewRequest("PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids", pr)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	hr.Header.Set("Content-Type", "text/csv")
	type answer struct {
		status int
		body   []byte
	}
	slow := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			slow <- answer{0, []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slow <- answer{resp.StatusCode, b}
	}()
	for i := range 500 {
		fmt.Fprintf(pw, "slow-%03d, secret-slow-%03d,\n", i, i)
	}
	// While the slow upload is open, another station registers, and that lands at once.
	res := e.mustRegister(t, e.registerKey, dt.ID, "", "text/csv", "fast-1, secret-fast-1")
	if res.Created != 1 {
		t.Fatalf("registration during a slow upload = %+v", res)
	}
	if ids := e.deviceIDs(t, e.read, "prefix=slow-"); len(ids) != 0 {
		t.Fatalf("half an upload is visible: %d devices", len(ids))
	}
	fmt.Fprintf(pw, "slow-999, secret-slow-999\n")
	pw.Close()
	a := <-slow
	if a.status != 200 || !strings.Contains(string(a.body), `"created":501`) {
		t.Fatalf("slow upload = %d %s, want 501 created", a.status, a.body)
	}
}

func TestRegisterTellsWhereTheTimeWent(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnv(t, database, 0)
		dt := e.createType(t, e.admin, "Sensor", 0)
		stages := func(query, body string) []string {
			t.Helper()
			r, err := http.NewRequest("PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids?"+query, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", "Bearer "+e.registerKey)
			r.Header.Set("Content-Type", "text/csv")
			resp, err := e.http.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var names []string
			for _, part := range strings.Split(resp.Header.Get("Server-Timing"), ", ") {
				name, dur, ok := strings.Cut(part, ";dur=")
				if _, err := strconv.ParseFloat(dur, 64); !ok || err != nil {
					t.Fatalf("Server-Timing %q: %q is not name;dur=milliseconds", resp.Header.Get("Server-Timing"), part)
				}
				names = append(names, name)
			}
			return names
		}
		for _, c := range []struct {
			name, query, body string
			want              []string
		}{
			{"new devices", "", contractCSV, []string{"read", "wait", "lock", "insert", "commit"}},
			{"sent again", "", contractCSV, []string{"read", "wait", "lookup"}}, // writes nothing: takes no lock
			{"a dry run of new devices", "dry_run=true", "new-1, secretfornew1\n", []string{"read", "wait", "lookup"}},
			{"a mix", "on_conflict=skip", contractCSV + "\nnew-2, secretfornew2\n", []string{"read", "wait", "lookup", "stage", "lock", "check", "write", "commit"}},
		} {
			if got := stages(c.query, c.body); !slices.Equal(got, c.want) {
				t.Errorf("%s: stages %v, want %v", c.name, got, c.want)
			}
		}
	})
}
