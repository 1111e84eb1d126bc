package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"devreg"
	"devreg/internal/apitest"
	"devreg/internal/pgtest"
)

// timed sends a request with a bound on its wait and returns its status and how long it took;
// status 0 if it did not answer in time.
func timed(t *testing.T, req *http.Request, wait time.Duration) (int, time.Duration) {
	t.Helper()
	c := &http.Client{Timeout: wait}
	start := time.Now()
	resp, err := c.Do(req)
	elapsed := time.Since(start)
	if err != nil {
		t.Logf("%s %s: %v", req.Method, req.URL.Path, err)
		return 0, elapsed
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, elapsed
}

// probes are the requests a service under bulk load must still answer at once: the health
// check, a device's token request and a small read of the API.
func (e *env) probes(t *testing.T, deviceID, secret string) map[string]func() *http.Request {
	return map[string]func() *http.Request{
		"GET /healthz": func() *http.Request {
			r, _ := http.NewRequest("GET", e.url+"/healthz", nil)
			return r
		},
		"POST /device/v1/token": func() *http.Request {
			form := url.Values{"grant_type": {"client_credentials"}, "account_id": {e.accountID}}
			r, _ := http.NewRequest("POST", e.url+"/device/v1/token", strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
			return r
		},
		"GET /api/v1/devicetypes": func() *http.Request {
			r, _ := http.NewRequest("GET", e.url+"/api/v1/devicetypes", nil)
			r.Header.Set("Authorization", "Bearer "+e.read)
			return r
		},
	}
}

// More trickling uploads than either database's pool has connections (SQLite 8, PostgreSQL
// 20) must not hold up the health check, device logins or the API: a registration takes no
// connection until its body has arrived whole.
func TestTricklingUploadsHoldNoConnection(t *testing.T) {
	pgtest.Each(t, testTricklingUploadsHoldNoConnection)
}

func testTricklingUploadsHoldNoConnection(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Trickle", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "probe-1, secret-probe-1")

	const uploads = 24
	var writers, answers sync.WaitGroup
	stop := make(chan struct{})
	statuses := make(chan string, uploads)
	for i := range uploads {
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids", pr)
		req.Header.Set("Authorization", "Bearer "+e.registerKey)
		req.Header.Set("Content-Type", "text/csv")
		answers.Add(1)
		go func() {
			defer answers.Done()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				statuses <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			statuses <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		writers.Add(1)
		go func() {
			defer writers.Done()
			defer pw.Close()
			// A few bytes, then a pause of seconds, as a stalled factory line sends them.
			for line := 0; ; line++ {
				if _, err := fmt.Fprintf(pw, "trickle-%02d-%03d, secret-trickle-%02d,\n", i, line, i); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Second):
				}
			}
		}()
	}
	time.Sleep(time.Second) // every upload has begun

	for round := range 2 {
		for name, req := range e.probes(t, "probe-1", "secret-probe-1") {
			status, took := timed(t, req(), 5*time.Second)
			if status != 200 || took > time.Second {
				t.Errorf("round %d, %d uploads trickling: %s = %d after %v, want 200 well under 2s", round, uploads, name, status, took)
			}
		}
	}

	close(stop)
	writers.Wait()
	answers.Wait()
	close(statuses)
	for s := range statuses {
		if !strings.HasPrefix(s, "200 ") {
			t.Errorf("trickled upload = %s, want 200 once its body ended", s)
		}
	}
}

// Many registrations at once must leave a share of the pool to device logins: each of them
// holds a connection only while it is written, and only a few may do so at once. There are more
// of them than either database's pool has connections, and their bodies take seconds to arrive,
// as over a factory's uplink rather than loopback.
func TestBulkRegistrationsLeaveRoomForLogins(t *testing.T) {
	pgtest.Each(t, testBulkRegistrationsLeaveRoomForLogins)
}

func testBulkRegistrationsLeaveRoomForLogins(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Bulk", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "probe-1, secret-probe-1")

	registrations, devices := 24, 20000
	if raceEnabled {
		// The detector makes SQLite's writes some twenty times slower, and a device's token
		// request writes too, so it would measure SQLite's one writer at a time, not the pool.
		devices = 1000
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range registrations {
		var b bytes.Buffer
		for j := range devices {
			fmt.Fprintf(&b, "bulk-%02d-%05d, secret-bulk-%05d,\n", i, j, j)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 20 * time.Millisecond) // stations start one after another
			body := &paced{b: b.Bytes(), chunk: b.Len()/20 + 1, pause: 150 * time.Millisecond}
			req, _ := http.NewRequest("PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids", body)
			req.Header.Set("Authorization", "Bearer "+e.registerKey)
			req.Header.Set("Content-Type", "text/csv")
			if status, took := timed(t, req, time.Minute); status != 200 {
				t.Errorf("registration of %d devices = %d after %v, want 200", devices, status, took)
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	probes := e.probes(t, "probe-1", "secret-probe-1")
	worst := map[string]time.Duration{}
	for n := 0; ; n++ {
		select {
		case <-done:
			t.Logf("%d rounds of probes during %d registrations of %d devices; the slowest took %v", n, registrations, devices, worst)
			if n < 3 {
				t.Fatalf("the registrations ended before the probes could measure them")
			}
			if got := e.deviceType(t, e.read, dt.ID).DeviceCount; got != int64(registrations*devices+1) {
				t.Errorf("device_count = %d, want %d", got, registrations*devices+1)
			}
			return
		default:
		}
		for name, req := range probes {
			status, took := timed(t, req(), 5*time.Second)
			worst[name] = max(worst[name], took)
			if status != 200 || took > 1500*time.Millisecond {
				t.Errorf("%s during %d registrations = %d after %v, want 200 within 1.5s", name, registrations, status, took)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// paced yields b a chunk at a time with a pause before each.
type paced struct {
	b     []byte
	chunk int
	pause time.Duration
}

func (p *paced) Read(buf []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	time.Sleep(p.pause)
	n := copy(buf[:min(len(buf), p.chunk)], p.b)
	p.b = p.b[n:]
	return n, nil
}

// hugeField yields a CSV or JSON registration body whose device IDs are n bytes each, made as it
// is sent, so that only the server could hold them.
func hugeField(contentType string, ids, n int) io.Reader {
	var parts []io.Reader
	for i := range ids {
		sep := ""
		if i > 0 {
			sep = ","
		}
		if contentType == "text/csv" {
			parts = append(parts, strings.NewReader(fmt.Sprintf("ok-%d, secret-ok-%d,\nhuge-%d", i, i, i)),
				io.LimitReader(repeatByte('x'), int64(n)), strings.NewReader(", secret-huge\n"))
		} else {
			if i == 0 {
				parts = append(parts, strings.NewReader(`{"devices": [`))
			}
			parts = append(parts, strings.NewReader(fmt.Sprintf(`%s{"device_id": "ok-%d", "secret": "secret-ok-%d"}, {"device_id": "huge-%d`, sep, i, i, i)),
				io.LimitReader(repeatByte('x'), int64(n)), strings.NewReader(`", "secret": "secret-huge"}`))
		}
	}
	if contentType != "text/csv" {
		parts = append(parts, strings.NewReader("]}"))
	}
	return io.MultiReader(parts...)
}

type repeatByte byte

func (b repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// A registration with a huge invalid field is refused with a short answer that repeats at most
// the field's start, and the server never holds the field: CSV reports it as an invalid entry
// (422), JSON refuses the body as malformed (400), naming where the value starts.
func TestHugeFieldsAreNeitherHeldNorEchoed(t *testing.T) {
	pgtest.Each(t, testHugeFieldsAreNeitherHeldNorEchoed)
}

func testHugeFieldsAreNeitherHeldNorEchoed(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Huge", 0)
	tests := []struct {
		name        string
		contentType string
		ids, size   int
		status      int
		problems    int
		says        string
	}{
		{"csv/one-5MB-id", "text/csv", 1, 5 << 20, 422, 1, "device ID is 5242886 bytes long; at most 128 characters are allowed"},
		{"csv/ten-2MB-ids", "text/csv", 10, 2 << 20, 422, 10, "device ID is 2097158 bytes long; at most 128 characters are allowed"},
		{"json/one-5MB-id", "application/json", 1, 5 << 20, 400, 0, "device entry 1, at byte offset 61, is longer than 64 KiB"},
		{"json/ten-2MB-ids", "application/json", 10, 2 << 20, 400, 0, "device entry 1, at byte offset 61, is longer than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d/%s", tt.status, tt.name), func(t *testing.T) {
			// Marked as breaking the document so that the validating transport, which would
			// read it whole, lets the body through as it is made; the answer is still checked.
			req, _ := http.NewRequestWithContext(apitest.Invalid(context.Background()), "PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids", hugeField(tt.contentType, tt.ids, tt.size))
			req.Header.Set("Authorization", "Bearer "+e.registerKey)
			req.Header.Set("Content-Type", tt.contentType)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			runtime.ReadMemStats(&after)
			// The client makes the body as it sends it, so what this process allocated meanwhile
			// is the server's (and the transport's) doing.
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("allocated %d bytes in this process during the request; answer of %d bytes", alloc, len(b))
			if alloc > uint64(tt.size/2) {
				t.Errorf("the request allocated %d bytes for fields of %d; a field must not be held", alloc, tt.size)
			}
			if resp.StatusCode != tt.status || len(b) > 64<<10 {
				t.Fatalf("= %d with a body of %d bytes, want %d under 64 KiB", resp.StatusCode, len(b), tt.status)
			}
			eb := decodeError(t, b)
			if tt.problems == 0 && !strings.Contains(eb.Error.Message, tt.says) || eb.ProblemCount != tt.problems || len(eb.Problems) != tt.problems {
				t.Errorf("error = %+v with %d problems, want a message with %q and %d problems", eb.Error, eb.ProblemCount, tt.says, tt.problems)
			}
			for i, p := range eb.Problems {
				if want := fmt.Sprintf("huge-%d", i) + strings.Repeat("x", devreg.MaxEchoed-len(fmt.Sprintf("huge-%d", i))) + "…"; p.DeviceID != want || p.Message != tt.says {
					t.Errorf("problem %d = %+v, want device ID %q (%d characters and an ellipsis) and message %q", i, p, want, utf8.RuneCountInString(want)-1, tt.says)
				}
			}
		})
	}
	if ids := e.deviceIDs(t, e.read, ""); len(ids) != 0 {
		t.Errorf("refused requests registered %v", ids)
	}
}

// Problems repeat at most MaxEchoed characters of a device ID, also where the ID is short enough
// to be held but too long to be valid, and in a message that quotes the request.
func TestProblemsClipWhatTheyEcho(t *testing.T) { pgtest.Each(t, testProblemsClipWhatTheyEcho) }

func testProblemsClipWhatTheyEcho(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Echo", 0)
	long := strings.Repeat("é", 500)
	clipped := strings.Repeat("é", devreg.MaxEchoed) + "…"
	field := strings.Repeat("f", 1000)
	body, _ := json.Marshal(map[string]any{"devices": []map[string]string{
		{"device_id": long, "secret": "secret-long"},
		{"device_id": "ok-1", "secret": "secret-ok-1", field: "x"},
	}})
	status, b := e.send(t, req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", body: string(body), invalid: true})
	eb := decodeError(t, b)
	want := []devreg.Problem{
		{Index: 0, DeviceID: clipped, Message: "device ID is 500 characters long; at most 128 are allowed"},
		{Index: 1, DeviceID: "ok-1", Message: fmt.Sprintf("entry has an unknown field %s; only device_id and one of secret, certificate and certificate_sha256 are allowed", `"`+strings.Repeat("f", devreg.MaxEchoed-1)+"…")},
	}
	if status != 422 || !cmpProblems(t, want, eb.Problems) {
		t.Errorf("= %d %s", status, b)
	}
}

func cmpProblems(t *testing.T, want, got []devreg.Problem) bool {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("problems = %+v, want %+v", got, want)
		return false
	}
	ok := true
	for i := range want {
		if want[i] != got[i] {
			t.Errorf("problem %d = %+v, want %+v", i, got[i], want[i])
			ok = false
		}
	}
	return ok
}
