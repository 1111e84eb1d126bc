package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/apitest"
	"devreg/internal/pgtest"
)

// padding is blank lines, which a bulk upload file may hold anywhere: more than the sockets
// between client and server buffer, so that the client has sent it only once the server reads the
// body, and the server reads the body only once it has authenticated the request.
var padding = strings.Repeat("\n", 8<<20)

// csvDevices is a bulk upload file of devices prefix-from to prefix-(to-1), each with secret
// "secret-" and its ID.
func csvDevices(prefix string, from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s-%05d, secret-%s-%05d,\n", prefix, i, prefix, i)
	}
	return b.String()
}

// streamRegister sends a registration whose body is first, then what meanwhile returns (once the
// server has authenticated the request and reads its body), then rest; it returns the answer.
func (e *env) streamRegister(t *testing.T, key, typeID, query, first, rest string, meanwhile func()) (int, http.Header, []byte) {
	t.Helper()
	pr, pw := io.Pipe()
	path := e.url + "/api/v1/devicetypes/" + typeID + "/device_ids"
	if query != "" {
		path += "?" + query
	}
	// Marked as breaking the document only so that the validating transport does not read the
	// body whole before sending it; the answer is still checked against the document.
	req, _ := http.NewRequestWithContext(apitest.Invalid(context.Background()), "PUT", path, pr)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "text/csv")
	type answer struct {
		status int
		header http.Header
		body   []byte
		err    error
	}
	answers := make(chan answer, 1)
	go func() {
		resp, err := e.http.Do(req)
		if err != nil {
			answers <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers <- answer{resp.StatusCode, resp.Header, b, err}
	}()
	if _, err := io.WriteString(pw, first+padding); err != nil {
		t.Fatalf("sending the body's first part: %v", err)
	}
	meanwhile()
	if _, err := io.WriteString(pw, rest); err != nil {
		t.Fatalf("sending the body's rest: %v", err)
	}
	pw.Close()
	a := <-answers
	if a.err != nil {
		t.Fatal(a.err)
	}
	return a.status, a.header, a.body
}

// newKey makes a register key of the account and returns its ID and the key; expires, if not
// empty, is its expires_at.
func (e *env) newKey(t *testing.T, name, expires string) (id, key string) {
	t.Helper()
	body := fmt.Sprintf(`{"name": %q, "scope": "register"}`, name)
	if expires != "" {
		body = fmt.Sprintf(`{"name": %q, "scope": "register", "expires_at": %q}`, name, expires)
	}
	var k devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", body, 201, &k)
	return k.ID, k.Key
}

// TestRevokedKeyRegistersNothing: a register key deleted (204), or expiring, while its
// registration's body is on the way gets 401 once the body has arrived, and nothing is written:
// no device, no batch, no audit entry. It holds for each way a registration ends: new devices
// written at once, a mix of new and registered ones staged and applied, a resend or a dry run
// answered from a read, a conflict (whose answer would tell which IDs are registered).
func TestRevokedKeyRegistersNothing(t *testing.T) { pgtest.Each(t, testRevokedKeyRegistersNothing) }

