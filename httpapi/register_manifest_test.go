package httpapi_test

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
	"devreg/semanifest"
)

// The real Trust&GO sample (two parts, first entries of a manifest AWS's thingpress tests with)
// and Microchip's real "Manifest Signer 005"; see semanifest/testdata/SOURCES.md.
const (
	manifestSample = "../semanifest/testdata/ECC608C-TNGTLSU-B.json"
	manifestSigner = "../semanifest/testdata/MCHP_manifest_signer_5.crt"
)

// What openssl says of the sample's two device certificates and their signer CAs.
var manifestParts = []struct{ deviceID, sha256, serial, issuer, caSHA256 string }{
	{"sn0123F2408EA1FCF201", "47574cb6e6fea6370f10e636041663eccc567e5f45002e142f39c75e94a28335", "5d40ed299b13200318e48214585d8fcc",
		"CN=Crypto Authentication Signer 2A00,O=Microchip Technology Inc", "602d283dada0f590f2df28573871ed7c47782e29d08f2f9b73563b7073b9219d"},
	{"sn01237FA064679E6A01", "f96c09e8a7e6af73e7344fdb3a3bd49111905fc765bac5e94bcf11e728c4d4df", "7b12e01ad3b666a674bf146826f80301",
		"CN=Crypto Authentication Signer 2A30,O=Microchip Technology Inc", "6a4c369fb8142528bc00de7f983f649fe9720271562da4470907322a68fdf835"},
}

func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signerHeader is the Manifest-Signer header for the PEM certificate pemBytes.
func signerHeader(t *testing.T, pemBytes []byte) map[string]string {
	t.Helper()
	return map[string]string{"Manifest-Signer": base64.StdEncoding.EncodeToString(certDER(t, pemBytes))}
}

func (e *env) registerManifest(t *testing.T, typeID, query, body string, header map[string]string, invalid bool) (int, []byte) {
	t.Helper()
	path := "/api/v1/devicetypes/" + typeID + "/device_ids"
	if query != "" {
		path += "?" + query
	}
	return e.send(t, req{key: e.admin, method: "PUT", path: path, contentType: semanifest.ContentType, body: body, header: header, invalid: invalid})
}

