package console_test

import (
	"bytes"
	"context"
	"html"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg/console"
	"devreg/internal/passwordtest"
	"devreg/internal/pgtest"
	"devreg/server"
)

type env struct {
	srv       *server.Server
	url       string
	http      *http.Client
	apiKey    string
	accountID string
}

const (
	email    = "owner@acme.test"
	password = "correct horse battery"
)

// newEnv starts a server on database with an account. Each of setup runs on the server before
// it serves (to give it a test clock, say).
func newEnv(t *testing.T, database string, setup ...func(*server.Server)) *env {
	t.Helper()
	// Webhooks may reach the tests' receivers, on 127.0.0.1.
	srv, err := server.Open(context.Background(), server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Database: database, Logger: slog.New(slog.DiscardHandler),
		WebhookAllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Service.HashPassword = passwordtest.Hash
	for _, fn := range setup {
		fn(srv)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	acct, key, err := srv.Service.NewAccount(context.Background(), "Acme", email, password)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	return &env{srv: srv, url: srv.URL(), apiKey: key, accountID: acct.ID, http: &http.Client{Jar: jar}}
}

func (e *env) login(t *testing.T) {
	t.Helper()
	status, body := e.post(t, "/login", url.Values{"email": {email}, "password": {password}})
	if status != 200 || !strings.Contains(body, "<h1>Devices</h1>") {
		t.Fatalf("login = %d, want the Devices page:\n%s", status, body)
	}
}

func (e *env) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := e.http.Get(e.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) post(t *testing.T, path string, form url.Values) (int, string) {
	t.Helper()
	resp, err := e.http.PostForm(e.url+path, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) upload(t *testing.T, fields map[string]string, filename, content string) (int, string) {
	t.Helper()
	resp, body := e.uploadTo(t, "/devices/upload", fields, filename, content)
	return resp.StatusCode, body
}

// uploadTo posts the bulk upload form to path.
func (e *env) uploadTo(t *testing.T, path string, fields map[string]string, filename, content string) (*http.Response, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, k := range []string{"device_type_id", "on_conflict", "credentials", "dry_run", "batch_name"} {
		if v, ok := fields[k]; ok {
			mw.WriteField(k, v)
		}
	}
	fw, _ := mw.CreateFormFile("file", filename)
	io.WriteString(fw, content)
	mw.Close()
	resp, err := e.http.Post(e.url+path, mw.FormDataContentType(), &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var typeIDPattern = regexp.MustCompile(`dt_[A-Za-z0-9]+`)

func (e *env) createType(t *testing.T, name string) string {
	t.Helper()
	status, body := e.post(t, "/devicetypes", url.Values{"name": {name}, "min_secret_length": {"8"}})
	if status != 200 || !strings.Contains(body, "Device type &#34;"+name+"&#34; created") {
		t.Fatalf("create type = %d:\n%s", status, body)
	}
	return typeIDPattern.FindString(body[strings.Index(body, "Its ID is"):])
}

// TestEveryPageRenders renders each page template at least once, so a template error fails here
// rather than in front of a user.
func TestEveryPageRenders(t *testing.T) { pgtest.Each(t, testEveryPageRenders) }

func testEveryPageRenders(t *testing.T, database string) {
	e := newEnv(t, database)
	rendered := map[string]bool{}
	check := func(page string, status int, body string, wantStatus int, want string) {
		t.Helper()
		if status != wantStatus || !strings.Contains(body, want) || !strings.Contains(body, "</html>") {
			t.Errorf("page %s: status %d, want %d with %q:\n%s", page, status, wantStatus, want, body)
		}
		rendered[page] = true
	}
	status, body := e.get(t, "/login")
	check("login", status, body, 200, `name="password"`)
	e.login(t)
	status, body = e.get(t, "/devicetypes")
	check("devicetypes", status, body, 200, "No device types yet")
	dt := e.createType(t, "Thermostat T1")
	status, body = e.get(t, "/devicetypes/"+dt+"/edit")
	check("devicetype_edit", status, body, 200, "Edit Thermostat T1")
	status, body = e.get(t, "/devicetypes/"+dt+"/cas")
	check("devicetype_cas", status, body, 200, "trusts no CA yet")
	status, body = e.get(t, "/devicetypes/"+dt+"/enrollment_groups")
	check("devicetype_groups", status, body, 200, "has no enrollment group yet")
	status, body = e.get(t, "/devices/upload")
	check("upload", status, body, 200, "CSV file of device IDs and secrets")
	status, body = e.upload(t, map[string]string{"device_type_id": dt}, "lot.csv", "device1, secretfordevice1")
	check("upload_result", status, body, 200, "Upload complete")
	status, body = e.get(t, "/devices?device_type_id="+dt)
	check("devices", status, body, 200, "device1")
	status, body = e.post(t, "/devices/bulk", url.Values{"action": {"delete"}, "device_id": {"device1"}, "back": {"device_type_id=" + dt}})
	check("devices_bulk_delete", status, body, 200, "Delete 1 devices?")
	status, body = e.post(t, "/devices/bulk", url.Values{"action": {"enable"}, "device_id": {"device1", "nosuch"}})
	check("devices_bulk_result", status, body, 200, "Enabled 1 of 2 devices")
	status, body = e.get(t, "/devices/device1")
	check("device", status, body, 200, "never — registered but not yet connected")
	status, body = e.post(t, "/devices/device1/credentials", url.Values{"generate": {"true"}})
	check("credential_new", status, body, 200, "it will not be shown again")
	status, body = e.get(t, "/devices/device1/delete")
	check("device_delete", status, body, 200, "Delete device device1?")
	status, body = e.get(t, "/batches")
	check("batches", status, body, 200, "lot.csv")
	batch := regexp.MustCompile(`/batches/(bat_[A-Za-z0-9]+)`).FindStringSubmatch(body)[1]
	status, body = e.get(t, "/batches/"+batch)
	check("batch", status, body, 200, "Disable batch")
	status, body = e.get(t, "/batches/"+batch+"/delete")
	check("batch_delete", status, body, 200, `Delete 1 device of lot <code class="hash">`+batch+`</code>?`)
	status, body = e.get(t, "/apikeys")
	check("apikeys", status, body, 200, "Create a key")
	keyID := regexp.MustCompile(`/apikeys/(key_[A-Za-z0-9]+)/edit`).FindStringSubmatch(body)[1]
	status, body = e.get(t, "/apikeys/"+keyID+"/edit")
	check("apikey_edit", status, body, 200, "Edit key owner (owner@acme.test)")
	status, body = e.get(t, "/audit")
	check("audit", status, body, 200, "devicetype.create")
	status, body = e.get(t, "/devices/nope")
	check("error", status, body, 404, "no device nope")
	status, body = e.get(t, "/account/password")
	check("password", status, body, 200, "Current password")
	status, body = e.post(t, "/users", url.Values{"email": {"dana@acme.test"}, "role": {"developer"}})
	check("users", status, body, 200, "it is shown only this once")
	link := regexp.MustCompile(`value="(http[^"]+/invitation\?token=[^"]+)"`).FindStringSubmatch(body)[1]
	status, body = e.get(t, strings.TrimPrefix(html.UnescapeString(link), e.url))
	check("invitation", status, body, 200, "dana@acme.test")
	status, body = e.post(t, "/webhooks", url.Values{"url": {"http://127.0.0.1:9/devreg"}, "event_type": {"devices.registered"}})
	check("webhooks", status, body, 200, "it is shown only this once")
	hook := regexp.MustCompile(`/webhooks/(whk_[A-Za-z0-9]+)`).FindStringSubmatch(body)[1]
	status, body = e.get(t, "/webhooks/"+hook)
	check("webhook", status, body, 200, "Send test event")

	h, err := console.New(nil, nil, console.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var all, got []string
	all = h.Pages()
	for p := range rendered {
		got = append(got, p)
	}
	sort.Strings(all)
	sort.Strings(got)
	if diff := cmp.Diff(all, got); diff != "" {
		t.Errorf("pages rendered (-all +rendered):\n%s", diff)
	}
}

func TestConsoleFlows(t *testing.T) { pgtest.Each(t, testConsoleFlows) }

func testConsoleFlows(t *testing.T, database string) {
	e := newEnv(t, database)
	if status, body := e.get(t, "/devices"); status != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("/devices before login = %d, want the login page", status)
	}
	if status, body := e.post(t, "/login", url.Values{"email": {email}, "password": {"wrong"}}); status != 401 || !strings.Contains(body, "wrong email or password") {
		t.Errorf("wrong password = %d, want 401 saying so", status)
	}
	e.login(t)
	dt := e.createType(t, "Lock")
	other := e.createType(t, "Gateway")
	if _, body := e.post(t, "/devicetypes", url.Values{"name": {"Lock"}}); !strings.Contains(body, "already exists") {
		t.Errorf("duplicate type name: no clear message")
	}

	t.Run("register-one", func(t *testing.T) {
		_, body := e.post(t, "/devices", url.Values{"device_id": {"lock-1"}, "secret": {"lock-secret-1"}, "device_type_id": {dt}})
		if !strings.Contains(body, "Device lock-1 registered.") {
			t.Errorf("no confirmation:\n%s", body)
		}
		_, body = e.post(t, "/devices", url.Values{"device_id": {"lock 2"}, "secret": {"lock-secret-2"}, "device_type_id": {dt}})
		if !strings.Contains(body, "lock 2 was not registered: device ID contains a space.") {
			t.Errorf("bad ID: no clear message:\n%s", body)
		}
	})
	t.Run("upload-bad-file-registers-nothing", func(t *testing.T) {
		status, body := e.upload(t, map[string]string{"device_type_id": dt}, "bad.csv", "ok-1, secret-ok-1,\nbad id, secret-bad-1,\nok-2, short")
		if status != 422 || !strings.Contains(body, "nothing was registered") || !strings.Contains(body, "device ID contains a space") ||
			!strings.Contains(body, "<td class=\"num\">2</td><td class=\"num\">2</td>") { // the second entry, on line 2: both from 1
			t.Errorf("bad file = %d:\n%s", status, body)
		}
		if _, body := e.get(t, "/devices?prefix=ok-"); strings.Contains(body, "ok-1") {
			t.Errorf("a refused upload registered ok-1")
		}
	})
	t.Run("upload-check-only", func(t *testing.T) {
		status, body := e.upload(t, map[string]string{"device_type_id": dt, "dry_run": "true"}, "lot.csv", "d-1, secret-d-1, d-2, secret-d-2")
		if status != 200 || !strings.Contains(body, "Check passed — nothing was registered") || !strings.Contains(body, `<dd id="created">2</dd>`) {
			t.Errorf("check only = %d:\n%s", status, body)
		}
		if _, body := e.get(t, "/devices?prefix=d-"); strings.Contains(body, "d-1") {
			t.Errorf("check only registered d-1")
		}
	})
	t.Run("filter-by-type", func(t *testing.T) {
		e.upload(t, map[string]string{"device_type_id": other}, "gw.csv", "gw-1, secret-gw-1")
		_, body := e.get(t, "/devices?device_type_id="+other)
		if !strings.Contains(body, "gw-1") || strings.Contains(body, "lock-1") || !strings.Contains(body, "1 devices of type Gateway.") {
			t.Errorf("Gateway filter:\n%s", body)
		}
	})
	t.Run("disable-and-delete-device", func(t *testing.T) {
		_, body := e.post(t, "/devices/lock-1/status", url.Values{"status": {"disabled"}})
		if !strings.Contains(body, "Device lock-1 is disabled.") {
			t.Errorf("disable: %s", body)
		}
		_, body = e.post(t, "/devices/lock-1/delete", nil)
		if !strings.Contains(body, "Device lock-1 deleted.") {
			t.Errorf("delete: %s", body)
		}
		if status, _ := e.get(t, "/devices/lock-1"); status != 404 {
			t.Errorf("deleted device page = %d, want 404", status)
		}
	})
	t.Run("api-key-shown-once", func(t *testing.T) {
		_, body := e.post(t, "/apikeys", url.Values{"name": {"line-3 station"}, "scope": {"register"}})
		key := regexp.MustCompile(`drk_[A-Za-z0-9]+`).FindString(body)
		if key == "" || !strings.Contains(body, "shown only this once") {
			t.Fatalf("new key not shown:\n%s", body)
		}
		if _, body := e.get(t, "/apikeys"); strings.Contains(body, key) || !strings.Contains(body, "line-3 station") {
			t.Errorf("key list shows the key again, or not the key's name")
		}
	})
	t.Run("cross-site-post-refused", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.url+"/devicetypes", strings.NewReader("name=Evil"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("cross-site post = %d, want 403", resp.StatusCode)
		}
		if _, body := e.get(t, "/devicetypes"); strings.Contains(body, "Evil") {
			t.Errorf("cross-site post created a type")
		}
	})
	t.Run("logout", func(t *testing.T) {
		_, body := e.post(t, "/logout", nil)
		if !strings.Contains(body, "You are logged out.") {
			t.Errorf("logout: %s", body)
		}
		if _, body := e.get(t, "/devices"); !strings.Contains(body, `name="password"`) {
			t.Errorf("after logout the devices page does not ask to log in")
		}
	})
}

func TestLoginThrottle(t *testing.T) { pgtest.Each(t, testLoginThrottle) }

func testLoginThrottle(t *testing.T, database string) {
	e := newEnv(t, database)
	for range 5 {
		e.post(t, "/login", url.Values{"email": {email}, "password": {"wrong"}})
	}
	status, body := e.post(t, "/login", url.Values{"email": {email}, "password": {password}})
	if status != 429 || !strings.Contains(body, "too many failed logins") {
		t.Errorf("sixth attempt, right password = %d, want 429:\n%s", status, body)
	}
}

// postLogins posts logins for the emails to /login all at once, without following redirects,
// and returns each answer's status and Retry-After header.
func (e *env) postLogins(t *testing.T, emails []string, password string) (statuses []int, retryAfters []string) {
	t.Helper()
	type answer struct {
		status int
		retry  string
	}
	answers := make(chan answer, len(emails))
	start := make(chan struct{})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var wg sync.WaitGroup
	for _, addr := range emails {
		wg.Go(func() {
			<-start
			resp, err := hc.PostForm(e.url+"/login", url.Values{"email": {addr}, "password": {password}})
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After")}
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	for a := range answers {
		statuses, retryAfters = append(statuses, a.status), append(retryAfters, a.retry)
	}
	return statuses, retryAfters
}

// TestParallelWrongLogins posts 20 wrong passwords for one email at once: at most 5 are checked
// (401), the rest are refused unchecked (429 with Retry-After). One of the 5 may find the server
// too busy to check it (503).
func TestParallelWrongLogins(t *testing.T) { pgtest.Each(t, testParallelWrongLogins) }

func testParallelWrongLogins(t *testing.T, database string) {
	e := newEnv(t, database)
	emails := make([]string, 20)
	for i := range emails {
		emails[i] = email
	}
	statuses, retries := e.postLogins(t, emails, "wrong password")
	counts := map[int]int{}
	for i, status := range statuses {
		counts[status]++
		if n, _ := strconv.Atoi(retries[i]); status == 429 && (n <= 0 || n > 15*60) {
			t.Errorf("429 with Retry-After %q", retries[i])
		}
	}
	if counts[401] > 5 || counts[429] < len(emails)-5 || counts[401]+counts[429]+counts[503] != len(emails) {
		t.Errorf("answers to %d parallel wrong logins: %v; want at most 5 checked (401) or busy (503), the rest 429", len(emails), counts)
	}
}

// TestBusyLogin posts many logins at once to a server with one password hashing slot: those that
// find no slot within two seconds get the login page again with 503 and Retry-After, the others
// their usual answer.
func TestBusyLogin(t *testing.T) { pgtest.Each(t, testBusyLogin) }

func testBusyLogin(t *testing.T, database string) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the service sizes its slots when it starts
	e := newEnv(t, database)
	emails := make([]string, 80) // more than one slot can check in two seconds
	for i := range emails {
		emails[i] = "nobody-" + strconv.Itoa(i) + "@acme.test"
	}
	statuses, retries := e.postLogins(t, emails, "guess")
	counts := map[int]int{}
	for i, status := range statuses {
		counts[status]++
		if status == 503 && retries[i] != "2" {
			t.Errorf("503 with Retry-After %q, want 2", retries[i])
		}
	}
	if counts[503] == 0 || counts[401]+counts[503] != len(emails) {
		t.Errorf("answers to %d parallel logins with one hashing slot: %v; want 401 or 503, some 503", len(emails), counts)
	}
	status, body := e.post(t, "/login", url.Values{"email": {email}, "password": {password}})
	if status != 200 || !strings.Contains(body, "<h1>Devices</h1>") {
		t.Errorf("login once the server is idle = %d", status)
	}
}