func testRevokedKeyRegistersNothing(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	const registered = 50 // devices "N-old-00000" to "N-old-00049" of case N, registered before it
	tests := []struct {
		name        string
		query       string
		first, rest string // "old:FROM-TO" or "new:FROM-TO" devices, or "conflict" (old-00000 with another secret)
		expire      bool   // let the key expire instead of deleting it
		code        string
	}{
		{"401/new-devices-deleted-key", "", "new:0-500", "new:500-1000", false, devreg.EUNAUTHORIZED},
		{"401/new-devices-expired-key", "", "new:0-500", "new:500-1000", true, devreg.EKEYEXPIRED},
		{"401/mixed-deleted-key", "", "old:0-50", "new:0-1000", false, devreg.EUNAUTHORIZED},
		{"401/mixed-expired-key", "", "old:0-50", "new:0-1000", true, devreg.EKEYEXPIRED},
		{"401/resend-deleted-key", "", "old:0-25", "old:25-50", false, devreg.EUNAUTHORIZED},
		{"401/dry-run-deleted-key", "dry_run=true", "new:0-500", "new:500-1000", false, devreg.EUNAUTHORIZED},
		{"401/mixed-dry-run-deleted-key", "dry_run=true", "old:0-50", "new:0-1000", false, devreg.EUNAUTHORIZED},
		{"401/conflict-deleted-key", "", "conflict", "new:0-1000", false, devreg.EUNAUTHORIZED},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.expire { // the others move the server's clock on, past their own key's expiry
				t.Parallel()
			}
			dt := e.createType(t, e.admin, fmt.Sprintf("Revoked %d", i), 0)
			body := func(part string) string {
				if part == "conflict" {
					return fmt.Sprintf("%d-old-00000, another-secret-0,\n", i)
				}
				var kind string
				var from, to int
				fmt.Sscanf(strings.ReplaceAll(part, ":", " "), "%s %d-%d", &kind, &from, &to)
				return csvDevices(fmt.Sprintf("%d-%s", i, kind), from, to)
			}
			e.mustRegister(t, e.admin, dt.ID, "", "text/csv", body("old:0-50"))
			expires := ""
			if tt.expire {
				// An hour on the server's clock (in whole seconds, as RFC 3339 carries them): time
				// enough to authenticate, and then the clock moves past it.
				expires = e.clock.Now().Add(time.Hour).Format(time.RFC3339)
			}
			keyID, key := e.newKey(t, "station "+tt.name, expires)

			status, header, b := e.streamRegister(t, key, dt.ID, tt.query, body(tt.first), body(tt.rest), func() {
				if tt.expire {
					e.clock.Add(time.Hour + time.Second)
					return
				}
				e.mustDo(t, e.admin, "DELETE", "/api/v1/apikeys/"+keyID, "", 204, nil)
			})
			if status != 401 {
				t.Fatalf("registration = %d %s, want 401", status, b)
			}
			if got, want := header.Get("WWW-Authenticate"), `Bearer realm="devreg", error="invalid_token"`; got != want {
				t.Errorf("WWW-Authenticate = %q, want %q, as for a key refused at the start", got, want)
			}
			eb := decodeError(t, b)
			if eb.Error.Code != tt.code || !strings.Contains(eb.Error.Message, "while this request ran; nothing was registered") {
				t.Errorf("error = %+v, want code %s saying the key went while the request ran and nothing was registered", eb.Error, tt.code)
			}
			if got := e.deviceType(t, e.admin, dt.ID).DeviceCount; got != registered {
				t.Errorf("device_count = %d, want %d", got, registered)
			}
			if ids := e.deviceIDs(t, e.admin, fmt.Sprintf("device_type_id=%s&prefix=%d-new", dt.ID, i)); len(ids) != 0 {
				t.Errorf("%d new devices were registered, e.g. %s", len(ids), ids[0])
			}
			var batches struct {
				Batches []devreg.Batch `json:"batches"`
			}
			e.mustDo(t, e.admin, "GET", "/api/v1/batches?device_type_id="+dt.ID, "", 200, &batches)
			if len(batches.Batches) != 1 {
				t.Errorf("the type has %d batches, want only the first one's", len(batches.Batches))
			}
			var audit struct {
				Entries []devreg.AuditEntry `json:"entries"`
			}
			e.mustDo(t, e.admin, "GET", "/api/v1/audit?actor_id="+keyID, "", 200, &audit)
			for _, a := range audit.Entries {
				if a.Action == "devices.register" {
					t.Errorf("audit entry %d records a registration by the key: %+v", a.Seq, a)
				}
			}
		})
	}
}

// TestExportEndsWhenItsKeyGoes: an audit export whose key is deleted, or expires, while its
// client reads ends with an error line and a broken connection, before the rest of the log.
func TestExportEndsWhenItsKeyGoes(t *testing.T) { pgtest.Each(t, testExportEndsWhenItsKeyGoes) }

