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
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg/server"
)

// TestLoginRedirectStaysOnSite tries destinations that browsers or path cleaning turn into
// another host; after login each must lead to a path on this site.
func TestLoginRedirectStaysOnSite(t *testing.T) {
	e := newEnv(t, "")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ next, want string }{
		{"/./%5Cevil.example/x", "/devices"},
		{"/%09/evil.example/x", "/devices"},
		{"/\t/evil.example/x", "/devices"},
		{"//evil.example/x", "/devices"},
		{"/\\evil.example/x", "/devices"},
		{"/%2F%2Fevil.example/x", "/devices"},
		{"https://evil.example/x", "/devices"},
		{"/.//evil.example", "/evil.example"}, // a local path once cleaned
		{"devices", "/devices"},
		{"/batches?device_type_id=dt_1", "/batches?device_type_id=dt_1"},
		{"/devices/../apikeys", "/apikeys"},
	} {
		t.Run(tc.next, func(t *testing.T) {
			resp, err := noFollow.PostForm(e.url+"/login", url.Values{"email": {email}, "password": {password}, "next": {tc.next}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != tc.want {
				t.Fatalf("login with next=%q = %d to %q, want 303 to %q", tc.next, resp.StatusCode, resp.Header.Get("Location"), tc.want)
			}
		})
	}
}

// TestBrowserLoginRedirectStaysOnSite logs in through the form in Chromium with destinations that
// used to lead a freshly logged-in user to another host.
func TestBrowserLoginRedirectStaysOnSite(t *testing.T) {
	e := newEnv(t, "")
	for _, next := range []string{"/./%5Cevil.example/x", "/%09/evil.example/x"} {
		ctx := browser(t) // a fresh browser: not logged in
		must(t, chromedp.Do(ctx,
			chromedp.Navigate(e.url+"/login?next="+url.QueryEscape(next)),
			chromedp.WaitVisible(chromedp.CSS("#email")),
			chromedp.SendKeys(chromedp.CSS("#email"), email),
			chromedp.SendKeys(chromedp.CSS("#password"), password),
			chromedp.Click(chromedp.CSS("form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS("#f-type")), // the Devices page, where such a destination leads
		))
		where, err := chromedp.Run(ctx, chromedp.Location())
		must(t, err)
		if !strings.HasPrefix(where, e.url+"/devices") {
			t.Fatalf("after login with next=%q the browser is at %q, not on %s/devices", next, where, e.url)
		}
	}
}

// TestFormsLeaveNoTempFiles posts a large multipart file to forms that take no file: nothing may
// be parsed or left in the temporary folder.
func TestFormsLeaveNoTempFiles(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	for _, path := range []string{"/login", "/devicetypes", "/logout"} {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("email", email)
		mw.WriteField("password", password)
		fw, _ := mw.CreateFormFile("file", "big.bin")
		fw.Write(bytes.Repeat([]byte("x"), 40<<20)) // over net/http's 32 MiB kept in memory
		mw.Close()
		resp, err := e.http.Post(e.url+path, mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("multipart post to %s = %d, want it refused", path, resp.StatusCode)
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Fatalf("multipart post to %s left %d files in the temporary folder, such as %s", path, len(left), left[0].Name())
		}
	}
}

// TestConsoleSecurityHeaders checks that console pages cannot be framed or sniffed, and that the
// API docs get a policy of their own.
func TestConsoleSecurityHeaders(t *testing.T) {
	e := newEnv(t, "")
	for path, wantPolicy := range map[string]string{
		"/login":        "frame-ancestors 'none'",
		"/devices":      "frame-ancestors 'none'",
		"/docs":         "style-src 'self' 'unsafe-inline'",
		"/api/v1/nope":  "default-src 'self'",
		"/static/x.css": "default-src 'self'",
	} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), wantPolicy) || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") ||
			h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: CSP %q, X-Frame-Options %q, X-Content-Type-Options %q", path,
				h.Get("Content-Security-Policy"), h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
		}
	}
}

