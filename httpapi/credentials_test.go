package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"devreg"
	"devreg/internal/pgtest"
)

type credentialList struct {
	Credentials []devreg.Credential `json:"credentials"`
}

func (e *env) credentials(t *testing.T, key, deviceID string) []devreg.Credential {
	t.Helper()
	var list credentialList
	e.mustDo(t, key, "GET", "/api/v1/devices/"+deviceID+"/credentials", "", 200, &list)
	return list.Credentials
}

func (e *env) addCredential(t *testing.T, deviceID, body string) devreg.Credential {
	t.Helper()
	var c devreg.Credential
	e.mustDo(t, e.admin, "POST", "/api/v1/devices/"+deviceID+"/credentials", body, 201, &c)
	return c
}

// authenticates reports whether the device logs in with secret.
func (e *env) authenticates(deviceID, secret string) bool {
	_, err := e.srv.Service.AuthenticateDevice(context.Background(), e.accountID, deviceID, secret)
	return err == nil
}

func credentialIDs(list []devreg.Credential) []string {
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestCredentials goes through a device's credentials: the registration's, one with a secret of
// ours and a window, a generated one, the limit of five, changes of status and window (null
// removes a limit, an absent field leaves it) and deletion.
func TestCredentials(t *testing.T) { pgtest.Each(t, testCredentials) }

func testCredentials(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Lock", 12)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "lock-1, factory-secret-1")

	status, raw := e.send(t, req{key: e.read, method: "GET", path: "/api/v1/devices/lock-1/credentials"})
	if status != 200 || strings.Contains(string(raw), `"secret":`) {
		t.Fatalf("listing = %d %s, want 200 without any secret", status, raw)
	}
	first := e.credentials(t, e.read, "lock-1")
	if len(first) != 1 || first[0].Source != devreg.CredentialFromRegistration || first[0].Status != devreg.StatusEnabled ||
		first[0].NotBefore != nil || first[0].NotAfter != nil || first[0].ID == "" {
		t.Fatalf("a registered device's credentials = %+v, want the registration's, enabled, without limits", first)
	}
	registration := first[0]

	now := time.Now().UTC().Truncate(time.Second)
	from, until := now.Add(-time.Hour), now.Add(30*24*time.Hour)
	var ours devreg.Credential
	t.Run("201/secret-with-window", func(t *testing.T) {
		ours = e.addCredential(t, "lock-1", fmt.Sprintf(`{"secret": "second-secret-22", "not_before": %q, "not_after": %q}`,
			from.Format(time.RFC3339), until.In(time.FixedZone("CET", 3600)).Format(time.RFC3339)))
		want := devreg.Credential{ID: ours.ID, CreatedAt: ours.CreatedAt, NotBefore: &from, NotAfter: &until, Status: devreg.StatusEnabled, Source: devreg.CredentialFromAPI, Kind: devreg.CredentialSecret}
		if diff := cmp.Diff(want, ours); diff != "" || ours.ID == "" || ours.ID == registration.ID {
			t.Errorf("added credential (-want +got):\n%s", diff)
		}
		if !e.authenticates("lock-1", "second-secret-22") || !e.authenticates("lock-1", "factory-secret-1") {
			t.Errorf("the device does not log in with both of its secrets")
		}
	})

	var generated devreg.Credential
	t.Run("201/generated", func(t *testing.T) {
		generated = e.addCredential(t, "lock-1", `{"generate": true}`)
		if len(generated.Secret) < 32 || strings.Trim(generated.Secret, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
			t.Fatalf("generated secret %q, want at least 32 letters and digits", generated.Secret)
		}
		if generated.Source != devreg.CredentialFromAPI || generated.NotBefore != nil || generated.NotAfter != nil {
			t.Errorf("generated credential = %+v", generated)
		}
		if !e.authenticates("lock-1", generated.Secret) {
			t.Errorf("the device does not log in with the generated secret")
		}
		list := e.credentials(t, e.read, "lock-1")
		if diff := cmp.Diff([]string{registration.ID, ours.ID, generated.ID}, credentialIDs(list)); diff != "" {
			t.Errorf("credentials, oldest first (-want +got):\n%s", diff)
		}
		shown := 0
		for _, body := range e.transport.Responses {
			if bytes.Contains(body, []byte(generated.Secret)) {
				shown++
			}
		}
		if shown != 1 {
			t.Errorf("the generated secret is in %d answers, want exactly the one that created it", shown)
		}
		for _, s := range []string{generated.Secret, "second-secret-22", "factory-secret-1"} {
			if strings.Contains(e.log.String(), s) {
				t.Errorf("secret %q written to the log", s)
			}
		}
	})

	t.Run("409/same-secret-twice", func(t *testing.T) {
		status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/lock-1/credentials", body: `{"secret": "second-secret-22"}`})
		if status != 409 || !strings.Contains(decodeError(t, b).Error.Message, ours.ID) {
			t.Errorf("the same secret again = %d %s, want 409 naming %s", status, b, ours.ID)
		}
	})

	var fourth, fifth devreg.Credential
	t.Run("409/sixth-credential", func(t *testing.T) {
		fourth = e.addCredential(t, "lock-1", `{"secret": "fourth-secret-44", "not_before": null, "not_after": null}`)
		fifth = e.addCredential(t, "lock-1", `{"secret": "fifth-secret-555"}`)
		status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/lock-1/credentials", body: `{"secret": "sixth-secret-666"}`})
		if eb := decodeError(t, b); status != 409 || eb.Error.Code != devreg.ECONFLICT || !strings.Contains(eb.Error.Message, "5 credentials") {
			t.Errorf("a sixth credential = %d %s, want 409 saying the device has 5", status, b)
		}
		if n := len(e.credentials(t, e.read, "lock-1")); n != 5 || e.authenticates("lock-1", "sixth-secret-666") {
			t.Errorf("after a refused sixth: %d credentials; want 5, and the sixth secret refused", n)
		}
	})

	t.Run("200/patch", func(t *testing.T) {
		path := "/api/v1/devices/lock-1/credentials/" + ours.ID
		var c devreg.Credential
		e.mustDo(t, e.admin, "PATCH", path, `{"status": "disabled"}`, 200, &c)
		if c.Status != devreg.StatusDisabled || c.NotBefore == nil || !c.NotBefore.Equal(from) || c.NotAfter == nil || !c.NotAfter.Equal(until) {
			t.Errorf("disabled = %+v, want disabled with its window unchanged", c)
		}
		if e.authenticates("lock-1", "second-secret-22") {
			t.Errorf("a disabled credential still logs in")
		}
		e.mustDo(t, e.admin, "PATCH", path, `{"status": "enabled", "not_after": null}`, 200, &c)
		if c.Status != devreg.StatusEnabled || c.NotAfter != nil || c.NotBefore == nil || !c.NotBefore.Equal(from) {
			t.Errorf("after null not_after = %+v, want enabled without an end, its start unchanged", c)
		}
		later := now.Add(time.Hour)
		e.mustDo(t, e.admin, "PATCH", path, fmt.Sprintf(`{"not_before": %q}`, later.Format(time.RFC3339)), 200, &c)
		if c.NotBefore == nil || !c.NotBefore.Equal(later) || c.NotAfter != nil || e.authenticates("lock-1", "second-secret-22") {
			t.Errorf("with a start in an hour = %+v; want it not to log in yet", c)
		}
		e.mustDo(t, e.admin, "PATCH", path, `{"not_before": null}`, 200, &c)
		if c.NotBefore != nil || c.NotAfter != nil || !e.authenticates("lock-1", "second-secret-22") {
			t.Errorf("after null not_before = %+v, want no limits and a login", c)
		}
		e.mustDo(t, e.admin, "PATCH", path, `{}`, 200, &c)
		if c.Status != devreg.StatusEnabled || c.NotBefore != nil || c.NotAfter != nil {
			t.Errorf("an empty PATCH changed %+v", c)
		}
		list := e.credentials(t, e.read, "lock-1")
		if diff := cmp.Diff(c, list[1], cmpopts.IgnoreFields(devreg.Credential{}, "LastUsedAt")); diff != "" {
			t.Errorf("the PATCH's answer and the listing differ (-patch +list):\n%s", diff)
		}
		// The registration's credential, kept in the device's row, takes a window as well.
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/lock-1/credentials/"+registration.ID,
			fmt.Sprintf(`{"not_after": %q}`, until.Format(time.RFC3339)), 200, &c)
		if c.NotAfter == nil || !c.NotAfter.Equal(until) || c.Source != devreg.CredentialFromRegistration || !e.authenticates("lock-1", "factory-secret-1") {
			t.Errorf("the registration's credential with an end = %+v", c)
		}
	})

	t.Run("204/delete", func(t *testing.T) {
		e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lock-1/credentials/"+fourth.ID, "", 204, nil)
		if e.authenticates("lock-1", "fourth-secret-44") {
			t.Errorf("a deleted credential still logs in")
		}
		e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lock-1/credentials/"+fourth.ID, "", 404, nil)
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/lock-1/credentials/"+fourth.ID, `{"status": "enabled"}`, 404, nil)
		// The registration's credential can go too, while the device has others.
		e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lock-1/credentials/"+registration.ID, "", 204, nil)
		if e.authenticates("lock-1", "factory-secret-1") || !e.authenticates("lock-1", generated.Secret) {
			t.Errorf("after deleting the registration's credential: the factory secret works, or the generated one does not")
		}
		if diff := cmp.Diff([]string{ours.ID, generated.ID, fifth.ID}, credentialIDs(e.credentials(t, e.read, "lock-1"))); diff != "" {
			t.Errorf("credentials after deletions (-want +got):\n%s", diff)
		}
	})

	t.Run("201/expired-ones-do-not-count", func(t *testing.T) {
		e.addCredential(t, "lock-1", `{"secret": "sixth-secret-666"}`)
		e.addCredential(t, "lock-1", `{"secret": "seventh-secret-7"}`)
		past := now.Add(-time.Minute).Format(time.RFC3339)
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/lock-1/credentials/"+fifth.ID, fmt.Sprintf(`{"not_after": %q}`, past), 200, nil)
		e.addCredential(t, "lock-1", `{"secret": "eighth-secret-88"}`)
		list := e.credentials(t, e.read, "lock-1")
		if len(list) != 5 || slices.Contains(credentialIDs(list), fifth.ID) {
			t.Errorf("credentials = %v, want 5 without the expired %s", credentialIDs(list), fifth.ID)
		}
	})
}