func testExportEndsWhenItsKeyGoes(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Big entries", 0)
	// Each change of the type's topic filters is an audit entry of some 100 KB (the old and the
	// new filters): 80 of them are more than the sockets hold, so the server writes the export
	// only as fast as its client reads it.
	filters := func(c byte) string {
		f := make([]string, 28)
		for i := range f {
			f[i] = fmt.Sprintf("%q", fmt.Sprintf("devices/{device_id}/%02d/%s", i, strings.Repeat(string(c), 900)))
		}
		return "[" + strings.Join(f, ", ") + "]"
	}
	const changes = 80
	for i := range changes {
		c := byte('a' + i%2)
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID,
			fmt.Sprintf(`{"mqtt_publish": %s, "mqtt_subscribe": %s}`, filters(c), filters(c)), 200, nil)
	}

	for _, tc := range []struct {
		name   string
		expire bool
		code   string
	}{{"deleted", false, devreg.EUNAUTHORIZED}, {"expired", true, devreg.EKEYEXPIRED}} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"name": "auditor", "scope": "admin"}`
			if tc.expire {
				body = fmt.Sprintf(`{"name": "auditor", "scope": "admin", "expires_at": %q}`, e.clock.Now().Add(time.Hour).Format(time.RFC3339))
			}
			var k devreg.APIKey
			e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", body, 201, &k)

			// Not the validating transport, which reads an answer whole before handing it over.
			req, _ := http.NewRequest("GET", e.url+"/api/v1/audit/export", nil)
			req.Header.Set("Authorization", "Bearer "+k.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("export = %d, want 200", resp.StatusCode)
			}
			head, _, _ := strings.Cut(resp.Header.Get("Audit-Head"), ":")
			seq, err := strconv.Atoi(head)
			if err != nil {
				t.Fatalf("Audit-Head = %q", resp.Header.Get("Audit-Head"))
			}
			r := bufio.NewReader(resp.Body)
			if _, err := r.ReadBytes('\n'); err != nil {
				t.Fatalf("the export's first line: %v", err)
			}
			if tc.expire {
				e.clock.Add(time.Hour + time.Second)
			} else {
				e.mustDo(t, e.admin, "DELETE", "/api/v1/apikeys/"+k.ID, "", 204, nil)
				e.clock.Add(time.Second) // the export asks again once a second
			}
			lines := 1 // the first
			var last []byte
			for {
				line, err := r.ReadBytes('\n')
				if len(line) > 0 {
					lines++
					last = line
				}
				if err != nil {
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Errorf("the export ended with %v, want a broken connection (unexpected EOF)", err)
					}
					break
				}
			}
			var eb struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(last, &eb); err != nil || eb.Error.Code != tc.code || !strings.Contains(eb.Error.Message, "the export ends here") {
				t.Errorf("last line = %.300s, want an error with code %s", last, tc.code)
			}
			if entries := lines - 1; entries >= seq {
				t.Errorf("the export sent %d of the %d entries before its error line, want it to stop early", entries, seq)
			}
		})
	}
}

// TestRevocationRacingRegistrations: keys deleted while their registrations run, many in
// parallel on a real server. Each registration either answers 200 and comes before its key's
// deletion in the audit chain (the delete took effect after the commit), or answers 401 and
// registered nothing; never 200 after the deletion.
func TestRevocationRacingRegistrations(t *testing.T) {
	pgtest.Each(t, testRevocationRacingRegistrations)
}

func testRevocationRacingRegistrations(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Race", 0)
	const pairs = 24
	type outcome struct {
		keyID  string
		status int
		body   string
		err    error
	}
	outcomes := make([]outcome, pairs)
	var wg sync.WaitGroup
	for i := range pairs {
		keyID, key := e.newKey(t, fmt.Sprintf("racer %d", i), "")
		outcomes[i].keyID = keyID
		devices := csvDevices(fmt.Sprintf("race-%02d", i), 0, 200)
		wg.Add(2)
		go func() {
			defer wg.Done()
			// In four parts, 25 ms apart, as a slow line sends it.
			body := &paced{b: []byte(devices), chunk: len(devices)/4 + 1, pause: 25 * time.Millisecond}
			// Marked so that the validating transport does not read the body whole before it
			// sends it; the answer is still checked.
			req, _ := http.NewRequestWithContext(apitest.Invalid(context.Background()), "PUT", e.url+"/api/v1/devicetypes/"+dt.ID+"/device_ids", body)
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "text/csv")
			resp, err := e.http.Do(req)
			if err != nil {
				outcomes[i].err = err
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			outcomes[i].status, outcomes[i].body = resp.StatusCode, string(b)
		}()
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 12 * time.Millisecond) // from before the request to after its end
			req, _ := http.NewRequest("DELETE", e.url+"/api/v1/apikeys/"+keyID, nil)
			req.Header.Set("Authorization", "Bearer "+e.admin)
			if resp, err := e.http.Do(req); err != nil || resp.StatusCode != 204 {
				t.Errorf("DELETE key %d: %v %v", i, resp, err)
			} else {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()

	seqOf := func(query string) int64 {
		var page struct {
			Entries []devreg.AuditEntry `json:"entries"`
		}
		e.mustDo(t, e.admin, "GET", "/api/v1/audit?"+query, "", 200, &page)
		if len(page.Entries) > 1 {
			t.Errorf("audit ?%s lists %d entries", query, len(page.Entries))
		}
		if len(page.Entries) == 0 {
			return 0
		}
		return page.Entries[0].Seq
	}
	answers := map[string]int{}
	for i, o := range outcomes {
		if o.err != nil {
			t.Errorf("registration %d: %v", i, o.err)
			continue
		}
		registered := seqOf("action=devices.register&actor_id=" + o.keyID)
		deleted := seqOf("action=apikey.delete&object_id=" + o.keyID)
		ids := e.deviceIDs(t, e.admin, fmt.Sprintf("prefix=race-%02d-", i))
		switch {
		case o.status == 200 && registered > 0 && registered < deleted && len(ids) == 200:
			answers["200 before the delete"]++
		case o.status == 401 && registered == 0 && len(ids) == 0:
			if strings.Contains(o.body, "while this request ran") {
				answers["401 while it ran"]++
			} else {
				answers["401 at the start"]++
			}
		default:
			t.Errorf("registration %d = %d %.200s; registered at seq %d, key deleted at seq %d, %d devices", i, o.status, o.body, registered, deleted, len(ids))
		}
	}
	t.Logf("answers: %v", answers)
}

// TestRefusedKeyIsAnInvalidToken: a request refused for its key at the start (unknown, revoked,
// expired) is told so in WWW-Authenticate, as one refused while it ran is
// (TestRevokedKeyRegistersNothing); one without a key is told the scheme.
func TestRefusedKeyIsAnInvalidToken(t *testing.T) {
	e := newEnv(t, "", 0)
	_, expiring := e.newKey(t, "expiring", e.clock.Now().Add(time.Hour).Format(time.RFC3339))
	revokedID, revoked := e.newKey(t, "revoked", "")
	e.mustDo(t, e.admin, "DELETE", "/api/v1/apikeys/"+revokedID, "", 204, nil)
	e.clock.Add(time.Hour + time.Second)
	const invalidToken = `Bearer realm="devreg", error="invalid_token"`
	for _, tc := range []struct{ name, auth, want string }{
		{"401/no-key", "", `Bearer realm="devreg"`},
		{"401/unknown-key", "Bearer drk_unknown", invalidToken},
		{"401/revoked-key", "Bearer " + revoked, invalidToken},
		{"401/expired-key", "Bearer " + expiring, invalidToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", e.url+"/api/v1/devicetypes", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || got != tc.want {
				t.Errorf("answer = %d with WWW-Authenticate %q, want 401 with %q", resp.StatusCode, got, tc.want)
			}
		})
	}
}
