package semanifest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/certtest"
)

func readSigner(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s holds no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problems returns the problems of a refused Parse as "index: message", failing unless err is
// an EINVALIDROWS error.
func problems(t *testing.T, err error) map[int]string {
	t.Helper()
	var de *devreg.Error
	if !errors.As(err, &de) || de.Code != devreg.EINVALIDROWS {
		t.Fatalf("want an %s error naming the bad entries, got %v", devreg.EINVALIDROWS, err)
	}
	out := map[int]string{}
	for _, p := range de.Problems {
		out[p.Index] = p.Message
	}
	return out
}

func wantCode(t *testing.T, err error, code, text string) {
	t.Helper()
	if devreg.ErrorCode(err) != code || !strings.Contains(devreg.ErrorMessage(err), text) {
		t.Fatalf("want %s error saying %q, got %v", code, text, err)
	}
}

// Microchip's real Trust&GO manifest, as thingpress ships it for its tests, verifies with
// Microchip's real Manifest Signer 005 and yields each chip's serial number and device certificate.
func TestRealTrustAndGoManifest(t *testing.T) {
	signer := readSigner(t, "testdata/MCHP_manifest_signer_5.crt")
	entries, err := Parse(bytes.NewReader(readFile(t, "testdata/ECC608C-TNGTLSU-B.json")), signer, Limits{})
	if err != nil {
		t.Fatalf("the real manifest is refused: %v", err)
	}
	want := []struct{ id, cn, issuer string }{
		{"0123f2408ea1fcf201", "sn0123F2408EA1FCF201", "Crypto Authentication Signer 2A00"},
		{"01237fa064679e6a01", "sn01237FA064679E6A01", "Crypto Authentication Signer 2A30"},
	}
	if len(entries) != len(want) {
		t.Fatalf("got %d entries, want %d", len(entries), len(want))
	}
	for i, w := range want {
		e := entries[i]
		if e.Index != i || e.DeviceID != w.id || e.PartNumber != "ATECC608C-TNGTLSU-B" {
			t.Errorf("entry %d: index %d, device ID %q, part %q; want %d, %q", i, e.Index, e.DeviceID, e.PartNumber, i, w.id)
		}
		if e.Certificate.Subject.CommonName != w.cn || e.Certificate.Issuer.CommonName != w.issuer {
			t.Errorf("entry %d: certificate %q issued by %q, want %q by %q", i, e.Certificate.Subject.CommonName,
				e.Certificate.Issuer.CommonName, w.cn, w.issuer)
		}
		if len(e.Chain) != 1 || e.Certificate.CheckSignatureFrom(e.Chain[0]) != nil {
			t.Errorf("entry %d: the chain does not hold the CA that signed the device certificate", i)
		}
	}
}

// The real TrustMANAGER manifest verifies too, but its parts carry no certificate, so each entry is
// refused by name rather than registered without a credential.
func TestRealTrustManagerManifestHasNoCertificates(t *testing.T) {
	signer := readSigner(t, "testdata/MCHP_manifest_signer_5.crt")
	_, err := Parse(bytes.NewReader(readFile(t, "testdata/ECC608-TMNGTLSS-B.json")), signer, Limits{})
	got := problems(t, err)
	for i, id := range []string{"01230cac6606e99401", "0123e90a5de36a8901"} {
		if !strings.HasPrefix(got[i], "no certificate") {
			t.Errorf("entry %d (%s): problem %q, want no certificate (so its signature verified)", i, id, got[i])
		}
	}
}

// Changing the real manifest's signed bytes, or checking it against another signer, is caught
// entry by entry.
func TestRealManifestRefusals(t *testing.T) {
	signer := readSigner(t, "testdata/MCHP_manifest_signer_5.crt")
	real := readFile(t, "testdata/ECC608C-TNGTLSU-B.json")
	var elems []map[string]any
	if err := json.Unmarshal(real, &elems); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(e []map[string]any)) []byte {
		var c []map[string]any
		_ = json.Unmarshal(real, &c)
		f(c)
		b, _ := json.Marshal(c)
		return b
	}
	// A new uniqueId in the payload: the bytes the signature covers change.
	tampered := edit(func(e []map[string]any) {
		p, _ := base64.RawURLEncoding.DecodeString(e[1]["payload"].(string))
		p = bytes.Replace(p, []byte("01237fa064679e6a01"), []byte("01237fa064679e6a02"), 1)
		e[1]["payload"] = base64.RawURLEncoding.EncodeToString(p)
	})
	relabelled := edit(func(e []map[string]any) { e[0]["header"] = map[string]any{"uniqueId": "0123000000000000ff"} })
	other := certtest.NewCA(t, "Manifest Signer 999")

	for _, tc := range []struct {
		name   string
		body   []byte
		signer *x509.Certificate
		want   map[int]string
	}{
		{"tampered-payload", tampered, signer, map[int]string{1: "bad signature"}},
		{"unsigned-header-relabelled", relabelled, signer, map[int]string{0: "the unsigned header's uniqueId 0123000000000000ff differs"}},
		{"other-signer-certificate", real, other.Cert, map[int]string{0: "unknown signer", 1: "unknown signer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(bytes.NewReader(tc.body), tc.signer, Limits{})
			got := problems(t, err)
			if len(got) != len(tc.want) {
				t.Errorf("problems %v, want only entries %v", got, tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("entry %d: problem %q, want %q", i, got[i], w)
				}
			}
		})
	}
}

