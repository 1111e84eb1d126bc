package console_test

import (
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
)

// key returns the account's key named name, as the service has it.
func (e *env) key(t *testing.T, name string) devreg.APIKey {
	t.Helper()
	keys, err := e.srv.Service.ListAPIKeys(e.asAdmin())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(keys, func(k devreg.APIKey) bool { return k.Name == name })
	if i < 0 {
		t.Fatalf("no key %q", name)
	}
	return keys[i]
}

// keyRow returns the text of a key's row on the API Keys page, tags removed.
func keyRow(t *testing.T, body, id string) string {
	t.Helper()
	row := regexp.MustCompile(`(?s)<tr id="key-` + id + `">.*?</tr>`).FindString(body)
	if row == "" {
		t.Fatalf("the page lists no key %s:\n%s", id, body)
	}
	return strings.Join(strings.Fields(html.UnescapeString(tagPattern.ReplaceAllString(row, " "))), " ")
}

// TestAPIKeys creates a restricted, expiring key on the API Keys page and reads it back in the
// list (types, expiry, last use), edits its name and expiry, and sees refusals as the page's
// error messages.
func TestAPIKeys(t *testing.T) { pgtest.Each(t, testAPIKeys) }

func testAPIKeys(t *testing.T, database string) {
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	clk := newClock(t0)
	e := newEnv(t, database, clk.use)
	e.login(t)
	lock, gateway := e.createType(t, "Lock"), e.createType(t, "Gateway")
	e.register(t, lock, "lock-1", "lock-secret-1")
	e.register(t, gateway, "gw-1", "gateway-secret-1")
	expires := t0.Add(30 * 24 * time.Hour)

	if _, body := e.get(t, "/apikeys"); !strings.Contains(body, `name="device_type_id" value="`+lock+`"`) ||
		!strings.Contains(body, `name="expires_at" type="datetime-local"`) || !strings.Contains(body, "Expires (UTC, optional)") {
		t.Fatalf("the create form lacks the device types or the expiry:\n%s", body)
	}

	var key string
	t.Run("create-restricted-expiring", func(t *testing.T) {
		status, body := e.post(t, "/apikeys", url.Values{"name": {"line-3 station"}, "scope": {"register"},
			"device_type_id": {lock}, "expires_at": {expires.Format("2006-01-02T15:04")}})
		key = regexp.MustCompile(`drk_[A-Za-z0-9]+`).FindString(body)
		if status != 200 || key == "" || !strings.Contains(body, "Device types: Lock. Expires: "+expires.Format("2006-01-02 15:04")+" UTC.") {
			t.Fatalf("create = %d, want the new key with its types and expiry:\n%s", status, body)
		}
		k := e.key(t, "line-3 station")
		if diff := cmp.Diff([]string{lock}, k.DeviceTypeIDs); diff != "" || k.ExpiresAt == nil || !k.ExpiresAt.Equal(expires) || k.Scope != devreg.ScopeRegister {
			t.Errorf("stored key: types %v, expires %v, scope %s; want [%s], %v (read as UTC), register", k.DeviceTypeIDs, k.ExpiresAt, k.Scope, lock, expires)
		}
		row := keyRow(t, body, k.ID)
		if !containsAll(row, []string{"line-3 station", "register", "Lock", expires.Format("2006-01-02 15:04") + " UTC", "never"}) ||
			strings.Contains(row, "Gateway") || strings.Contains(row, "expired") {
			t.Errorf("the key's row reads %q", row)
		}
	})
	t.Run("restriction-works", func(t *testing.T) {
		req, _ := http.NewRequest("GET", e.url+"/api/v1/devices/gw-1", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("a Lock key reading a Gateway = %d, want 404", resp.StatusCode)
		}
		// The use shows in the list.
		_, body := e.get(t, "/apikeys")
		// Scope, types, created, expires, last used.
		if row := keyRow(t, body, e.key(t, "line-3 station").ID); !strings.Contains(row,
			"register Lock "+t0.Format("2006-01-02 15:04")+" UTC "+expires.Format("2006-01-02 15:04")+" UTC "+t0.Format("2006-01-02 15:04")+" UTC") {
			t.Errorf("after its use the key's row reads %q, want the last use", row)
		}
	})
	t.Run("unrestricted-never-expires", func(t *testing.T) {
		_, body := e.post(t, "/apikeys", url.Values{"name": {"reader"}, "scope": {"read"}, "expires_at": {""}})
		k := e.key(t, "reader")
		if k.DeviceTypeIDs != nil || k.ExpiresAt != nil {
			t.Errorf("stored key: types %v, expires %v; want all types, no expiry", k.DeviceTypeIDs, k.ExpiresAt)
		}
		if row := keyRow(t, body, k.ID); !containsAll(row, []string{"read all", "UTC never never"}) {
			t.Errorf("the key's row reads %q", row)
		}
	})

	for _, tc := range []struct {
		name string
		form url.Values
		says string
	}{
		{"422/admin-restricted", url.Values{"name": {"bad"}, "scope": {"admin"}, "device_type_id": {lock}}, "an admin key cannot be restricted to device types"},
		{"422/expiry-not-a-time", url.Values{"name": {"bad"}, "scope": {"read"}, "expires_at": {"tomorrow"}}, "Expires is not a date and time"},
		{"422/expiry-past", url.Values{"name": {"bad"}, "scope": {"read"}, "expires_at": {t0.Add(-time.Minute).Format("2006-01-02T15:04")}}, "must be in the future"},
		{"422/unknown-type", url.Values{"name": {"bad"}, "scope": {"read"}, "device_type_id": {"dt_nope"}}, "there is no device type dt_nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.post(t, "/apikeys", tc.form)
			if status != 200 || !strings.Contains(body, `<p class="flash error" role="status">`) || !strings.Contains(html.UnescapeString(body), tc.says) {
				t.Errorf("create = %d, want the API Keys page with an error saying %q:\n%s", status, tc.says, body)
			}
			if keys, _ := e.srv.Service.ListAPIKeys(e.asAdmin()); slices.ContainsFunc(keys, func(k devreg.APIKey) bool { return k.Name == "bad" }) {
				t.Errorf("a refused form created a key")
			}
		})
	}

	t.Run("edit", func(t *testing.T) {
		k := e.key(t, "line-3 station")
		status, body := e.get(t, "/apikeys/"+k.ID+"/edit")
		if status != 200 || !strings.Contains(body, `value="`+expires.Format("2006-01-02T15:04")+`"`) || !strings.Contains(body, "Lock") {
			t.Fatalf("edit page = %d, want the expiry in its field:\n%s", status, body)
		}
		was := expires.Format("2006-01-02T15:04")
		save := func(form url.Values) string {
			t.Helper()
			form.Set("expires_was", was)
			_, body := e.post(t, "/apikeys/"+k.ID, form)
			return body
		}
		// A new name keeps the expiry.
		if body := save(url.Values{"name": {"line-3"}, "expires_at": {was}}); !strings.Contains(body, "Key &#34;line-3&#34; saved.") {
			t.Errorf("rename: %s", body)
		}
		if got := e.key(t, "line-3"); !got.ExpiresAt.Equal(expires) {
			t.Errorf("after a rename the key expires at %v, want %v", got.ExpiresAt, expires)
		}
		later := expires.Add(24 * time.Hour)
		save(url.Values{"name": {"line-3"}, "expires_at": {later.Format("2006-01-02T15:04:05")}})
		if got := e.key(t, "line-3"); got.ExpiresAt == nil || !got.ExpiresAt.Equal(later) {
			t.Errorf("after a new expiry the key expires at %v, want %v", got.ExpiresAt, later)
		}
		save(url.Values{"name": {"line-3"}, "expires_at": {""}})
		if got := e.key(t, "line-3"); got.ExpiresAt != nil {
			t.Errorf("after clearing the expiry the key expires at %v", got.ExpiresAt)
		}
		body = save(url.Values{"name": {"line-3"}, "expires_at": {t0.Add(-time.Hour).Format("2006-01-02T15:04")}})
		if !strings.Contains(body, `<p class="flash error" role="status">`) || !strings.Contains(body, "must be in the future") || !strings.Contains(body, "Edit key line-3") {
			t.Errorf("a past expiry: want the edit page saying why:\n%s", body)
		}
		if status, body := e.get(t, "/apikeys/key_nope/edit"); status != 404 || !strings.Contains(body, "Not found") {
			t.Errorf("editing an unknown key = %d", status)
		}
	})

	t.Run("expired", func(t *testing.T) {
		short := t0.Add(2 * time.Hour)
		e.post(t, "/apikeys", url.Values{"name": {"temp"}, "scope": {"read"}, "expires_at": {short.Format("2006-01-02T15:04")}})
		clk.Set(short)
		_, body := e.get(t, "/apikeys")
		k := e.key(t, "temp")
		if row := keyRow(t, body, k.ID); !strings.Contains(row, short.Format("2006-01-02 15:04")+" UTC expired") {
			t.Errorf("the expired key's row reads %q", row)
		}
		// Renaming an expired key leaves its expiry (in the past) alone.
		_, body = e.post(t, "/apikeys/"+k.ID, url.Values{"name": {"temp (old)"}, "expires_at": {short.Format("2006-01-02T15:04")}, "expires_was": {short.Format("2006-01-02T15:04")}})
		if !strings.Contains(body, "saved.") {
			t.Errorf("renaming an expired key:\n%s", body)
		}
		if got := e.key(t, "temp (old)"); got.ExpiresAt == nil || !got.ExpiresAt.Equal(short) {
			t.Errorf("after renaming, the expired key expires at %v, want %v", got.ExpiresAt, short)
		}
	})
}