func (e *env) mustRegisterManifest(t *testing.T, typeID, query, body string, header map[string]string) devreg.RegisterResult {
	t.Helper()
	status, b := e.registerManifest(t, typeID, query, body, header, false)
	if status != 200 {
		t.Fatalf("register manifest = %d %s, want 200", status, b)
	}
	var res devreg.RegisterResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestRegisterManifest registers Microchip's real Trust&GO sample, checked against Microchip's real
// manifest signer, through the API: every part becomes a device named by its certificate's CN
// with a certificate credential; a dry run writes nothing, a resend is unchanged, a tampered entry
// or another signer refuses the manifest whole, naming the entries.
func TestRegisterManifest(t *testing.T) { pgtest.Each(t, testRegisterManifest) }

func testRegisterManifest(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Trust&GO sensor", 0)
	manifest := string(readTestFile(t, manifestSample))
	signer := signerHeader(t, readTestFile(t, manifestSigner))

	// A dry run counts, and writes nothing.
	if res := e.mustRegisterManifest(t, dt.ID, "dry_run=true", manifest, signer); res.Created != 2 || !res.DryRun {
		t.Errorf("dry run = %+v, want 2 created", res)
	}
	if status, b := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/devices/" + manifestParts[0].deviceID}); status != 404 {
		t.Errorf("after a dry run the device = %d %s, want 404", status, b)
	}

	// A tampered entry (its payload changed by one character) refuses the manifest whole.
	var entries []map[string]any
	if err := json.Unmarshal([]byte(manifest), &entries); err != nil {
		t.Fatal(err)
	}
	payload := entries[1]["payload"].(string)
	entries[1]["payload"] = payload[:40] + flip(payload[40]) + payload[41:]
	tampered, _ := json.Marshal(entries)
	status, b := e.registerManifest(t, dt.ID, "", string(tampered), signer, false)
	if status != 422 || !strings.Contains(string(b), `"index":1`) || !strings.Contains(string(b), "bad signature") || strings.Contains(string(b), `"index":0`) {
		t.Errorf("tampered entry = %d %s, want 422 naming entry 1's signature", status, b)
	}
	if !strings.Contains(string(b), "uniqueId") || !strings.Contains(string(b), "byte offset") {
		t.Errorf("tampered entry's problem does not say where it is: %s", b)
	}
	if status, _ := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/devices/" + manifestParts[0].deviceID}); status != 404 {
		t.Errorf("after a refused manifest its good entry's device = %d, want 404", status)
	}

	// Another signer than the one the entries name: each entry refused.
	other := certtest.NewCA(t, "Manifest Signer 999")
	status, b = e.registerManifest(t, dt.ID, "", manifest, signerHeader(t, other.PEM), false)
	if status != 422 || !strings.Contains(string(b), `"index":0`) || !strings.Contains(string(b), `"index":1`) || !strings.Contains(string(b), "unknown signer") {
		t.Errorf("another signer = %d %s, want 422 naming both entries", status, b)
	}
	// No signer at all, or one that is not a certificate.
	if status, b := e.registerManifest(t, dt.ID, "", manifest, nil, false); status != 400 || !strings.Contains(string(b), "Manifest-Signer") {
		t.Errorf("no signer = %d %s, want 400 naming the header", status, b)
	}
	if status, b := e.registerManifest(t, dt.ID, "", manifest, map[string]string{"Manifest-Signer": "AAAA"}, false); status != 400 || !strings.Contains(string(b), "not an X.509 certificate") {
		t.Errorf("a signer that is no certificate = %d %s, want 400", status, b)
	}

	// The real thing: both parts registered by certificate, named by CN.
	if res := e.mustRegisterManifest(t, dt.ID, "", manifest, signer); res.Created != 2 || res.BatchID == "" {
		t.Errorf("register = %+v, want 2 created", res)
	}
	for _, p := range manifestParts {
		l := e.credentials(t, e.read, p.deviceID)
		if len(l) != 1 || l[0].Kind != devreg.CredentialCertificate || l[0].SHA256 != p.sha256 || l[0].Serial != p.serial ||
			l[0].Subject != "CN="+p.deviceID+",O=Microchip Technology Inc" || l[0].Issuer != p.issuer {
			t.Errorf("%s's credentials = %+v", p.deviceID, l)
		}
	}
	if res := e.mustRegisterManifest(t, dt.ID, "", manifest, signer); res.Unchanged != 2 || res.Created != 0 {
		t.Errorf("the manifest again = %+v, want 2 unchanged", res)
	}

	// The batch and the audit entry name the signer's fingerprint.
	note := "manifest signed by sha256 " + hexString(sha256Of(certDER(t, readTestFile(t, manifestSigner))))
	var batches struct {
		Batches []devreg.Batch `json:"batches"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/batches?device_type_id="+dt.ID, "", 200, &batches)
	if len(batches.Batches) != 1 || batches.Batches[0].Filename != note || batches.Batches[0].DeviceCount != 2 {
		t.Errorf("batches = %+v, want one of 2 devices noting %q", batches.Batches, note)
	}
	var audit struct {
		Entries []struct {
			Action  string         `json:"action"`
			Details map[string]any `json:"details"`
		} `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?limit=10", "", 200, &audit)
	found := false
	for _, a := range audit.Entries {
		found = found || a.Action == "devices.register" && a.Details["filename"] == note
	}
	if !found {
		t.Errorf("no devices.register audit entry naming the signer: %+v", audit.Entries)
	}
}