// fake makes manifests the way Microchip's signer does, with a signer and devices of the test's own.
type fake struct {
	signer *certtest.Cert
	ca     *certtest.Cert
}

func newFake(t *testing.T) *fake {
	return &fake{signer: certtest.NewCA(t, "Test Manifest Signer"), ca: certtest.NewCA(t, "Test Crypto Authentication Signer")}
}

// entry returns one signed secure element for a new device uniqueID, signed by key (the fake's
// signer when nil) under a protected header naming the fake's signer.
func (f *fake) entry(t *testing.T, uniqueID string, key *ecdsa.PrivateKey, change func(payload map[string]any)) map[string]any {
	t.Helper()
	dev := f.ca.Issue(t, "sn"+strings.ToUpper(uniqueID))
	point, err := dev.Cert.PublicKey.(*ecdsa.PublicKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	payload := map[string]any{
		"version": 1, "model": "ATECC608C", "partNumber": "ATECC608C-TNGTLSU-B", "uniqueId": uniqueID,
		"publicKeySet": map[string]any{"keys": []any{map[string]any{
			"kid": "0", "kty": "EC", "crv": "P-256",
			"x":   base64.RawURLEncoding.EncodeToString(point[1:33]),
			"y":   base64.RawURLEncoding.EncodeToString(point[33:]),
			"x5c": []string{base64.StdEncoding.EncodeToString(dev.Cert.Raw), base64.StdEncoding.EncodeToString(f.ca.Cert.Raw)},
		}}},
	}
	if change != nil {
		change(payload)
	}
	sum := sha256.Sum256(f.signer.Cert.Raw)
	return f.sign(t, map[string]any{"alg": "ES256", "kid": base64.RawURLEncoding.EncodeToString(f.signer.Cert.SubjectKeyId),
		"typ": "JWT", "x5t#S256": base64.RawURLEncoding.EncodeToString(sum[:])}, payload, uniqueID, key)
}

func (f *fake) sign(t *testing.T, header, payload map[string]any, uniqueID string, key *ecdsa.PrivateKey) map[string]any {
	t.Helper()
	if key == nil {
		key = f.signer.Key.(*ecdsa.PrivateKey)
	}
	hb, _ := json.Marshal(header)
	pb, _ := json.Marshal(payload)
	protected, body := base64.RawURLEncoding.EncodeToString(hb), base64.RawURLEncoding.EncodeToString(pb)
	digest := sha256.Sum256([]byte(protected + "." + body))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return map[string]any{"payload": body, "protected": protected, "header": map[string]any{"uniqueId": uniqueID},
		"signature": base64.RawURLEncoding.EncodeToString(sig)}
}

func manifest(t *testing.T, entries ...map[string]any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Made-up manifests, each with one bad entry among good ones: the error names that entry by its
// position and says what is wrong with it, and no entry is returned.
func TestMadeUpManifestEntries(t *testing.T) {
	f := newFake(t)
	otherKey := certtest.NewCA(t, "Someone Else").Key.(*ecdsa.PrivateKey)
	good := func(id string) map[string]any { return f.entry(t, id, nil, nil) }
	entries, err := Parse(bytes.NewReader(manifest(t, good("01aa"), good("01bb"), good("01cc"))), f.signer.Cert, Limits{})
	if err != nil || len(entries) != 3 || entries[2].DeviceID != "01cc" || entries[2].Certificate.Subject.CommonName != "sn01CC" {
		t.Fatalf("a good made-up manifest: %d entries, %v", len(entries), err)
	}

	otherDevice := certtest.NewCA(t, "Elsewhere").Issue(t, "sn01BB")
	for _, tc := range []struct {
		name string
		bad  map[string]any
		want string
	}{
		{"signed-by-another-key", f.entry(t, "01bb", otherKey, nil), "bad signature"},
		{"duplicate-device", good("01aa"), "uniqueId 01aa is also the uniqueId of entry 0"},
		{"no-certificate", f.entry(t, "01bb", nil, func(p map[string]any) { delete(p, "publicKeySet") }), "no certificate"},
		{"certificate-of-another-key", f.entry(t, "01bb", nil, func(p map[string]any) {
			k := p["publicKeySet"].(map[string]any)["keys"].([]any)[0].(map[string]any)
			k["x5c"] = []string{base64.StdEncoding.EncodeToString(otherDevice.Cert.Raw)}
		}), "key 0: its certificate certifies another public key"},
		{"x5c-not-a-certificate", f.entry(t, "01bb", nil, func(p map[string]any) {
			p["publicKeySet"].(map[string]any)["keys"].([]any)[0].(map[string]any)["x5c"] = []string{"AAEC"}
		}), "key 0: x5c[0] is not an X.509 certificate"},
		{"no-unique-id", f.entry(t, "", nil, nil), "payload has no uniqueId"},
		{"alg-none", f.sign(t, map[string]any{"alg": "none"}, map[string]any{"uniqueId": "01bb"}, "01bb", nil), `alg "none" is not ES256`},
		{"crit-header", f.sign(t, map[string]any{"alg": "ES256", "crit": []string{"exp"}, "exp": 1}, map[string]any{"uniqueId": "01bb"}, "01bb", nil), "critical extensions"},
		{"not-a-jws", map[string]any{"uniqueId": "01bb"}, "malformed JWS: protected, payload and signature are each required"},
		{"general-serialization", map[string]any{"payload": "e30", "signatures": []any{}}, "malformed JWS: general serialization"},
		{"payload-a-number", map[string]any{"payload": 5, "protected": "e30", "signature": ""}, "malformed JWS: payload is a JSON number"},
		{"short-signature", func() map[string]any { e := good("01bb"); e["signature"] = "AAAA"; return e }(), "malformed JWS: signature is not 64 bytes"},
		{"too-deep", map[string]any{"payload": []any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{[]any{}}}}}}}}}}}}}}}}}}, "nested more than 16 deep"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := Parse(bytes.NewReader(manifest(t, good("01aa"), tc.bad, good("01cc"))), f.signer.Cert, Limits{})
			if entries != nil {
				t.Errorf("a manifest with a bad entry returned %d entries", len(entries))
			}
			got := problems(t, err)
			if len(got) != 1 || !strings.Contains(got[1], tc.want) {
				t.Errorf("problems %v, want only entry 1: %q", got, tc.want)
			}
		})
	}
}

