package httpapi_test

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

type atk15AuditPage struct {
	Entries    []devreg.AuditEntry `json:"entries"`
	NextCursor string              `json:"next_cursor"`
	Head       devreg.AuditHead    `json:"head"`
}

// TestAttack15AuditFiltersMixActors: a device's actor ID is its device ID, and a device ID may be
// any string of letters, digits and ._:- — including an API key's ID ("key_…"), a user's
// ("usr_…") or "cli". A factory station with a register key registers a device named like the
// owner's admin key, and the device (anyone holding its secret) rotates its credential; from
// then on GET /api/v1/audit?actor_id=<the admin key's ID> (and the console's "Only entries by …"
// link) lists the device's entries among the key's, and the device can add such entries at will
// (each rotation is one). Object IDs collide the same way: a device named like a device type's
// ID shows up under object_id=<that type>.
//
// What should happen: the actor_id filter lists only what that actor did (and object_id only
// entries about that object). Fix: filter on the actor's type as well (store the type, or a
// type-qualified actor_id/object_id such as "device:key_…", in the filtered columns), and offer
// actor_type/object_type filters.
func TestAttack15AuditFiltersMixActors(t *testing.T) {
	pgtest.Each(t, testAttack15AuditFiltersMixActors)
}

func testAttack15AuditFiltersMixActors(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var keys struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/apikeys", "", 200, &keys)
	ownerKey := ""
	for _, k := range keys.APIKeys {
		if k.Scope == devreg.ScopeAdmin {
			ownerKey = k.ID
		}
	}
	dt := e.createType(t, e.admin, "Sensor", 0)
	// What the owner's key did: a device type. What the factory's register key does: a device
	// whose ID is the owner's key's ID (and one named like the type).
	e.mustRegister(t, e.registerKey, dt.ID, "", "", fmt.Sprintf(`{"devices": [{"device_id": %q, "secret": "secret-of-the-lookalike"}, {"device_id": %q, "secret": "secret-of-the-lookalike"}]}`,
		ownerKey, dt.ID))
	rot := e.rotate(t, ownerKey, "secret-of-the-lookalike")
	e.rotate(t, ownerKey, rot.Secret)
	e.rotate(t, dt.ID, "secret-of-the-lookalike")

	var byKey atk15AuditPage
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?actor_id="+url.QueryEscape(ownerKey), "", 200, &byKey)
	for _, en := range byKey.Entries {
		if en.Actor.Type != devreg.ActorAPIKey || en.Actor.ID != ownerKey {
			t.Errorf("actor_id=%s (the owner's admin key) lists entry %d by %s %q: %s", ownerKey, en.Seq, en.Actor.Type, en.Actor.Name, en.Action)
		}
	}
	var aboutType atk15AuditPage
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?object_id="+url.QueryEscape(dt.ID), "", 200, &aboutType)
	for _, en := range aboutType.Entries {
		if en.Object.Type != "devicetype" {
			t.Errorf("object_id=%s (a device type) lists entry %d about %s %s: %s", dt.ID, en.Seq, en.Object.Type, en.Object.ID, en.Action)
		}
	}
}

// TestAttack15RestrictedKeyPagesAcrossTypes: a key restricted to two of three device types pages
// through devices (registration order and prefix search), batches and the device listing of a
// batch, with small pages, forged cursors and another type's filters: every page holds only its
// types' objects, each once, in order, and nothing of the third type appears.
func TestAttack15RestrictedKeyPagesAcrossTypes(t *testing.T) {
	pgtest.Each(t, testAttack15RestrictedKeyPagesAcrossTypes)
}