// TestCredentialsLastOneStays: a device cannot lose its last valid credential, by deletion,
// by disabling it or by ending its window; disabling the device is the way to stop it.
func TestCredentialsLastOneStays(t *testing.T) { pgtest.Each(t, testCredentialsLastOneStays) }

func testCredentialsLastOneStays(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Meter", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "m1, secretform1")
	only := e.credentials(t, e.read, "m1")[0]
	refused := func(t *testing.T, method, credID, body string) {
		t.Helper()
		status, b := e.send(t, req{key: e.admin, method: method, path: "/api/v1/devices/m1/credentials/" + credID, body: body})
		if eb := decodeError(t, b); status != 409 || !strings.Contains(eb.Error.Message, "disable the device") {
			t.Errorf("%s %s = %d %s, want 409 pointing to disabling the device", method, credID, status, b)
		}
	}
	refused(t, "DELETE", only.ID, "")
	refused(t, "PATCH", only.ID, `{"status": "disabled"}`)
	refused(t, "PATCH", only.ID, `{"not_after": "2020-01-01T00:00:00Z"}`)

	second := e.addCredential(t, "m1", `{"secret": "another-secret-m1"}`)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/m1/credentials/"+second.ID, `{"status": "disabled"}`, 200, nil)
	refused(t, "DELETE", only.ID, "")                      // the last valid one
	refused(t, "PATCH", only.ID, `{"status": "disabled"}`) // likewise
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/m1/credentials/"+second.ID, "", 204, nil)
	if list := e.credentials(t, e.read, "m1"); len(list) != 1 || list[0].ID != only.ID || list[0].Status != devreg.StatusEnabled || !e.authenticates("m1", "secretform1") {
		t.Errorf("after the refusals: %+v, want the one enabled credential", list)
	}
}

