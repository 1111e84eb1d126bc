package httpapi_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// caBody is the JSON body that adds a CA certificate.
func caBody(pem []byte) string {
	b, _ := json.Marshal(map[string]string{"certificate": string(pem)})
	return string(b)
}

type caList struct {
	CAs []devreg.TrustedCA `json:"cas"`
}

// TestTrustedCAs adds, lists and removes the CA certificates of a device type over the API, with
// their audit entries; another account, a key below admin and a restricted key reach none of it.
func TestTrustedCAs(t *testing.T) { pgtest.Each(t, testTrustedCAs) }

func testTrustedCAs(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	root := certtest.NewCA(t, "Acme Factory Root", certtest.RSA(2048))
	var ca devreg.TrustedCA
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(root.PEM), 201, &ca)
	if ca.SHA256 != root.SHA256() || ca.Subject != "CN=Acme Factory Root" || ca.DeviceTypeID != dt.ID ||
		!ca.NotAfter.Equal(root.Cert.NotAfter.UTC()) || ca.ID == "" || ca.CreatedAt.IsZero() {
		t.Errorf("created CA %+v; want fingerprint %s", ca, root.SHA256())
	}
	line := root.Issue(t, "Line 2 CA", certtest.IsCA())
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(line.PEM), 201, nil)
	var list caList
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+dt.ID+"/cas", "", 200, &list)
	if len(list.CAs) != 2 || list.CAs[0].ID != ca.ID || list.CAs[1].SHA256 != line.SHA256() {
		t.Fatalf("listed %+v", list.CAs)
	}

	certs, err := e.srv.Service.TrustedCACerts(t.Context(), e.accountID, dt.ID)
	if err != nil || len(certs) != 2 || !certs[0].Equal(root.Cert) || !certs[1].Equal(line.Cert) {
		t.Fatalf("TrustedCACerts = %d certificates, %v", len(certs), err)
	}
	if certs, err := e.srv.Service.TrustedCACerts(t.Context(), "acc_other", dt.ID); err != nil || len(certs) != 0 {
		t.Errorf("another account's view of the type's CAs: %d, %v", len(certs), err)
	}

	t.Run("409/same-certificate", func(t *testing.T) {
		status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas", body: caBody(append([]byte("\n"), root.PEM...))})
		if eb := decodeError(t, b); status != 409 || !strings.Contains(eb.Error.Message, ca.ID) {
			t.Errorf("the same CA again = %d %s, want 409 naming %s", status, b, ca.ID)
		}
	})
	t.Run("404/other-account", func(t *testing.T) {
		for _, r := range []req{
			{method: "GET", path: "/api/v1/devicetypes/" + dt.ID + "/cas"},
			{method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas", body: caBody(root.PEM)},
			{method: "DELETE", path: "/api/v1/devicetypes/" + dt.ID + "/cas/" + ca.ID},
		} {
			r.key = e.other
			if status, b := e.send(t, r); status != 404 {
				t.Errorf("%s %s by another account = %d %s", r.method, r.path, status, b)
			}
		}
	})
	t.Run("403/below-admin", func(t *testing.T) {
		var restricted struct{ Key string }
		e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line 3", "scope": "register", "device_type_ids": ["`+dt.ID+`"]}`, 201, &restricted)
		for _, key := range []string{e.read, e.registerKey, restricted.Key} {
			for _, r := range []req{
				{method: "GET", path: "/api/v1/devicetypes/" + dt.ID + "/cas"},
				{method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas", body: caBody(root.PEM)},
				{method: "DELETE", path: "/api/v1/devicetypes/" + dt.ID + "/cas/" + ca.ID},
			} {
				r.key = key
				if status, b := e.send(t, r); status != 403 {
					t.Errorf("%s %s below admin = %d %s", r.method, r.path, status, b)
				}
			}
		}
	})
	t.Run("404/no-such-ca", func(t *testing.T) {
		if status, b := e.send(t, req{key: e.admin, method: "DELETE", path: "/api/v1/devicetypes/" + dt.ID + "/cas/ca_nosuch"}); status != 404 {
			t.Errorf("deleting an unknown CA = %d %s", status, b)
		}
	})

	e.mustDo(t, e.admin, "DELETE", "/api/v1/devicetypes/"+dt.ID+"/cas/"+ca.ID, "", 204, nil)
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+dt.ID+"/cas", "", 200, &list)
	if len(list.CAs) != 1 || list.CAs[0].SHA256 != line.SHA256() {
		t.Errorf("after deleting the root: %+v", list.CAs)
	}
	var audit struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?object_id="+dt.ID, "", 200, &audit)
	var actions []string
	for _, en := range audit.Entries {
		actions = append(actions, en.Action)
	}
	if got := strings.Join(actions, " "); got != "ca.delete ca.create ca.create devicetype.create" {
		t.Errorf("audit entries of the type, newest first: %s", got)
	}
	if d := audit.Entries[0].Details; d["sha256"] != root.SHA256() || d["ca_id"] != ca.ID || d["subject"] != "CN=Acme Factory Root" {
		t.Errorf("ca.delete details %v", d)
	}

	// Deleting the type takes its CAs with it.
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devicetypes/"+dt.ID, "", 204, nil)
	if certs, err := e.srv.Service.TrustedCACerts(t.Context(), e.accountID, dt.ID); err != nil || len(certs) != 0 {
		t.Errorf("a deleted type's CAs: %d, %v", len(certs), err)
	}
}

