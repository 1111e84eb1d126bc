package httpapi_test

import (
	"encoding/json"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// TestCertificateCredentials adds a certificate credential over the API and registers devices by
// certificate in a JSON body: the answers (validated against the OpenAPI document) show the kind,
// the fingerprint and what the certificate says; a bad certificate is a 422 naming the problem, a
// certificate another device holds a 409, and the audit entry names the kind and fingerprint.
func TestCertificateCredentials(t *testing.T) { pgtest.Each(t, testCertificateCredentials) }

func testCertificateCredentials(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Lock", 12)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "lock-1, factory-secret-1")
	ca := certtest.NewCA(t, "Factory CA")
	leaf := ca.Issue(t, "lock-1", certtest.Serial(4660))
	body, _ := json.Marshal(map[string]string{"certificate": string(leaf.PEM)})

	var cred devreg.Credential
	e.mustDo(t, e.admin, "POST", "/api/v1/devices/lock-1/credentials", string(body), 201, &cred)
	if cred.Kind != devreg.CredentialCertificate || cred.SHA256 != leaf.SHA256() || cred.Serial != "1234" || cred.Subject != "CN=lock-1" {
		t.Errorf("added = %+v", cred)
	}
	list := e.credentials(t, e.read, "lock-1")
	if len(list) != 2 || list[0].Kind != devreg.CredentialSecret || list[1].SHA256 != leaf.SHA256() || list[1].Issuer != "CN=Factory CA" {
		t.Errorf("listing = %+v", list)
	}
	if status, raw := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/lock-1/credentials", body: string(body)}); status != 409 {
		t.Errorf("the same certificate again = %d %s, want 409", status, raw)
	}
	bad, _ := json.Marshal(map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})
	if status, raw := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/lock-1/credentials", body: string(bad)}); status != 422 || !strings.Contains(string(raw), "certificate") {
		t.Errorf("a broken certificate = %d %s, want 422 naming it", status, raw)
	}

	var audit struct {
		Entries []struct {
			Action  string         `json:"action"`
			Details map[string]any `json:"details"`
		} `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?limit=5", "", 200, &audit)
	found := false
	for _, a := range audit.Entries {
		if a.Action == "credential.create" && a.Details["kind"] == "certificate" && a.Details["sha256"] == leaf.SHA256() {
			found = true
		}
	}
	if !found {
		t.Errorf("no credential.create audit entry naming the certificate: %+v", audit.Entries)
	}

	c2, c3 := ca.Issue(t, "lock-2"), ca.Issue(t, "lock-3")
	reg, _ := json.Marshal(map[string]any{"devices": []map[string]string{
		{"device_id": "lock-2", "certificate": string(c2.PEM)}, {"device_id": "lock-3", "certificate": string(c3.PEM)}}})
	if res := e.mustRegister(t, e.admin, dt.ID, "", "application/json", string(reg)); res.Created != 2 {
		t.Errorf("register by certificate = %+v", res)
	}
	if res := e.mustRegister(t, e.admin, dt.ID, "", "application/json", string(reg)); res.Unchanged != 2 {
		t.Errorf("the same file again = %+v, want 2 unchanged", res)
	}
	if l := e.credentials(t, e.read, "lock-3"); len(l) != 1 || l[0].SHA256 != c3.SHA256() || l[0].Subject != "CN=lock-3" {
		t.Errorf("lock-3's credentials = %+v", l)
	}
	mixed, _ := json.Marshal(map[string]any{"devices": []map[string]string{
		{"device_id": "lock-4", "certificate": string(ca.Issue(t, "lock-4").PEM), "secret": "a-secret-too-long"}}})
	if status, raw := e.send(t, req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids",
		contentType: "application/json", body: string(mixed), invalid: true}); status != 422 || !strings.Contains(string(raw), "more than one of secret, certificate") {
		t.Errorf("an entry with a secret and a certificate = %d %s", status, raw)
	}
}