// TestBrokerTLSKey: the API Keys form makes a broker key that trusts the broker's TLS when its
// box is ticked, the list says so, and a register key with the box ticked is refused with the
// reason on the page.
func TestBrokerTLSKey(t *testing.T) { pgtest.Each(t, testBrokerTLSKey) }

func testBrokerTLSKey(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	if _, body := e.get(t, "/apikeys"); !strings.Contains(body, `name="trusts_broker_tls"`) {
		t.Fatalf("the create form has no trusts_broker_tls box:\n%s", body)
	}
	status, body := e.post(t, "/apikeys", url.Values{"name": {"rabbitmq tls"}, "scope": {"broker"}, "trusts_broker_tls": {"on"}})
	k := e.key(t, "rabbitmq tls")
	if status != 200 || !k.TrustsBrokerTLS || !strings.Contains(html.UnescapeString(body), "(broker, trusts the broker's TLS)") ||
		!strings.Contains(keyRow(t, body, k.ID), "broker trusts the broker's TLS") {
		t.Fatalf("create = %d, key %+v, want a broker key that trusts the broker's TLS, said on the page:\n%s", status, k, body)
	}
	status, body = e.post(t, "/apikeys", url.Values{"name": {"station"}, "scope": {"register"}, "trusts_broker_tls": {"on"}})
	if status != 200 || !strings.Contains(body, `<p class="flash error" role="status">`) || !strings.Contains(body, "trusts_broker_tls is for a key with scope broker") {
		t.Errorf("a register key with the box ticked = %d, want the page with the refusal:\n%s", status, body)
	}
}