// TestTrustedCARefusals: every certificate that is not one good CA is a 422 saying why, and
// nothing is stored.
func TestTrustedCARefusals(t *testing.T) { pgtest.Each(t, testTrustedCARefusals) }

func testTrustedCARefusals(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	now := time.Now()
	root := certtest.NewCA(t, "Root")
	for _, tc := range []struct {
		name, pem, says string
	}{
		{"not-pem", "MIIBxzCCAW2gAwIBAgIR", "not PEM"},
		{"empty", "", "empty"},
		{"leaf", string(root.Issue(t, "dev-1").PEM), "not a CA"},
		{"expired", string(certtest.NewCA(t, "Old", certtest.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour))).PEM), "expired"},
		{"two", string(root.PEM) + string(certtest.NewCA(t, "Other").PEM), "several certificates"},
		{"trailing-junk", string(root.PEM) + "junk", "after the certificate"},
		{"private-key", string(root.KeyPEM), "never send a private key"},
		{"rsa-1024", string(certtest.NewCA(t, "Weak", certtest.RSA(1024)).PEM), "at least 2048"},
		{"nul-in-cn", string(certtest.NewCA(t, "Root\x00evil").PEM), "control character"},
		{"too-large", string(root.PEM) + strings.Repeat(" ", 17<<10), "16 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas", body: caBody([]byte(tc.pem)),
				invalid: len(tc.pem) > 16<<10})
			eb := decodeError(t, b)
			if status != 422 || !strings.Contains(eb.Error.Message, tc.says) || !strings.HasPrefix(eb.Error.Message, "certificate: ") {
				t.Errorf("= %d %s, want 422 naming the certificate and saying %q", status, b, tc.says)
			}
		})
	}
	if status, _ := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas",
		body: caBody([]byte(strings.Repeat("A", 1<<20))), invalid: true}); status != 413 {
		t.Errorf("a 1 MB certificate = %d, want 413", status)
	}
	var list caList
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+dt.ID+"/cas", "", 200, &list)
	if len(list.CAs) != 0 {
		t.Errorf("refused certificates were stored: %+v", list.CAs)
	}
}

// TestTrustedCALimitHoldsUnderParallelAdds sends 16 different CAs at once to one type: exactly
// 10 are taken, the rest are 422 naming the limit.
func TestTrustedCALimitHoldsUnderParallelAdds(t *testing.T) {
	pgtest.Each(t, testTrustedCALimitHoldsUnderParallelAdds)
}