// TestCredentialRefusals: scopes, other accounts, and bad bodies.
func TestCredentialRefusals(t *testing.T) { pgtest.Each(t, testCredentialRefusals) }

func testCredentialRefusals(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Camera", 16)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "cam1, secret-for-camera-1")
	cred := e.credentials(t, e.admin, "cam1")[0]
	theirs := e.createType(t, e.other, "Theirs", 0)
	e.mustRegister(t, e.other, theirs.ID, "", "text/csv", "their1, secretfortheir1")
	var theirCreds credentialList
	e.mustDo(t, e.other, "GET", "/api/v1/devices/their1/credentials", "", 200, &theirCreds)
	theirCred := theirCreds.Credentials[0]

	own := "/api/v1/devices/cam1/credentials"
	one := own + "/" + cred.ID
	tests := []struct {
		name   string
		req    req
		status int
		code   string
		says   string
	}{
		{"401/no-key", req{method: "GET", path: own}, 401, "unauthorized", "Authorization: Bearer"},
		{"403/read-key-adds", req{key: e.read, method: "POST", path: own, body: `{"secret": "a-secret-of-16-chars"}`}, 403, "forbidden", `scope "admin"`},
		{"403/read-key-generates", req{key: e.read, method: "POST", path: own, body: `{"generate": true}`}, 403, "forbidden", "admin"},
		{"403/read-key-patches", req{key: e.read, method: "PATCH", path: one, body: `{"not_after": null}`}, 403, "forbidden", "admin"},
		{"403/read-key-deletes", req{key: e.read, method: "DELETE", path: one}, 403, "forbidden", "admin"},
		{"403/register-key-adds", req{key: e.registerKey, method: "POST", path: own, body: `{"generate": true}`}, 403, "forbidden", "admin"},
		{"403/register-key-patches", req{key: e.registerKey, method: "PATCH", path: one, body: `{"status": "enabled"}`}, 403, "forbidden", "admin"},
		{"403/register-key-deletes", req{key: e.registerKey, method: "DELETE", path: one}, 403, "forbidden", "admin"},
		{"404/list-other-accounts-device", req{key: e.admin, method: "GET", path: "/api/v1/devices/their1/credentials"}, 404, "not_found", "their1"},
		{"404/add-to-other-accounts-device", req{key: e.admin, method: "POST", path: "/api/v1/devices/their1/credentials", body: `{"generate": true}`}, 404, "not_found", "their1"},
		{"404/patch-other-accounts-credential", req{key: e.admin, method: "PATCH", path: "/api/v1/devices/their1/credentials/" + theirCred.ID, body: `{"status": "disabled"}`}, 404, "not_found", "their1"},
		{"404/delete-other-accounts-credential", req{key: e.admin, method: "DELETE", path: "/api/v1/devices/their1/credentials/" + theirCred.ID}, 404, "not_found", "their1"},
		{"404/other-account-lists-ours", req{key: e.other, method: "GET", path: own}, 404, "not_found", "cam1"},
		{"404/unknown-device", req{key: e.admin, method: "GET", path: "/api/v1/devices/nope/credentials"}, 404, "not_found", "nope"},
		{"404/unknown-credential", req{key: e.admin, method: "PATCH", path: own + "/cr_nope", body: `{"status": "disabled"}`}, 404, "not_found", "cr_nope"},
		{"404/odd-credential-id", req{key: e.admin, method: "DELETE", path: own + "/a%00b", invalid: true}, 404, "not_found", "credential"},
		{"422/secret-too-short", req{key: e.admin, method: "POST", path: own, body: `{"secret": "short-secret"}`}, 422, "invalid", "at least 16"},
		{"422/secret-with-tab", req{key: e.admin, method: "POST", path: own, body: `{"secret": "a-secret-with-a\ttab"}`}, 422, "invalid", "tab"},
		{"422/neither-secret-nor-generate", req{key: e.admin, method: "POST", path: own, body: `{"not_after": null}`}, 422, "invalid", "secret is required"},
		{"422/secret-and-generate", req{key: e.admin, method: "POST", path: own, body: `{"secret": "a-secret-of-16-chars", "generate": true}`}, 422, "invalid", "not both"},
		{"422/time-not-rfc3339", req{key: e.admin, method: "POST", path: own, body: `{"generate": true, "not_after": "next tuesday"}`, invalid: true}, 422, "invalid", "not_after must be an RFC 3339 time"},
		{"422/time-without-zone", req{key: e.admin, method: "PATCH", path: one, body: `{"not_before": "2027-01-01T00:00:00"}`, invalid: true}, 422, "invalid", "not_before must be an RFC 3339 time"},
		{"422/window-ends-before-it-starts", req{key: e.admin, method: "POST", path: own, body: `{"generate": true, "not_before": "2027-02-01T00:00:00Z", "not_after": "2027-01-01T00:00:00Z"}`}, 422, "invalid", "earlier than"},
		{"422/patch-window-ends-before-it-starts", req{key: e.admin, method: "PATCH", path: one, body: `{"not_before": "2027-02-01T00:00:00Z", "not_after": "2027-02-01T00:00:00Z"}`}, 422, "invalid", "earlier than"},
		{"422/bad-status", req{key: e.admin, method: "PATCH", path: one, body: `{"status": "revoked"}`, invalid: true}, 422, "invalid", "enabled or disabled"},
		{"400/time-not-a-string", req{key: e.admin, method: "PATCH", path: one, body: `{"not_after": 1767225600}`, invalid: true}, 400, "bad_request", `"not_after" must be an RFC 3339 time string`},
		{"400/unknown-field", req{key: e.admin, method: "POST", path: own, body: `{"secret": "a-secret-of-16-chars", "expires_at": null}`, invalid: true}, 400, "bad_request", "expires_at"},
		{"400/generate-not-a-boolean", req{key: e.admin, method: "POST", path: own, body: `{"generate": "yes"}`, invalid: true}, 400, "bad_request", "generate"},
		{"400/malformed-json", req{key: e.admin, method: "PATCH", path: one, body: `{"status": `, invalid: true}, 400, "bad_request", "byte offset"},
		{"400/empty-body", req{key: e.admin, method: "POST", path: own, invalid: true}, 400, "bad_request", "empty"},
		{"415/form-body", req{key: e.admin, method: "POST", path: own, contentType: "application/x-www-form-urlencoded", body: "generate=true", invalid: true}, 415, "unsupported_media_type", "JSON"},
		{"413/huge-body", req{key: e.admin, method: "POST", path: own, body: `{"secret": "` + strings.Repeat("s", 100<<10) + `"}`}, 413, "too_large", "KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, b := e.send(t, tt.req)
			if status != tt.status {
				t.Fatalf("status = %d %s, want %d", status, b, tt.status)
			}
			eb := decodeError(t, b)
			if eb.Error.Code != tt.code || !strings.Contains(eb.Error.Message, tt.says) {
				t.Errorf("error = %+v, want code %s and a message with %q", eb.Error, tt.code, tt.says)
			}
		})
	}
	for _, key := range []string{e.read, e.registerKey} {
		if list := e.credentials(t, key, "cam1"); len(list) != 1 || !cmp.Equal(list[0], cred) {
			t.Errorf("after the refusals: %+v, want the registration's credential unchanged", list)
		}
	}
	var their credentialList
	e.mustDo(t, e.other, "GET", "/api/v1/devices/their1/credentials", "", 200, &their)
	if len(their.Credentials) != 1 || !cmp.Equal(their.Credentials[0], theirCred) {
		t.Errorf("another account's device after the refusals: %+v", their.Credentials)
	}
}