// TestRegisterManifestTypeCAs registers the real sample under a type that trusts one of
// Microchip's real signer CAs: the part it signed is registered, the other refused by index until
// its CA is trusted too.
func TestRegisterManifestTypeCAs(t *testing.T) { pgtest.Each(t, testRegisterManifestTypeCAs) }

func testRegisterManifestTypeCAs(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Trust&GO gateway", 0)
	manifest := string(readTestFile(t, manifestSample))
	signer := signerHeader(t, readTestFile(t, manifestSigner))
	cas := manifestCAs(t, manifest)

	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(cas[0]), 201, nil)
	status, b := e.registerManifest(t, dt.ID, "", manifest, signer, false)
	if status != 422 || !strings.Contains(string(b), `"index":1`) || strings.Contains(string(b), `"index":0`) {
		t.Errorf("a part signed by an untrusted CA = %d %s, want 422 naming entry 1", status, b)
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(cas[1]), 201, nil)
	if res := e.mustRegisterManifest(t, dt.ID, "", manifest, signer); res.Created != 2 {
		t.Errorf("both CAs trusted = %+v, want 2 created", res)
	}
}

// TestRegisterManifestIntermediate registers a manifest whose parts chain to the type's root CA
// through the intermediate that each entry's x5c carries, as Trust&GO parts chain to Microchip's
// root through "Crypto Authentication Signer 2A00". The real root is not in the sample, so this
// manifest is made here, in the real format.
func TestRegisterManifestIntermediate(t *testing.T) {
	pgtest.Each(t, testRegisterManifestIntermediate)
}

func testRegisterManifestIntermediate(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	root := certtest.NewCA(t, "Test Root CA 002")
	signerCA := root.Issue(t, "Test Signer 2A00", certtest.IsCA())
	manifestSignerCert := certtest.NewCA(t, "Test Manifest Signer")
	leaves := []*certtest.Cert{signerCA.Issue(t, "sn01AA"), signerCA.Issue(t, "sn01BB")}
	manifest := makeManifest(t, manifestSignerCert, map[string]*certtest.Cert{"01aa": leaves[0], "01bb": leaves[1]}, signerCA)
	signer := signerHeader(t, manifestSignerCert.PEM)

	dt := e.createType(t, e.admin, "Chained", 0)
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(root.PEM), 201, nil)
	if res := e.mustRegisterManifest(t, dt.ID, "", manifest, signer); res.Created != 2 {
		t.Errorf("register = %+v, want 2 created", res)
	}
	if l := e.credentials(t, e.read, "sn01BB"); len(l) != 1 || l[0].SHA256 != leaves[1].SHA256() {
		t.Errorf("sn01BB's credentials = %+v", l)
	}

	// A type whose CA is another root refuses the parts, naming each.
	other := e.createType(t, e.admin, "Other root", 0)
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+other.ID+"/cas", caBody(certtest.NewCA(t, "Another Root").PEM), 201, nil)
	status, b := e.registerManifest(t, other.ID, "", manifest, signer, false)
	if status != 422 || !strings.Contains(string(b), `"index":0`) || !strings.Contains(string(b), `"index":1`) {
		t.Errorf("parts of another root = %d %s, want 422 naming both", status, b)
	}
}

