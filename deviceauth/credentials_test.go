package deviceauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// rotate posts to the rotation endpoint as a device would, with HTTP Basic (or the given
// Authorization header instead) and account_id in the form.
func (e *env) rotate(t *testing.T, deviceID, secret, authorization string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/device/v1/credentials", strings.NewReader(url.Values{"account_id": {e.account}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	} else {
		req.SetBasicAuth(url.QueryEscape(deviceID), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, resp.Header
}

// TestDeviceRotation: a device replaces its factory secret with one the server generates. The
// new secret gets tokens for the new credential; the old one keeps working until the grace ends;
// a token is not accepted in place of the secret; a token whose credential is deleted or expired
// ends at check-in and introspection.
func TestDeviceRotation(t *testing.T) { pgtest.Each(t, testDeviceRotation) }

func testDeviceRotation(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: e.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	token := func(id, secret string) (string, map[string]any) {
		t.Helper()
		tok, err := client.DeviceToken(ctx, nil, e.url, e.account, id, secret, "")
		if err != nil {
			t.Fatalf("token for %s: %v", id, err)
		}
		_, claims := e.verifyWithJWKS(t, tok.AccessToken)
		return tok.AccessToken, claims
	}
	active := func(token string) any { t.Helper(); return e.active(t, token) }

	grace := 600
	if _, err := e.srv.Service.UpdateDeviceType(admin, e.typeID, devreg.DeviceTypeUpdate{RotationGraceSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	factoryToken, claims := token("device1", "secretfordevice1")
	creds, err := e.srv.Service.ListCredentials(admin, "device1")
	if err != nil || len(creds) != 1 || claims["cred"] != creds[0].ID {
		t.Fatalf("a factory token's cred claim %v, credentials %+v (%v)", claims["cred"], creds, err)
	}

	status, body, header := e.rotate(t, "device1", "secretfordevice1", "")
	if status != http.StatusCreated || header.Get("Cache-Control") != "no-store" {
		t.Fatalf("rotation = %d %v (Cache-Control %q)", status, body, header.Get("Cache-Control"))
	}
	secret, _ := body["secret"].(string)
	notAfter, err := time.Parse(time.RFC3339, body["previous_not_after"].(string))
	if len(secret) < 24 || body["previous_credential_id"] != creds[0].ID || body["credential_id"] == creds[0].ID || err != nil ||
		!notAfter.Equal(e.clock.Now().Add(10*time.Minute)) {
		t.Fatalf("rotation answer %v (%v)", body, err)
	}
	rotatedToken, claims := token("device1", secret)
	if claims["cred"] != body["credential_id"] {
		t.Errorf("the new secret's token has cred %v, want %v", claims["cred"], body["credential_id"])
	}
	if err := client.CheckIn(ctx, nil, e.url, rotatedToken, "2.0.0", nil); err != nil {
		t.Errorf("check-in with the new secret's token: %v", err)
	}
	token("device1", "secretfordevice1") // the old secret, during the grace

	// A token is no way to rotate: tokens are shown to other services.
	if status, body, _ := e.rotate(t, "device1", "", "Bearer "+rotatedToken); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("rotation with a token = %d %v, want 401 invalid_client", status, body)
	}
	if status, body, _ := e.rotate(t, "device1", "wrong-secret!", ""); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("rotation with a wrong secret = %d %v, want 401 invalid_client", status, body)
	}

	// The old secret's token ends with the grace (before its own expiry), the new one's when its
	// credential is deleted.
	e.clock.Add(10 * time.Minute)
	if err := client.CheckIn(ctx, nil, e.url, factoryToken, "1.0.0", nil); !isDeviceError(err, 401, "invalid_token") {
		t.Errorf("check-in with a token of the expired credential: %v, want 401 invalid_token", err)
	}
	if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", "secretfordevice1", ""); !isDeviceError(err, 401, "invalid_client") {
		t.Errorf("token with the old secret after the grace: %v", err)
	}
	second, err := e.srv.Service.AddCredential(admin, "device1", devreg.NewCredential{Secret: "a-second-secret-for-device1"})
	if err != nil {
		t.Fatal(err)
	}
	rotatedToken, _ = token("device1", secret)
	if err := e.srv.Service.DeleteCredential(admin, "device1", body["credential_id"].(string)); err != nil {
		t.Fatal(err)
	}
	if err := client.CheckIn(ctx, nil, e.url, rotatedToken, "1.0.0", nil); !isDeviceError(err, 401, "invalid_token") {
		t.Errorf("check-in with a token of a deleted credential: %v, want 401 invalid_token", err)
	}
	if a := active(rotatedToken); a != false {
		t.Errorf("introspection of a token of a deleted credential says active %v", a)
	}
	secondToken, claims := token("device1", "a-second-secret-for-device1")
	if claims["cred"] != second.ID || active(secondToken) != true {
		t.Errorf("token of the credential left: cred %v, active %v", claims["cred"], active(secondToken))
	}
}

// active introspects token with the account's admin key and returns the answer's "active".
func (e *env) active(t *testing.T, token string) any {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/device/v1/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out["active"]
}