func testTrustedCALimitHoldsUnderParallelAdds(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	const n = 16
	bodies := make([]string, n)
	for i := range bodies {
		bodies[i] = caBody(certtest.NewCA(t, "Root "+string(rune('A'+i))).PEM)
	}
	statuses := make([]int, n)
	messages := make([]string, n)
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Go(func() {
			var b []byte
			statuses[i], b = e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devicetypes/" + dt.ID + "/cas", body: bodies[i]})
			messages[i] = string(b)
		})
	}
	wg.Wait()
	created := 0
	for i, s := range statuses {
		switch {
		case s == 201:
			created++
		case s == 422 && strings.Contains(messages[i], "the most a type may hold"):
		default:
			t.Errorf("add %d = %d %s", i, s, messages[i])
		}
	}
	var list caList
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+dt.ID+"/cas", "", 200, &list)
	if created != devreg.MaxTrustedCAs || len(list.CAs) != devreg.MaxTrustedCAs {
		t.Errorf("%d adds answered 201 and %d CAs are stored; want %d", created, len(list.CAs), devreg.MaxTrustedCAs)
	}
}

// TestDeviceTypeCertificateSettings: certificate_id_field, auto_register and auto_register_limit
// have their defaults, are set on POST and PATCH, and out-of-range values are 422.
func TestDeviceTypeCertificateSettings(t *testing.T) {
	pgtest.Each(t, testDeviceTypeCertificateSettings)
}

func testDeviceTypeCertificateSettings(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var dt devreg.DeviceType
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "T1"}`, 201, &dt)
	if dt.CertificateIDField != "subject_cn" || dt.AutoRegister || dt.AutoRegisterLimit == nil || *dt.AutoRegisterLimit != 100 {
		t.Errorf("defaults: %q %v %v", dt.CertificateIDField, dt.AutoRegister, dt.AutoRegisterLimit)
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "T2", "certificate_id_field": "san_uri", "auto_register": true, "auto_register_limit": 100000}`, 201, &dt)
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes/"+dt.ID, "", 200, &dt)
	if dt.CertificateIDField != "san_uri" || !dt.AutoRegister || *dt.AutoRegisterLimit != 100000 {
		t.Errorf("as created: %q %v %v", dt.CertificateIDField, dt.AutoRegister, *dt.AutoRegisterLimit)
	}
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"certificate_id_field": "san_dns", "auto_register": false, "auto_register_limit": 1}`, 200, nil)
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes/"+dt.ID, "", 200, &dt)
	if dt.CertificateIDField != "san_dns" || dt.AutoRegister || *dt.AutoRegisterLimit != 1 {
		t.Errorf("after PATCH: %q %v %v", dt.CertificateIDField, dt.AutoRegister, *dt.AutoRegisterLimit)
	}
	for _, tc := range []struct{ method, path, body, says string }{
		{"PATCH", "/api/v1/devicetypes/" + dt.ID, `{"certificate_id_field": "issuer_cn"}`, "certificate_id_field"},
		{"PATCH", "/api/v1/devicetypes/" + dt.ID, `{"certificate_id_field": ""}`, "certificate_id_field"},
		{"PATCH", "/api/v1/devicetypes/" + dt.ID, `{"auto_register_limit": 0}`, "auto_register_limit must be between 1 and 100000"},
		{"POST", "/api/v1/devicetypes", `{"name": "T3", "auto_register_limit": 100001}`, "auto_register_limit"},
		{"POST", "/api/v1/devicetypes", `{"name": "T3", "certificate_id_field": "SAN_URI"}`, "certificate_id_field"},
	} {
		status, b := e.send(t, req{key: e.admin, method: tc.method, path: tc.path, body: tc.body, invalid: true})
		if eb := decodeError(t, b); status != 422 || !strings.Contains(eb.Error.Message, tc.says) {
			t.Errorf("%s %s = %d %s, want 422 saying %q", tc.method, tc.body, status, b, tc.says)
		}
	}
}