func testAttack15RestrictedKeyPagesAcrossTypes(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	a, b, c := e.createType(t, e.admin, "A", 0), e.createType(t, e.admin, "B", 0), e.createType(t, e.admin, "C", 0)
	var wantSeq []string // the reachable devices, in registration order
	var batchesB []string
	for i := range 5 {
		for _, dt := range []devreg.DeviceType{a, b, c} {
			id := fmt.Sprintf("%s-%d", strings.ToLower(dt.Name), i)
			res := e.mustRegister(t, e.admin, dt.ID, "", "", fmt.Sprintf(`{"devices": [{"device_id": %q, "secret": "secret-of-%s"}, {"device_id": "x%s", "secret": "secret-of-x%s"}]}`, id, id, id, id))
			if dt.ID == b.ID {
				batchesB = append(batchesB, res.BatchID)
			} else {
				wantSeq = append(wantSeq, id, "x"+id)
			}
		}
	}
	var k struct {
		Key string `json:"key"`
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", fmt.Sprintf(`{"name": "line", "scope": "read", "device_type_ids": [%q, %q]}`, a.ID, c.ID), 201, &k)
	foreign := func(s string) bool {
		return strings.Contains(s, b.ID) || strings.Contains(s, `"b-`) || strings.Contains(s, `"xb-`)
	}

	if got := e.deviceIDs(t, k.Key, "limit=3"); !slices.Equal(got, wantSeq) {
		t.Errorf("registration order, pages of 3:\n got %v\nwant %v", got, wantSeq)
	}
	wantPrefix := []string{}
	for _, id := range wantSeq {
		if strings.HasPrefix(id, "x") {
			wantPrefix = append(wantPrefix, id)
		}
	}
	slices.Sort(wantPrefix)
	if got := e.deviceIDs(t, k.Key, "prefix=x&limit=2"); !slices.Equal(got, wantPrefix) {
		t.Errorf("prefix x, pages of 2:\n got %v\nwant %v", got, wantPrefix)
	}
	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, path := range []string{
		"/api/v1/devices?cursor=" + cursor("s1"),
		"/api/v1/devices?prefix=x&cursor=" + cursor("dxa-0"),
		"/api/v1/devices?prefix=xb",
		"/api/v1/devices?prefix=b",
		"/api/v1/devices?device_type_id=" + b.ID,
		"/api/v1/devices?batch_id=" + batchesB[0],
		"/api/v1/devices?batch_id=" + batchesB[0] + "&device_type_id=" + a.ID,
		"/api/v1/batches?limit=1&cursor=" + cursor("s999999"),
		"/api/v1/batches?device_type_id=" + b.ID,
		"/api/v1/devicetypes",
	} {
		status, body := e.send(t, req{key: k.Key, method: "GET", path: path})
		if status != 200 || foreign(string(body)) {
			t.Errorf("GET %s = %d, shows the unreachable type:\n%s", path, status, body)
		}
	}
	// Every batch, through pages of one, is of A or C, each once.
	seen := map[string]bool{}
	next := ""
	for {
		var page struct {
			Batches    []devreg.Batch `json:"batches"`
			NextCursor string         `json:"next_cursor"`
		}
		e.mustDo(t, k.Key, "GET", "/api/v1/batches?limit=1&cursor="+next, "", 200, &page)
		for _, bt := range page.Batches {
			if bt.DeviceTypeID == b.ID || seen[bt.ID] {
				t.Errorf("batch %s of type %s (seen before: %v)", bt.ID, bt.DeviceTypeID, seen[bt.ID])
			}
			seen[bt.ID] = true
		}
		if next = page.NextCursor; next == "" {
			break
		}
	}
	if len(seen) != 10 {
		t.Errorf("%d batches through pages of one, want 10", len(seen))
	}
	for _, id := range batchesB {
		if status, _ := e.send(t, req{key: k.Key, method: "GET", path: "/api/v1/batches/" + id}); status != 404 {
			t.Errorf("GET another type's batch = %d, want 404", status)
		}
	}
}

// TestAttack15AuditHoldsNoSecret: after keys are made (restricted, expiring), credentials added
// (typed and generated), a device rotates and the owner logs in to the console (right and wrong),
// neither the listing nor the export holds any key, secret or password.
func TestAttack15AuditHoldsNoSecret(t *testing.T) { pgtest.Each(t, testAttack15AuditHoldsNoSecret) }

func testAttack15AuditHoldsNoSecret(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "", `{"devices": [{"device_id": "d1", "secret": "secret-of-d1-registered"}]}`)
	secrets := []string{"secret-of-d1-registered", "secret-of-d1-typed-by-admin", "correct horse", "wrong horse battery", e.admin, e.registerKey, e.read}
	var k devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line", "scope": "register", "device_type_ids": ["`+dt.ID+`"], "expires_at": "2999-01-01T00:00:00Z"}`, 201, &k)
	secrets = append(secrets, k.Key)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/apikeys/"+k.ID, `{"name": "line 2", "expires_at": null}`, 200, nil)
	e.addCredential(t, "d1", `{"secret": "secret-of-d1-typed-by-admin"}`)
	gen := e.addCredential(t, "d1", `{"generate": true}`)
	secrets = append(secrets, gen.Secret)
	rot := e.rotate(t, "d1", "secret-of-d1-registered")
	secrets = append(secrets, rot.Secret)
	for _, pw := range []string{"wrong horse battery", "correct horse"} {
		resp, err := http.PostForm(e.url+"/login", url.Values{"email": {"owner@acme.test"}, "password": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var page atk15AuditPage
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?limit=1000", "", 200, &page)
	actions := map[string]bool{}
	for _, en := range page.Entries {
		actions[en.Action] = true
	}
	for _, a := range []string{"apikey.create", "apikey.update", "credential.create", "credential.rotate", "login.failure", "login.success"} {
		if !actions[a] {
			t.Errorf("no %s entry among %v", a, actions)
		}
	}
	hr, _ := http.NewRequest("GET", e.url+"/api/v1/audit/export", nil)
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	export, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, listing := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/audit?limit=1000"})
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(string(export), s) || strings.Contains(string(listing), s) {
			t.Errorf("the audit log holds the secret %q", s)
		}
	}
}
