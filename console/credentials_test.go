package console_test

import (
	"bytes"
	"context"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
)

// asAdmin is a context in which the service answers for the env's account with an admin key.
func (e *env) asAdmin() context.Context {
	return devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: e.accountID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
}

// credentials reads a device's credentials from the service, not from the page.
func (e *env) credentials(t *testing.T, deviceID string) []devreg.Credential {
	t.Helper()
	creds, err := e.srv.Service.ListCredentials(e.asAdmin(), deviceID)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func (e *env) register(t *testing.T, typeID, deviceID, secret string) {
	t.Helper()
	if _, body := e.post(t, "/devices", url.Values{"device_id": {deviceID}, "secret": {secret}, "device_type_id": {typeID}}); !strings.Contains(body, "Device "+deviceID+" registered.") {
		t.Fatalf("registering %s:\n%s", deviceID, body)
	}
}

func findCredential(creds []devreg.Credential, id string) (devreg.Credential, bool) {
	for _, c := range creds {
		if c.ID == id {
			return c, true
		}
	}
	return devreg.Credential{}, false
}

var (
	addedPattern     = regexp.MustCompile(`Credential (cr_[A-Za-z0-9]+) added to device`)
	newSecretPattern = regexp.MustCompile(`id="new-secret" readonly value="([^"]*)"`)
	credIDPattern    = regexp.MustCompile(`Credential <code>(cr_[A-Za-z0-9]+)</code>`)
)

// TestCredentials manages a device's credentials on its console page: list, add a typed or a
// generated secret, disable, enable and delete, and the refusals shown as error pages.
func TestCredentials(t *testing.T) { pgtest.Each(t, testCredentials) }

func testCredentials(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	e.register(t, dt, "lock-1", "lock-secret-1")
	first := e.credentials(t, "lock-1")
	if len(first) != 1 || first[0].Source != devreg.CredentialFromRegistration {
		t.Fatalf("a registered device's credentials = %+v, want one from the registration", first)
	}
	// refused checks that a post got an error page that says why, and changed no credential.
	refused := func(t *testing.T, path string, form url.Values, wantStatus int, wantHeading, says string) {
		t.Helper()
		before := e.credentials(t, "lock-1")
		status, body := e.post(t, path, form)
		if status != wantStatus || !strings.Contains(body, "<h1>"+wantHeading+"</h1>") || !strings.Contains(body, says) {
			t.Errorf("post to %s = %d, want %d and a page %q saying %q:\n%s", path, status, wantStatus, wantHeading, says, body)
		}
		if diff := cmp.Diff(before, e.credentials(t, "lock-1")); diff != "" {
			t.Errorf("a refused post changed the credentials (-before +after):\n%s", diff)
		}
	}

	t.Run("lists-the-registration-credential", func(t *testing.T) {
		status, body := e.get(t, "/devices/lock-1")
		row := regexp.MustCompile(`(?s)<tr id="cred-` + first[0].ID + `">.*?</tr>`).FindString(body)
		for _, want := range []string{"<code>" + first[0].ID + "</code>", "no limit", `badge enabled`, "never", "registration", "Disable credential " + first[0].ID, "Delete credential " + first[0].ID} {
			if !strings.Contains(row, want) {
				t.Errorf("the credential's row lacks %q:\n%s", want, row)
			}
		}
		if status != 200 || !strings.Contains(body, `action="/devices/lock-1/credentials"`) || !strings.Contains(body, `type="datetime-local"`) ||
			!strings.Contains(body, "<strong>UTC</strong>") || !strings.Contains(body, "Generate a secret") {
			t.Errorf("device page = %d, want the form to add a credential, with times in UTC:\n%s", status, body)
		}
	})

	var typedID string
	t.Run("add-typed-secret", func(t *testing.T) {
		status, body := e.post(t, "/devices/lock-1/credentials", url.Values{"secret": {"lock-secret-2"},
			"not_before": {"2030-01-02T03:04"}, "not_after": {"2031-06-07T08:09:10"}, "generate": {"false"}})
		m := addedPattern.FindStringSubmatch(body)
		if status != 200 || m == nil {
			t.Fatalf("adding a typed secret = %d, want the device page saying it was added:\n%s", status, body)
		}
		typedID = m[1]
		if strings.Contains(body, "lock-secret-2") {
			t.Errorf("the page after adding a typed secret shows the secret")
		}
		c, ok := findCredential(e.credentials(t, "lock-1"), typedID)
		want := devreg.Credential{ID: typedID, CreatedAt: c.CreatedAt, Status: devreg.StatusEnabled, Source: devreg.CredentialFromConsole, Kind: devreg.CredentialSecret,
			NotBefore: new(time.Date(2030, 1, 2, 3, 4, 0, 0, time.UTC)), NotAfter: new(time.Date(2031, 6, 7, 8, 9, 10, 0, time.UTC))}
		if diff := cmp.Diff(want, c); !ok || diff != "" {
			t.Errorf("the typed credential as stored (-want +got), times read as UTC:\n%s", diff)
		}
		row := regexp.MustCompile(`(?s)<tr id="cred-` + typedID + `">.*?</tr>`).FindString(body)
		for _, want := range []string{"2030-01-02 03:04 UTC", "2031-06-07 08:09 UTC", "not yet valid", "console"} {
			if !strings.Contains(row, want) {
				t.Errorf("the new credential's row lacks %q:\n%s", want, row)
			}
		}
	})

	t.Run("add-refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			path    string
			form    url.Values
			status  int
			heading string
			says    string
		}{
			{name: "422/short-secret", form: url.Values{"secret": {"short"}}, status: 422, heading: "That did not work", says: "this device type needs at least 8"},
			{name: "422/no-secret", form: url.Values{"generate": {"false"}}, status: 422, heading: "That did not work", says: "type a secret for the new credential"},
			{name: "422/secret-and-generate", form: url.Values{"secret": {"long-enough-1"}, "generate": {"true"}}, status: 422, heading: "That did not work", says: "clear the secret field"},
			{name: "422/window-backwards", form: url.Values{"secret": {"long-enough-1"}, "not_before": {"2031-01-01T00:00"}, "not_after": {"2030-01-01T00:00"}}, status: 422, heading: "That did not work", says: "must be earlier than"},
			{name: "422/not-a-time", form: url.Values{"secret": {"long-enough-1"}, "not_after": {"tomorrow"}}, status: 422, heading: "That did not work", says: "Not after is not a date and time"},
			{name: "409/same-secret", form: url.Values{"secret": {"lock-secret-1"}}, status: 409, heading: "That did not work", says: "already has a credential with this secret"},
			{name: "404/unknown-device", path: "/devices/nope/credentials", form: url.Values{"generate": {"true"}}, status: 404, heading: "Not found", says: "no device nope"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				path := tc.path
				if path == "" {
					path = "/devices/lock-1/credentials"
				}
				refused(t, path, tc.form, tc.status, tc.heading, tc.says)
			})
		}
	})

	var generatedID string
	t.Run("generated-secret-shown-once", func(t *testing.T) {
		noFollow := &http.Client{Jar: e.http.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.PostForm(e.url+"/devices/lock-1/credentials", url.Values{"generate": {"true"}, "not_after": {"2099-01-01T00:00"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The post answers with a redirect to the page that shows the secret, once.
		posted, loc := resp, resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/devices/lock-1/credentials/new?") {
			t.Fatalf("generating a secret = %d to %q, want 303 to the page with the secret", resp.StatusCode, loc)
		}
		if resp, err = noFollow.Get(e.url + loc); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		body := buf.String()
		m := newSecretPattern.FindStringSubmatch(body)
		if resp.StatusCode != 200 || m == nil {
			t.Fatalf("the page after generating a secret = %d, want the page with the secret:\n%s", resp.StatusCode, body)
		}
		secret := m[1]
		if !regexp.MustCompile(`^[A-Za-z0-9]{32,}$`).MatchString(secret) {
			t.Errorf("generated secret %q: want at least 32 letters and digits", secret)
		}
		if n := strings.Count(body, secret); n != 1 {
			t.Errorf("the page shows the secret %d times, want once", n)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control of the page with the secret = %q, want no-store", got)
		}
		for _, r := range []*http.Response{posted, resp} {
			for _, h := range []string{"Location", "Set-Cookie", "Refresh"} {
				if strings.Contains(strings.Join(r.Header.Values(h), " "), secret) {
					t.Errorf("the secret is in the %s header", h)
				}
			}
		}
		if !strings.Contains(body, "it will not be shown again") || !strings.Contains(body, `data-copy="new-secret"`) || !strings.Contains(body, "2099-01-01 00:00 UTC") {
			t.Errorf("the page lacks the warning, the Copy button or the window:\n%s", body)
		}
		generatedID = credIDPattern.FindStringSubmatch(body)[1]
		dev, err := e.srv.Service.AuthenticateDevice(context.Background(), e.accountID, "lock-1", secret)
		if err != nil || dev.CredentialID != generatedID {
			t.Errorf("the generated secret authenticates as %q, %v; want credential %s", dev.CredentialID, err, generatedID)
		}
		_, page := e.get(t, "/devices/lock-1")
		if strings.Contains(page, secret) || !strings.Contains(page, `id="cred-`+generatedID+`"`) {
			t.Errorf("the device page afterwards shows the secret, or not the new credential")
		}
	})

	t.Run("disable-and-enable", func(t *testing.T) {
		path := "/devices/lock-1/credentials/" + generatedID + "/status"
		_, body := e.post(t, path, url.Values{"status": {"disabled"}})
		if !strings.Contains(body, "Credential "+generatedID+" is disabled.") || !strings.Contains(body, "Enable credential "+generatedID) {
			t.Errorf("disable: %s", body)
		}
		if c, _ := findCredential(e.credentials(t, "lock-1"), generatedID); c.Status != devreg.StatusDisabled {
			t.Errorf("after disabling, the credential is %s", c.Status)
		}
		_, body = e.post(t, path, url.Values{"status": {"enabled"}})
		if !strings.Contains(body, "Credential "+generatedID+" is enabled.") || !strings.Contains(body, "Disable credential "+generatedID) {
			t.Errorf("enable: %s", body)
		}
		if c, _ := findCredential(e.credentials(t, "lock-1"), generatedID); c.Status != devreg.StatusEnabled {
			t.Errorf("after enabling, the credential is %s", c.Status)
		}
		refused(t, path, url.Values{"status": {"paused"}}, 422, "That did not work", "status must be enabled or disabled")
	})

	t.Run("delete", func(t *testing.T) {
		_, body := e.post(t, "/devices/lock-1/credentials/"+typedID+"/delete", nil)
		if !strings.Contains(body, "Credential "+typedID+" deleted") || strings.Contains(body, `id="cred-`+typedID+`"`) {
			t.Errorf("delete: %s", body)
		}
		if _, ok := findCredential(e.credentials(t, "lock-1"), typedID); ok {
			t.Errorf("the deleted credential is still there")
		}
	})

	t.Run("404/unknown-credential", func(t *testing.T) {
		refused(t, "/devices/lock-1/credentials/cr_nope/status", url.Values{"status": {"disabled"}}, 404, "Not found", "no credential cr_nope")
		refused(t, "/devices/lock-1/credentials/cr_nope/delete", nil, 404, "Not found", "no credential cr_nope")
	})

	t.Run("409/last-enabled-credential", func(t *testing.T) {
		// lock-1 holds the registration's credential and the generated one; with one disabled,
		// the other is the last enabled one.
		e.post(t, "/devices/lock-1/credentials/"+generatedID+"/status", url.Values{"status": {"disabled"}})
		base := "/devices/lock-1/credentials/" + first[0].ID
		refused(t, base+"/status", url.Values{"status": {"disabled"}}, 409, "That did not work", "is the only credential that lets device lock-1 in now")
		refused(t, base+"/delete", nil, 409, "That did not work", "disable the device to stop it")
		e.post(t, "/devices/lock-1/credentials/"+generatedID+"/delete", nil)
		refused(t, base+"/delete", nil, 409, "That did not work", "is the only credential that lets device lock-1 in now")
		if creds := e.credentials(t, "lock-1"); len(creds) != 1 || creds[0].Status != devreg.StatusEnabled {
			t.Errorf("credentials after the refusals = %+v, want the registration's, enabled", creds)
		}
	})

	t.Run("409/sixth-credential", func(t *testing.T) {
		e.register(t, dt, "lock-full", "lock-full-secret-0")
		for i := 1; i < devreg.MaxCredentials; i++ {
			if _, body := e.post(t, "/devices/lock-full/credentials", url.Values{"secret": {"lock-full-secret-" + string(rune('0'+i))}}); !addedPattern.MatchString(body) {
				t.Fatalf("adding credential %d: %s", i+1, body)
			}
		}
		_, page := e.get(t, "/devices/lock-full")
		if !strings.Contains(page, "the most a device may have") || strings.Contains(page, `action="/devices/lock-full/credentials"`) {
			t.Errorf("a full device's page still offers to add a credential")
		}
		status, body := e.post(t, "/devices/lock-full/credentials", url.Values{"generate": {"true"}})
		if status != 409 || !strings.Contains(body, "the most a device may have") || newSecretPattern.MatchString(body) {
			t.Errorf("a sixth credential = %d, want 409 saying why:\n%s", status, body)
		}
		if n := len(e.credentials(t, "lock-full")); n != devreg.MaxCredentials {
			t.Errorf("the device holds %d credentials, want %d", n, devreg.MaxCredentials)
		}
	})

	t.Run("device-id-with-colons-and-dots", func(t *testing.T) {
		id := "AA:BB:CC.01"
		e.register(t, dt, id, "mac-secret-1")
		status, body := e.post(t, "/devices/"+id+"/credentials", url.Values{"generate": {"true"}})
		if status != 200 || !newSecretPattern.MatchString(body) || !strings.Contains(body, `href="/devices/`+id+`#credentials"`) {
			t.Fatalf("generating a secret for %s = %d:\n%s", id, status, body)
		}
		cred := credIDPattern.FindStringSubmatch(body)[1]
		if _, body := e.post(t, "/devices/"+id+"/credentials/"+cred+"/status", url.Values{"status": {"disabled"}}); !strings.Contains(body, "Credential "+cred+" is disabled.") ||
			!strings.Contains(body, `action="/devices/`+id+`/credentials/`+cred+`/status"`) {
			t.Errorf("disabling a credential of %s:\n%s", id, body)
		}
	})

	// The console has no roles: every user owns their account. What a user must not reach are
	// the devices of other accounts.
	t.Run("other-account", func(t *testing.T) {
		if _, _, err := e.srv.Service.NewAccount(context.Background(), "Rival", "rival@rival.test", password); err != nil {
			t.Fatal(err)
		}
		jar, _ := cookiejar.New(nil)
		rival := &env{srv: e.srv, url: e.url, http: &http.Client{Jar: jar}}
		if status, body := rival.post(t, "/login", url.Values{"email": {"rival@rival.test"}, "password": {password}}); status != 200 || !strings.Contains(body, "<h1>Devices</h1>") {
			t.Fatalf("rival login = %d", status)
		}
		before := e.credentials(t, "lock-1")
		if status, _ := rival.get(t, "/devices/lock-1"); status != 404 {
			t.Errorf("another account's device page = %d, want 404", status)
		}
		for path, form := range map[string]url.Values{
			"/devices/lock-1/credentials":                             {"generate": {"true"}},
			"/devices/lock-1/credentials/" + before[0].ID + "/status": {"status": {"disabled"}},
			"/devices/lock-1/credentials/" + before[0].ID + "/delete": nil,
		} {
			if status, body := rival.post(t, path, form); status != 404 || newSecretPattern.MatchString(body) {
				t.Errorf("another account's post to %s = %d, want 404", path, status)
			}
		}
		if diff := cmp.Diff(before, e.credentials(t, "lock-1")); diff != "" {
			t.Errorf("another account changed the credentials (-before +after):\n%s", diff)
		}
	})

	t.Run("cross-site-post-refused", func(t *testing.T) {
		before := e.credentials(t, "lock-1")
		for _, path := range []string{"/devices/lock-1/credentials", "/devices/lock-1/credentials/" + before[0].ID + "/delete"} {
			req, _ := http.NewRequest("POST", e.url+path, strings.NewReader("generate=true"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Sec-Fetch-Site", "cross-site")
			req.Header.Set("Origin", "https://evil.example")
			resp, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 403 {
				t.Errorf("cross-site post to %s = %d, want 403", path, resp.StatusCode)
			}
		}
		if diff := cmp.Diff(before, e.credentials(t, "lock-1")); diff != "" {
			t.Errorf("a cross-site post changed the credentials (-before +after):\n%s", diff)
		}
	})

	t.Run("multipart-refused", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("generate", "true")
		mw.Close()
		resp, err := e.http.Post(e.url+"/devices/lock-1/credentials", mw.FormDataContentType(), &buf)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("multipart post = %d, want 415", resp.StatusCode)
		}
	})
}

// TestEditRotationGrace sets a device type's rotation grace on its edit page.
func TestEditRotationGrace(t *testing.T) { pgtest.Each(t, testEditRotationGrace) }

func testEditRotationGrace(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "T1")
	grace := func() int {
		t.Helper()
		typ, err := e.srv.Service.DeviceType(e.asAdmin(), dt)
		if err != nil {
			t.Fatal(err)
		}
		return *typ.RotationGraceSeconds
	}
	listed := func() string {
		t.Helper()
		_, body := e.get(t, "/devicetypes")
		row := regexp.MustCompile(`(?s)<tr>\s*<td><a href="/devices\?device_type_id=` + dt + `">.*?</tr>`).FindString(body)
		cells := regexp.MustCompile(`<td class="num">([^<]*)</td>`).FindAllStringSubmatch(row, -1)
		if len(cells) != 4 || !strings.Contains(body, "Rotation grace</th>") {
			t.Fatalf("the Device Types page lacks a rotation grace column:\n%s", body)
		}
		return cells[1][1]
	}
	if status, body := e.get(t, "/devicetypes/"+dt+"/edit"); status != 200 || !strings.Contains(body, `<label for="rotation_grace">Rotation grace</label>`) ||
		!regexp.MustCompile(`name="rotation_grace"[^>]* value="7 days"`).MatchString(body) {
		t.Fatalf("edit page = %d, want the rotation grace field with the default:\n%s", status, body)
	}
	if got := listed(); got != "7 days" {
		t.Errorf("the Device Types page shows the default grace as %q, want 7 days", got)
	}
	save := func(t *testing.T, form url.Values) string {
		t.Helper()
		form.Set("name", "T1")
		form.Set("min_secret_length", "8")
		_, body := e.post(t, "/devicetypes/"+dt, form)
		return body
	}
	for _, tc := range []struct {
		name, value string
		says        string
		want        int
		listed      string
	}{
		{"ok/one-hour", "3600", "Device type saved.", 3600, "1 hour"},
		{"ok/zero", "0", "Device type saved.", 0, "none"},
		{"ok/most", "2592000", "Device type saved.", 2592000, "30 days"},
		{"invalid/too-long", "2592001", "rotation_grace_seconds must be between 0 and 2592000", 2592000, "30 days"},
		{"invalid/negative", "-1", "rotation_grace_seconds must be between 0 and 2592000", 2592000, "30 days"},
		{"invalid/not-a-number", "a week", "rotation grace seconds must be a whole number", 2592000, "30 days"},
		{"ok/90-seconds", "90", "Device type saved.", 90, "1 minute 30 seconds"},
		{"ok/blank-keeps", "", "Device type saved.", 90, "1 minute 30 seconds"},
	} {
		t.Run("seconds/"+tc.name, func(t *testing.T) {
			if body := save(t, url.Values{"rotation_grace_seconds": {tc.value}}); !strings.Contains(body, tc.says) {
				t.Errorf("saving %q: the page does not say %q:\n%s", tc.value, tc.says, body)
			}
			if got := grace(); got != tc.want {
				t.Errorf("grace after saving %q = %d, want %d", tc.value, got, tc.want)
			}
			if got := listed(); got != tc.listed {
				t.Errorf("the Device Types page shows %q, want %q", got, tc.listed)
			}
		})
	}
	// The edit form's own field takes a duration, and the page shows what it saved the same way.
	for _, tc := range []struct {
		name, value string
		says        string
		want        int
		shown       string
	}{
		{"ok/words", "3 days", "Device type saved.", 3 * 86400, "3 days"},
		{"ok/letters", "72h", "Device type saved.", 3 * 86400, "3 days"},
		{"ok/mixed", "1 day 12 hours", "Device type saved.", 36 * 3600, "1 day 12 hours"},
		{"ok/none", "none", "Device type saved.", 0, "none"},
		{"ok/most", "30 days", "Device type saved.", 2592000, "30 days"},
		{"invalid/too-long", "31 days", "rotation grace must be whole seconds from none to 30 days; &#34;31 days&#34; is not", 2592000, "30 days"},
		{"invalid/fraction", "1.5s", "rotation grace must be whole seconds", 2592000, "30 days"},
		{"invalid/words", "a week", "rotation grace: &#34;a week&#34; is not a duration", 2592000, "30 days"},
	} {
		t.Run("duration/"+tc.name, func(t *testing.T) {
			if body := save(t, url.Values{"rotation_grace": {tc.value}}); !strings.Contains(body, tc.says) {
				t.Errorf("saving %q: the page does not say %q:\n%s", tc.value, tc.says, body)
			}
			if got := grace(); got != tc.want {
				t.Errorf("grace after saving %q = %d, want %d", tc.value, got, tc.want)
			}
			if got := listed(); got != tc.shown {
				t.Errorf("the Device Types page shows %q, want %q", got, tc.shown)
			}
			if _, body := e.get(t, "/devicetypes/"+dt+"/edit"); !strings.Contains(body, `value="`+tc.shown+`"`) {
				t.Errorf("the edit form shows the grace not as %q", tc.shown)
			}
		})
	}
}
