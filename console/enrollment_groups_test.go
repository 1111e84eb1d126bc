package console_test

import (
	"encoding/base64"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// groupKeyShown is the group key in the page that shows it once.
var groupKeyShown = regexp.MustCompile(`id="new-group-key-value" readonly value="([^"]+)"`)

// TestConsoleEnrollmentGroups creates an enrollment group with the console's form, which shows
// its key on that answer only; a bad form is refused saying why; the group is disabled,
// enabled, given a new key and deleted from its row.
func TestConsoleEnrollmentGroups(t *testing.T) { pgtest.Each(t, testConsoleEnrollmentGroups) }

func testConsoleEnrollmentGroups(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	page := "/devicetypes/" + dt + "/enrollment_groups"
	if _, body := e.get(t, "/devicetypes"); !strings.Contains(body, `href="`+page+`"`) {
		t.Errorf("the device types page does not link to the type's enrollment groups")
	}

	status, body := e.post(t, page, url.Values{"name": {"Line 3"}, "id_pattern": {"^L-[0-9]{6}$"}, "max_devices": {"500"}, "max_per_hour": {"50"},
		"not_after": {"2027-06-30T12:00"}, "temporary": {"on"}})
	m := groupKeyShown.FindStringSubmatch(body)
	if status != 200 || m == nil || !strings.Contains(body, "Group “Line 3” created") {
		t.Fatalf("create = %d, no key shown:\n%s", status, body)
	}
	key := html.UnescapeString(m[1])
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 32 {
		t.Fatalf("the key shown is not base64 of 32 bytes: %v", err)
	}
	groups, err := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
	if err != nil || len(groups) != 1 {
		t.Fatalf("groups: %v %v", groups, err)
	}
	g := groups[0]
	if g.Name != "Line 3" || g.IDPattern != "^L-[0-9]{6}$" || g.MaxDevices != 500 || g.MaxPerHour != 50 || !g.Temporary ||
		g.NotAfter == nil || g.NotAfter.Format("2006-01-02T15:04Z07:00") != "2027-06-30T12:00Z" || g.NotBefore != nil {
		t.Errorf("the form made %+v", g)
	}
	_, body = e.get(t, page)
	if strings.Contains(html.UnescapeString(body), key) || strings.Contains(body, "new-group-key") {
		t.Errorf("the page shows the group key again")
	}
	for _, want := range []string{"Line 3", "^L-[0-9]{6}$", "0 / 500", "until 2027-06-30 12:00 UTC", g.Keys[0].ID, "no end"} {
		if !strings.Contains(html.UnescapeString(body), want) {
			t.Errorf("the group's row does not show %q", want)
		}
	}

	// A first connection with a wrong secret is counted on the group's row.
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {e.accountID}}
	req, _ := http.NewRequest("POST", e.url+"/device/v1/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("L-000001", "not-the-derived-secret-of-L-000001")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong first connection = %v, %v; want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	_, body = e.get(t, page)
	if !regexp.MustCompile(`class="num group-failures">1<`).MatchString(body) {
		t.Errorf("the group's row does not count the refused first connection")
	}

	// Refusals say why and create nothing.
	for _, tc := range []struct {
		form url.Values
		says string
	}{
		{url.Values{"name": {"Bad"}, "id_pattern": {"L-[0-9]+"}, "max_devices": {"5"}}, "ID pattern is not anchored"},
		{url.Values{"name": {"Bad"}, "id_pattern": {"^M$"}, "max_devices": {""}}, "max_devices is required"},
		{url.Values{"name": {"Bad"}, "id_pattern": {"^M$"}, "max_devices": {"many"}}, "max devices must be a whole number"},
		{url.Values{"name": {"Bad"}, "id_pattern": {"^M$"}, "max_devices": {"5"}, "not_before": {"2027-02-01T00:00"}, "not_after": {"2027-01-01T00:00"}}, "must be before not_after"},
		{url.Values{"name": {"line 3"}, "id_pattern": {"^M$"}, "max_devices": {"5"}}, "named &#34;Line 3&#34; already"},
	} {
		_, body := e.post(t, page, tc.form)
		if !strings.Contains(body, tc.says) || groupKeyShown.MatchString(body) {
			t.Errorf("%v: the page does not say %q", tc.form, tc.says)
		}
	}

	// Disable, enable.
	_, body = e.post(t, page+"/"+g.ID+"/status", url.Values{"status": {"disabled"}})
	if !strings.Contains(body, "Group Line 3 is disabled") || !strings.Contains(body, `<span class="badge disabled">disabled</span>`) {
		t.Errorf("after disabling:\n%s", body)
	}
	_, body = e.post(t, page+"/"+g.ID+"/status", url.Values{"status": {"enabled"}})
	if !strings.Contains(body, "Group Line 3 is enabled") {
		t.Errorf("after enabling:\n%s", body)
	}

	// Rotate: a new key, shown once; the old one ends when the form says.
	_, body = e.post(t, page+"/"+g.ID+"/keys", url.Values{"old_keys_not_after": {"2027-01-15T00:00"}})
	m = groupKeyShown.FindStringSubmatch(body)
	if m == nil || html.UnescapeString(m[1]) == key || !strings.Contains(body, "work until 2027-01-15 00:00 UTC") {
		t.Fatalf("after a rotation:\n%s", body)
	}
	g, err = e.srv.Service.EnrollmentGroup(e.asAdmin(), dt, g.ID)
	if err != nil || len(g.Keys) != 2 || g.Keys[0].NotAfter == nil || g.Keys[0].NotAfter.Format("2006-01-02") != "2027-01-15" || g.Keys[1].NotAfter != nil {
		t.Errorf("keys after the rotation: %+v %v", g.Keys, err)
	}

	// Delete.
	_, body = e.post(t, page+"/"+g.ID+"/delete", nil)
	if !strings.Contains(body, "Group deleted") || !strings.Contains(body, "has no enrollment group yet") {
		t.Errorf("after deleting:\n%s", body)
	}
	if _, err := e.srv.Service.EnrollmentGroup(e.asAdmin(), dt, g.ID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("the deleted group: %v", err)
	}
}