// TestDeviceTypeRotationGrace sets rotation_grace_seconds with POST and PATCH, within its range,
// and sees a device's rotation keep its old secret exactly that long.
func TestDeviceTypeRotationGrace(t *testing.T) { pgtest.Each(t, testDeviceTypeRotationGrace) }

func testDeviceTypeRotationGrace(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	grace := func(dt devreg.DeviceType) int {
		if dt.RotationGraceSeconds == nil {
			return -1
		}
		return *dt.RotationGraceSeconds
	}
	var dt devreg.DeviceType
	for _, tc := range []struct {
		body string
		want int
	}{
		{`{"name": "Default"}`, devreg.DefaultRotationGraceSeconds},
		{`{"name": "Null", "rotation_grace_seconds": null}`, devreg.DefaultRotationGraceSeconds},
		{`{"name": "None", "rotation_grace_seconds": 0}`, 0},
		{`{"name": "Longest", "rotation_grace_seconds": 2592000}`, 2592000},
		{`{"name": "Hour", "rotation_grace_seconds": 3600}`, 3600},
	} {
		e.mustDo(t, e.registerKey, "POST", "/api/v1/devicetypes", tc.body, 201, &dt)
		if got := grace(dt); got != tc.want || grace(e.deviceType(t, e.read, dt.ID)) != tc.want {
			t.Errorf("POST %s: rotation_grace_seconds = %d, want %d", tc.body, got, tc.want)
		}
	}
	hour := dt
	none := func() devreg.DeviceType {
		var list struct {
			DeviceTypes []devreg.DeviceType `json:"device_types"`
		}
		e.mustDo(t, e.read, "GET", "/api/v1/devicetypes", "", 200, &list)
		for _, dt := range list.DeviceTypes {
			if dt.Name == "None" {
				return dt
			}
		}
		t.Fatal("no device type None")
		return devreg.DeviceType{}
	}()
	if grace(none) != 0 {
		t.Errorf("listed grace of None = %d, want 0", grace(none))
	}

	path := "/api/v1/devicetypes/" + hour.ID
	e.mustDo(t, e.admin, "PATCH", path, `{"rotation_grace_seconds": 7200}`, 200, &dt)
	if grace(dt) != 7200 {
		t.Errorf("after PATCH 7200: %d", grace(dt))
	}
	e.mustDo(t, e.admin, "PATCH", path, `{"description": "unrelated"}`, 200, &dt)
	if grace(dt) != 7200 {
		t.Errorf("a PATCH of another field changed the grace to %d", grace(dt))
	}
	e.mustDo(t, e.registerKey, "PATCH", path, `{"rotation_grace_seconds": 60}`, 403, nil)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		says                     string
	}{
		{"422/create-over-30-days", "POST", "/api/v1/devicetypes", `{"name": "Long", "rotation_grace_seconds": 2592001}`, 422, "rotation_grace_seconds must be between 0 and 2592000"},
		{"422/create-negative", "POST", "/api/v1/devicetypes", `{"name": "Negative", "rotation_grace_seconds": -1}`, 422, "rotation_grace_seconds"},
		{"422/patch-over-30-days", "PATCH", path, `{"rotation_grace_seconds": 2592001}`, 422, "rotation_grace_seconds"},
		{"422/patch-negative", "PATCH", path, `{"rotation_grace_seconds": -5}`, 422, "rotation_grace_seconds"},
		{"400/patch-not-a-number", "PATCH", path, `{"rotation_grace_seconds": "1h"}`, 400, "rotation_grace_seconds"},
		{"400/patch-fraction", "PATCH", path, `{"rotation_grace_seconds": 1.5}`, 400, "rotation_grace_seconds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.admin, method: tc.method, path: tc.path, body: tc.body, invalid: true})
			if eb := decodeError(t, b); status != tc.status || !strings.Contains(eb.Error.Message, tc.says) {
				t.Errorf("%s %s = %d %s, want %d saying %q", tc.method, tc.body, status, b, tc.status, tc.says)
			}
		})
	}
	if grace(e.deviceType(t, e.read, hour.ID)) != 7200 {
		t.Errorf("refused PATCHes changed the grace")
	}

	// A device of the type rotates: its old secret works for the type's grace, not longer.
	e.mustRegister(t, e.admin, hour.ID, "", "text/csv", "h1, secretforh1")
	e.mustRegister(t, e.admin, none.ID, "", "text/csv", "n1, secretforn1")
	for _, tc := range []struct {
		device, secret string
		grace          time.Duration
	}{{"h1", "secretforh1", 2 * time.Hour}, {"n1", "secretforn1", 0}} {
		before := time.Now()
		rot := e.rotate(t, tc.device, tc.secret)
		after := time.Now()
		if rot.PreviousNotAfter.Before(before.Add(tc.grace).Add(-time.Second)) || rot.PreviousNotAfter.After(after.Add(tc.grace).Add(time.Second)) {
			t.Errorf("%s: previous_not_after = %s, want now + %s", tc.device, rot.PreviousNotAfter, tc.grace)
		}
		if got := e.authenticates(tc.device, tc.secret); got != (tc.grace > 0) {
			t.Errorf("%s: the old secret logs in = %v right after a rotation with grace %s", tc.device, got, tc.grace)
		}
		if !e.authenticates(tc.device, rot.Secret) {
			t.Errorf("%s: the new secret does not log in", tc.device)
		}
	}
}