// makeManifest makes a Trust&GO manifest of parts (uniqueId → device certificate, issued by ca)
// signed by signer, in Microchip's format (see package semanifest).
func makeManifest(t *testing.T, signer *certtest.Cert, parts map[string]*certtest.Cert, ca *certtest.Cert) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	sum := sha256.Sum256(signer.Cert.Raw)
	protected := b64([]byte(`{"alg":"ES256","x5t#S256":"` + b64(sum[:]) + `"}`))
	var out []map[string]any
	for id, leaf := range parts {
		point, err := leaf.Cert.PublicKey.(*ecdsa.PublicKey).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		p, _ := json.Marshal(map[string]any{"uniqueId": id, "partNumber": "TEST-TNGTLSU", "publicKeySet": map[string]any{"keys": []map[string]any{{
			"kid": "0", "kty": "EC", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(leaf.Cert.Raw), base64.StdEncoding.EncodeToString(ca.Cert.Raw)}}}}})
		payload := b64(p)
		digest := sha256.Sum256([]byte(protected + "." + payload))
		r, s, err := ecdsa.Sign(rand.Reader, signer.Key.(*ecdsa.PrivateKey), digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		out = append(out, map[string]any{"protected": protected, "payload": payload, "signature": b64(sig), "header": map[string]string{"uniqueId": id}})
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// manifestCAs are the PEM of the signer CA in each entry's x5c.
func manifestCAs(t *testing.T, manifest string) [][]byte {
	t.Helper()
	entries, err := semanifest.Parse(strings.NewReader(manifest), parseCert(t, readTestFile(t, manifestSigner)), semanifest.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i, en := range entries {
		if got := hexString(sha256Of(en.Chain[0].Raw)); got != manifestParts[i].caSHA256 {
			t.Fatalf("entry %d's CA is %s, want %s", i, got, manifestParts[i].caSHA256)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: en.Chain[0].Raw}))
	}
	return out
}

// flip changes one base64url character into another.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func certDER(t *testing.T, pemBytes []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatal("not PEM")
	}
	return block.Bytes
}

func parseCert(t *testing.T, pemBytes []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(certDER(t, pemBytes))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sha256Of(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

func hexString(b []byte) string { return hex.EncodeToString(b) }

// TestRegisterManifestRefused sends manifests that cannot be registered: over --max-body, cut
// short, not an array, Microchip's real TrustMANAGER sample (public keys, no certificates), an
// entry listed twice. Each is refused with what is wrong, and nothing is registered.
func TestRegisterManifestRefused(t *testing.T) { pgtest.Each(t, testRegisterManifestRefused) }

func testRegisterManifestRefused(t *testing.T, database string) {
	manifest := string(readTestFile(t, manifestSample))
	signer := signerHeader(t, readTestFile(t, manifestSigner))

	small := newEnv(t, database, int64(len(manifest)/2))
	dt := small.createType(t, small.admin, "Small", 0)
	if status, b := small.registerManifest(t, dt.ID, "", manifest, signer, false); status != 413 || !strings.Contains(string(b), "--max-body") {
		t.Errorf("a manifest over --max-body = %d %s, want 413", status, b)
	}

	e := newEnv(t, pgtest.NewDatabaseLike(t, database), 0) // a database of its own: the other server's account is on the first
	dt = e.createType(t, e.admin, "Trust&GO", 0)
	var entries []json.RawMessage
	if err := json.Unmarshal([]byte(manifest), &entries); err != nil {
		t.Fatal(err)
	}
	twice, _ := json.Marshal([]json.RawMessage{entries[0], entries[1], entries[0]})
	for _, c := range []struct {
		name, body string
		invalid    bool
		status     int
		want       []string
	}{
		{"cut short", manifest[:len(manifest)-100], true, 400, []string{"truncated"}},
		{"not an array", `{"devices": []}`, true, 400, []string{"not a JSON array"}},
		{"TrustMANAGER", string(readTestFile(t, "../semanifest/testdata/ECC608-TMNGTLSS-B.json")), false, 422, []string{`"index":0`, `"index":1`, "no certificate"}},
		{"an entry twice", string(twice), false, 422, []string{`"index":2`, "also the uniqueId of entry 0"}},
	} {
		status, b := e.registerManifest(t, dt.ID, "", c.body, signer, c.invalid)
		for _, w := range c.want {
			if status != c.status || !strings.Contains(string(b), w) {
				t.Errorf("%s = %d %s, want %d with %q", c.name, status, b, c.status, w)
			}
		}
	}
	if status, _ := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/devices/" + manifestParts[0].deviceID}); status != 404 {
		t.Errorf("after refused manifests a part's device = %d, want 404", status)
	}
}