// A manifest that cannot be read to its end is refused as a whole with the reason, without reading
// more than the limits allow.
func TestManifestRefusedWhole(t *testing.T) {
	f := newFake(t)
	good := manifest(t, f.entry(t, "01aa", nil, nil), f.entry(t, "01bb", nil, nil))
	junk := make([]byte, 10<<20)
	_, _ = rand.Read(junk)
	hugeEntry := append([]byte(`[{"payload":"`), bytes.Repeat([]byte("A"), 10<<20)...)
	for _, tc := range []struct {
		name       string
		body       io.Reader
		lim        Limits
		code, text string
	}{
		{"truncated", bytes.NewReader(good[:len(good)*2/3]), Limits{}, devreg.EBADREQUEST, "ends before its closing bracket"},
		{"truncated-after-an-entry", bytes.NewReader(good[:bytes.LastIndexByte(good, ']')]), Limits{}, devreg.EBADREQUEST, "ends before its closing bracket"},
		{"10MB-random-junk", bytes.NewReader(junk), Limits{}, devreg.EBADREQUEST, "the manifest is not"},
		{"10MB-junk-in-an-array", io.MultiReader(strings.NewReader("[{\"payload\":"), bytes.NewReader(junk)), Limits{}, devreg.EBADREQUEST, "not valid JSON"},
		{"10MB-entry", io.MultiReader(bytes.NewReader(hugeEntry), strings.NewReader(`"}]`)), Limits{}, devreg.EBADREQUEST, "entry 0, near byte offset 1, is longer than 64 KiB"},
		{"10MB-of-blanks", io.MultiReader(strings.NewReader("["), bytes.NewReader(bytes.Repeat([]byte(" "), 10<<20))), Limits{}, devreg.EBADREQUEST, "longer than 64 KiB"},
		{"over-total", bytes.NewReader(good), Limits{MaxBytes: int64(len(good)) - 10}, devreg.ETOOLARGE, "larger than"},
		{"over-count", bytes.NewReader(good), Limits{MaxEntries: 1}, devreg.ETOOLARGE, "more than 1 entries"},
		{"not-an-array", strings.NewReader(`{"payload": "e30"}`), Limits{}, devreg.EBADREQUEST, "not a JSON array"},
		{"data-after-array", io.MultiReader(bytes.NewReader(good), strings.NewReader(" []")), Limits{}, devreg.EBADREQUEST, "data after its closing bracket"},
		{"empty-array", strings.NewReader(" [ ] "), Limits{}, devreg.EINVALID, "empty array"},
		{"empty-body", strings.NewReader(""), Limits{}, devreg.EBADREQUEST, "ends before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counted := &countingReader{r: tc.body}
			_, err := Parse(counted, f.signer.Cert, tc.lim)
			wantCode(t, err, tc.code, tc.text)
			if counted.n > 1<<20 {
				t.Errorf("read %d bytes before refusing", counted.n)
			}
		})
	}
	_, err := Parse(bytes.NewReader(good), nil, Limits{})
	wantCode(t, err, devreg.EINVALID, "signer certificate is required")
	_, err = Parse(bytes.NewReader(good), certtest.NewCA(t, "RSA signer", certtest.RSA(2048)).Cert, Limits{})
	wantCode(t, err, devreg.EINVALID, "does not hold an ECDSA P-256 key")
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A Reader yields a large manifest one entry at a time from a stream it never holds whole: here
// 2,000 entries produced on demand, the good and the refused alike, in order.
func TestReaderStreams(t *testing.T) {
	f := newFake(t)
	const n = 2000
	one := manifest(t, f.entry(t, "01aa", nil, nil))
	elem := bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSpace(one), []byte("[")), []byte("]"))
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("["))
		for i := range n {
			if i > 0 {
				_, _ = pw.Write([]byte(","))
			}
			_, _ = pw.Write(elem)
		}
		_ = pw.CloseWithError(func() error { _, err := pw.Write([]byte("]")); return err }())
	}()
	mr, err := NewReader(pr, f.signer.Cert, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		e, err := mr.Next()
		if err == io.EOF {
			if i != n {
				t.Fatalf("EOF after %d entries, want %d", i, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		want := ""
		if i > 0 {
			want = "uniqueId 01aa is also the uniqueId of entry 0"
		}
		if e.Index != i || e.Problem != want || (want == "") != (e.Certificate != nil) {
			t.Fatalf("entry %d: index %d, problem %q, certificate %v", i, e.Index, e.Problem, e.Certificate != nil)
		}
	}
	if mr.in.read > int64(len(elem)+2)*n+64 {
		t.Errorf("read %d bytes of a %d-byte manifest", mr.in.read, (len(elem)+1)*n+1)
	}
}

// FuzzReader: whatever the bytes, reading ends in an error or io.EOF without a panic, within the
// entry bound, and every entry yielded without a problem has a device ID and a certificate.
func FuzzReader(f *testing.F) {
	f.Add(readFile(&testing.T{}, "testdata/ECC608C-TNGTLSU-B.json"))
	f.Add(readFile(&testing.T{}, "testdata/ECC608-TMNGTLSS-B.json"))
	f.Add([]byte(`[{"payload":"e30","protected":"eyJhbGciOiJFUzI1NiJ9","signature":""}]`))
	signer := readSigner(&testing.T{}, "testdata/MCHP_manifest_signer_5.crt")
	f.Fuzz(func(t *testing.T, b []byte) {
		mr, err := NewReader(bytes.NewReader(b), signer, Limits{MaxEntryBytes: 8 << 10, MaxEntries: 50})
		if err != nil {
			t.Fatal(err)
		}
		for {
			e, err := mr.Next()
			if err != nil {
				if err != io.EOF && devreg.ErrorMessage(err) == "" {
					t.Fatalf("an error without a message: %v", err)
				}
				return
			}
			if e.Problem == "" && (e.DeviceID == "" || e.Certificate == nil) {
				t.Fatalf("entry %d accepted without a device ID or certificate", e.Index)
			}
		}
	})
}