// rotate has a device replace its secret at the device endpoint.
func (e *env) rotate(t *testing.T, deviceID, secret string) devreg.Rotation {
	t.Helper()
	resp, err := http.PostForm(e.url+"/device/v1/credentials", url.Values{"account_id": {e.accountID}, "client_id": {deviceID}, "client_secret": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rot devreg.Rotation
	if resp.StatusCode != 201 || json.Unmarshal(b, &rot) != nil || rot.Secret == "" {
		t.Fatalf("rotation of %s = %d %s, want 201 with a new secret", deviceID, resp.StatusCode, b)
	}
	return rot
}

// TestAddCredentialsInParallel sends ten additions at once to a device that has one credential:
// exactly four fit, the others are refused as conflicts, never as errors, and the device ends up
// with five.
func TestAddCredentialsInParallel(t *testing.T) { pgtest.Each(t, testAddCredentialsInParallel) }

func testAddCredentialsInParallel(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Busy", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "busy-1, secretforbusy1, busy-2, secretforbusy2")
	const n = 10
	type answer struct {
		device string
		status int
		body   string
	}
	answers := make(chan answer, 2*n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, device := range []string{"busy-1", "busy-2"} {
		for i := range n {
			wg.Go(func() {
				<-start
				hr, err := http.NewRequest("POST", e.url+"/api/v1/devices/"+device+"/credentials", strings.NewReader(fmt.Sprintf(`{"secret": "parallel-secret-%02d"}`, i)))
				if err != nil {
					answers <- answer{device, 0, err.Error()}
					return
				}
				hr.Header.Set("Authorization", "Bearer "+e.admin)
				hr.Header.Set("Content-Type", "application/json")
				resp, err := e.http.Do(hr)
				if err != nil {
					answers <- answer{device, 0, err.Error()}
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				answers <- answer{device, resp.StatusCode, string(b)}
			})
		}
	}
	close(start)
	wg.Wait()
	close(answers)
	counts := map[string]map[int]int{"busy-1": {}, "busy-2": {}}
	for a := range answers {
		counts[a.device][a.status]++
		if a.status != 201 && a.status != 409 {
			t.Errorf("%s: an addition answered %d %s, want 201 or 409", a.device, a.status, a.body)
		}
	}
	for _, device := range []string{"busy-1", "busy-2"} {
		if diff := cmp.Diff(map[int]int{201: devreg.MaxCredentials - 1, 409: n - devreg.MaxCredentials + 1}, counts[device]); diff != "" {
			t.Errorf("%s: answers by status (-want +got):\n%s", device, diff)
		}
		list := e.credentials(t, e.read, device)
		if len(list) != devreg.MaxCredentials {
			t.Errorf("%s has %d credentials, want %d", device, len(list), devreg.MaxCredentials)
		}
		working := 0
		for i := range n {
			if e.authenticates(device, fmt.Sprintf("parallel-secret-%02d", i)) {
				working++
			}
		}
		if working != devreg.MaxCredentials-1 {
			t.Errorf("%s logs in with %d of the parallel secrets, want %d", device, working, devreg.MaxCredentials-1)
		}
	}
}
