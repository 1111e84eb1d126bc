package console_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestAttack24ConsoleGroupFormsRefuseCrossSite: every form of the enrollment groups page
// (create, disable, rotate the key, delete), posted from another site with the admin's cookie,
// is refused and changes nothing; the answer that shows a new key is not stored, and the key is
// in no cookie.
func TestAttack24ConsoleGroupFormsRefuseCrossSite(t *testing.T) {
	pgtest.Each(t, testAttack24ConsoleGroupFormsRefuseCrossSite)
}

func testAttack24ConsoleGroupFormsRefuseCrossSite(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	page := "/devicetypes/" + dt + "/enrollment_groups"

	resp, err := e.http.PostForm(e.url+page, url.Values{"name": {"Line 1"}, "id_pattern": {"^L-[0-9]+$"}, "max_devices": {"5"}, "temporary": {"on"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := groupKeyShown.FindStringSubmatch(string(body))
	if resp.StatusCode != 200 || m == nil {
		t.Fatalf("create = %d, no key shown", resp.StatusCode)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the page with the new key says Cache-Control %q; want no-store", cc)
	}
	u, _ := url.Parse(e.url)
	for _, c := range e.http.Jar.Cookies(u) {
		if strings.Contains(c.Value, m[1]) || strings.Contains(c.Value, url.QueryEscape(m[1])) {
			t.Errorf("cookie %s holds the group key", c.Name)
		}
	}
	groups, err := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups: %v %v", groups, err)
	}
	g := groups[0]
	for _, f := range []struct {
		path string
		form url.Values
	}{
		{page, url.Values{"name": {"Evil"}, "id_pattern": {"^E-[0-9]+$"}, "max_devices": {"5"}}},
		{page + "/" + g.ID + "/status", url.Values{"status": {"disabled"}}},
		{page + "/" + g.ID + "/keys", url.Values{}},
		{page + "/" + g.ID + "/delete", url.Values{}},
	} {
		req, _ := http.NewRequest("POST", e.url+f.path, strings.NewReader(f.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || groupKeyShown.Match(b) {
			t.Errorf("cross-site post to %s = %d; want 403, no key", f.path, resp.StatusCode)
		}
	}
	after, err := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
	if err != nil || len(after) != 1 || after[0].Status != devreg.StatusEnabled || len(after[0].Keys) != 1 {
		t.Errorf("cross-site posts changed the groups: %+v %v", after, err)
	}
}