// TestUploadRefusalsArePages sends the bulk upload what it must refuse without failing: an empty
// file and a file over --max-body. Each gets a console page that says what to do, not a 500 and
// not the API's JSON.
func TestUploadRefusalsArePages(t *testing.T) {
	srv, err := server.Open(context.Background(), server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), MaxBody: 4096, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	if _, _, err := srv.Service.NewAccount(context.Background(), "Acme", email, password); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	e := &env{srv: srv, url: srv.URL(), http: &http.Client{Jar: jar}}
	e.login(t)
	dt := e.createType(t, "T1")
	for _, tc := range []struct {
		name, content string
		status        int
		says          string
	}{
		{"empty-file", "", 422, "lists no devices; nothing was registered"},
		{"blank-lines-only", "\n\n\r\n", 422, "lists no devices; nothing was registered"},
		{"over-max-body", strings.Repeat("device-0001, secretfordevice1,\n", 200), 413, "larger than this server takes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.upload(t, map[string]string{"device_type_id": dt}, "lot.csv", tc.content)
			if status != tc.status || !strings.Contains(body, "<html") || !strings.Contains(body, tc.says) {
				t.Errorf("upload = %d, want %d and a page saying %q:\n%s", status, tc.status, tc.says, body)
			}
		})
	}
}

// TestNoAssetListingAndNoHugeFilenames checks two echoes of what a visitor sends or asks for:
// the static folder lists nothing, and an upload's result page shows its file name cut short.
func TestNoAssetListingAndNoHugeFilenames(t *testing.T) {
	e := newEnv(t, "")
	if status, body := e.get(t, "/static/"); status != 404 || strings.Contains(body, "console.js") {
		t.Errorf("GET /static/ = %d, want 404 without a listing:\n%s", status, body)
	}
	e.login(t)
	dt := e.createType(t, "T1")
	name := strings.Repeat("n", 100_000) + ".csv"
	status, body := e.upload(t, map[string]string{"device_type_id": dt}, name, "device1, secretfordevice1")
	if status != 200 || strings.Contains(body, strings.Repeat("n", 256)) || !strings.Contains(body, strings.Repeat("n", 200)) {
		t.Errorf("upload of a file with a 100,000-character name = %d, %d bytes; want the name cut to 255 characters", status, len(body))
	}
}

// TestEditDeviceTypeTopics edits a device type's MQTT topic filters on its console page.
func TestEditDeviceTypeTopics(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "T1")
	if status, body := e.get(t, "/devicetypes/"+dt+"/edit"); status != 200 || !strings.Contains(body, "devices/{device_id}/#</textarea>") {
		t.Fatalf("edit page = %d, want the default topic filters in its text areas:\n%s", status, body)
	}
	status, body := e.post(t, "/devicetypes/"+dt, url.Values{"name": {"T1"}, "min_secret_length": {"8"},
		"mqtt_publish": {"devices/{device_id}/up\r\n\r\n  telemetry/{device_id}  \r\n"}, "mqtt_subscribe": {"devices/{device_id}/cmd/+"}})
	if status != 200 || !strings.Contains(body, "Device type saved.") {
		t.Fatalf("saving topics = %d:\n%s", status, body)
	}
	_, body = e.get(t, "/devicetypes/"+dt+"/edit")
	if body = html.UnescapeString(body); !strings.Contains(body, "devices/{device_id}/up\ntelemetry/{device_id}</textarea>") ||
		!strings.Contains(body, "devices/{device_id}/cmd/+</textarea>") {
		t.Errorf("edit page after saving does not show the new topics:\n%s", body)
	}
	status, body = e.post(t, "/devicetypes/"+dt, url.Values{"name": {"T1"}, "min_secret_length": {"8"}, "mqtt_publish": {"devices/#/up"}})
	if !strings.Contains(body, "may only be the last level") {
		t.Errorf("saving a bad topic filter = %d, want the reason shown:\n%s", status, body)
	}
}
