package console_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// noFollow is e's browser, but one that stops at a redirect, to read where it leads.
func (e *env) noFollow() *http.Client {
	return &http.Client{Jar: e.http.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// postSeeOther sends form to path and returns where the 303 that answers it leads.
func (e *env) postSeeOther(t *testing.T, path string, form url.Values) string {
	t.Helper()
	resp, err := e.noFollow().PostForm(e.url+path, form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(loc, "shown=") {
		t.Fatalf("POST %s = %d to %q, want 303 to a page that shows the secret", path, resp.StatusCode, loc)
	}
	return loc
}

// TestSecretsShownOnceAfterRedirect: each form that makes a secret (an API key, a generated
// credential secret, an enrollment group's key, made or rotated) answers with a redirect to a
// page that shows it; reloading that page makes nothing new and shows the secret no more. Another
// session that learns the address sees nothing and does not spend it.
func TestSecretsShownOnceAfterRedirect(t *testing.T) {
	pgtest.Each(t, testSecretsShownOnceAfterRedirect)
}

func testSecretsShownOnceAfterRedirect(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	other := &env{url: e.url}
	jar, _ := cookiejar.New(nil)
	other.http = &http.Client{Jar: jar}
	other.login(t)
	dt := e.createType(t, "Lock")
	if status, body := e.post(t, "/devices", url.Values{"device_id": {"lock-1"}, "secret": {"lock-1-secret"}, "device_type_id": {dt}}); status != 200 {
		t.Fatalf("register = %d:\n%s", status, body)
	}

	for _, tc := range []struct {
		name, path string
		form       url.Values
		secret     *regexp.Regexp
		gone       string // what the page says on a reload
		made       func() int
	}{
		{"apikey", "/apikeys", url.Values{"name": {"line-3 station"}, "scope": {"register"}}, regexp.MustCompile(`drk_[A-Za-z0-9_-]+`),
			"shown once already", func() int { keys, _ := e.srv.Service.ListAPIKeys(e.asAdmin()); return len(keys) }},
		{"credential", "/devices/lock-1/credentials", url.Values{"generate": {"true"}}, regexp.MustCompile(`id="new-secret" readonly value="([^"]+)"`),
			"shown once already", func() int { return len(e.credentials(t, "lock-1")) }},
		{"group", "/devicetypes/" + dt + "/enrollment_groups", url.Values{"name": {"Line 3"}, "id_pattern": {"^L-[0-9]{6}$"}, "max_devices": {"500"}},
			regexp.MustCompile(`id="new-group-key-value"[^>]*value="([^"]+)"`), "shown once already",
			func() int { gs, _ := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt); return len(gs) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.made()
			loc := e.postSeeOther(t, tc.path, tc.form)
			if tc.made() != before+1 {
				t.Fatalf("the post made %d, want 1", tc.made()-before)
			}
			// Another user's session learns the address: it sees no secret and spends nothing.
			if _, body := other.get(t, loc); tc.secret.MatchString(body) {
				t.Errorf("another session sees the secret at %s", loc)
			}
			status, body := e.get(t, loc)
			secret := tc.secret.FindString(body)
			if status != 200 || secret == "" {
				t.Fatalf("GET %s = %d without the secret:\n%s", loc, status, body)
			}
			if strings.Contains(loc, secret) {
				t.Errorf("the address %s carries the secret", loc)
			}
			status, body = e.get(t, loc)
			if status != 200 || tc.secret.MatchString(body) || !strings.Contains(body, tc.gone) {
				t.Errorf("reloading %s = %d, want the page without the secret, saying %q:\n%s", loc, status, tc.gone, body)
			}
			if tc.made() != before+1 {
				t.Errorf("after the reload there are %d more, want 1", tc.made()-before)
			}
		})
	}

	// Rotating a group's key shows the new key the same way.
	gs, err := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
	if err != nil || len(gs) != 1 {
		t.Fatalf("groups: %+v, %v", gs, err)
	}
	loc := e.postSeeOther(t, "/devicetypes/"+dt+"/enrollment_groups/"+gs[0].ID+"/keys", url.Values{})
	if _, body := e.get(t, loc); !strings.Contains(body, "new-group-key-value") {
		t.Errorf("the rotated key's page does not show it:\n%s", body)
	}
	if _, body := e.get(t, loc); strings.Contains(body, "new-group-key-value") {
		t.Errorf("reloading the rotated key's page shows it again")
	}
}

// TestAPIKeyNamesUnique: the console refuses a key name the account has already, when a key is
// made and when one is renamed, and says why; another account may use the name.
func TestAPIKeyNamesUnique(t *testing.T) { pgtest.Each(t, testAPIKeyNamesUnique) }

func testAPIKeyNamesUnique(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	e.postSeeOther(t, "/apikeys", url.Values{"name": {"station"}, "scope": {"register"}})
	status, body := e.post(t, "/apikeys", url.Values{"name": {"station"}, "scope": {"read"}})
	if status != 200 || !strings.Contains(body, `has an API key named &#34;station&#34; already`) {
		t.Errorf("a second key named station: %d\n%s", status, body)
	}
	keys, err := e.srv.Service.ListAPIKeys(e.asAdmin())
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %+v, %v", keys, err)
	}
	var other devreg.APIKey
	for _, k := range keys {
		if k.Name != "station" {
			other = k
		}
	}
	status, body = e.post(t, "/apikeys/"+other.ID, url.Values{"name": {"station"}})
	if status != 200 || !strings.Contains(body, `has an API key named &#34;station&#34; already`) {
		t.Errorf("renaming a key to station: %d\n%s", status, body)
	}
	if k, _ := e.srv.Service.APIKey(e.asAdmin(), other.ID); k.Name != other.Name {
		t.Errorf("the refused rename renamed the key to %q", k.Name)
	}
}
