//go:debug rsa1024min=0

package devcert_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"devreg/devcert"
	"devreg/internal/certtest"
)

// wantCode fails the test unless err is a devcert refusal with the given code and a message.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want refusal %q", code)
	}
	if got := devcert.Code(err); got != code {
		t.Fatalf("refused with code %q (%v); want %q", got, err, code)
	}
	if !errors.Is(err, &devcert.Error{Code: code}) {
		t.Errorf("errors.Is does not match code %q", code)
	}
	if err.Error() == "" {
		t.Error("refusal has no message")
	}
}

func TestParsePEMAcceptsOneCertificateWithWhitespace(t *testing.T) {
	ca := certtest.NewCA(t, "Factory CA")
	dev := ca.Issue(t, "dev-0001")
	for name, s := range map[string]string{
		"plain":      string(dev.PEM),
		"whitespace": "\n\t  " + string(dev.PEM) + "\r\n\n  ",
		"crlf":       strings.ReplaceAll(string(dev.PEM), "\n", "\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := devcert.ParsePEM(s)
			if err != nil {
				t.Fatal(err)
			}
			if c.Subject.CommonName != "dev-0001" {
				t.Errorf("CN %q", c.Subject.CommonName)
			}
		})
	}
	for name, o := range map[string]certtest.Option{
		"rsa-2048": certtest.RSA(2048),
		"p-384":    nil,
	} {
		t.Run(name, func(t *testing.T) {
			var c *certtest.Cert
			if o != nil {
				c = ca.Issue(t, "dev-1", o)
			} else {
				c = &certtest.Cert{PEM: ecdsaCert(t, ca, elliptic.P384())}
			}
			if _, err := devcert.ParsePEM(string(c.PEM)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParsePEMRefuses(t *testing.T) {
	ca := certtest.NewCA(t, "Factory CA")
	dev := ca.Issue(t, "dev-0001")
	other := ca.Issue(t, "dev-0002")
	garbage := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})
	for _, tc := range []struct {
		name, in, code, msg string
	}{
		{"not-pem", "hello", devcert.CodeNotPEM, "not PEM"},
		{"empty", "  \n", devcert.CodeNotPEM, "empty"},
		{"der", string(dev.Cert.Raw), devcert.CodeNotPEM, "not PEM"},
		{"junk-before", "junk\n" + string(dev.PEM), devcert.CodeNotPEM, "not PEM"},
		{"no-end", strings.SplitAfter(string(dev.PEM), "\n")[0] + "MIIB\n", devcert.CodeNotPEM, "END"},
		{"private-key", string(dev.KeyPEM), devcert.CodeWrongBlock, "never send a private key"},
		{"csr", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1}})), devcert.CodeWrongBlock, "CERTIFICATE REQUEST"},
		{"two", string(dev.PEM) + string(other.PEM), devcert.CodeSeveral, "several certificates"},
		{"trailing-junk", string(dev.PEM) + "junk", devcert.CodeTrailingData, "after the certificate"},
		{"too-large", string(dev.PEM) + strings.Repeat(" ", devcert.MaxPEMSize), devcert.CodeTooLarge, "16 KiB"},
		{"1MB", strings.Repeat("A", 1<<20), devcert.CodeTooLarge, "16 KiB"},
		{"asn1", string(garbage), devcert.CodeMalformed, "not a valid X.509 certificate"},
		{"headers", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: dev.Cert.Raw})), devcert.CodeNotPEM, "headers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := devcert.ParsePEM(tc.in)
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestParsePEMRefusesBadCertificates(t *testing.T) {
	ca := certtest.NewCA(t, "Factory CA")
	critical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{0x05, 0x00}}
	for _, tc := range []struct {
		name string
		pem  []byte
		code string
		msg  string
	}{
		{"nul-in-cn", ca.Issue(t, "dev-1\x00.evil.example").PEM, devcert.CodeBadName, "control character"},
		{"newline-in-cn", ca.Issue(t, "dev-1\nx").PEM, devcert.CodeBadName, "control character"},
		{"nul-in-second-cn", ca.Issue(t, "", certtest.Subject(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
			{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev\x00"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-1"}}})).PEM,
			devcert.CodeBadName, "control character"},
		{"bidi-override-in-cn", ca.Issue(t, "dev-1\u202egpj.exe").PEM, devcert.CodeBadName, "U+202E"},
		{"zero-width-space-in-cn", ca.Issue(t, "dev\u200b-1").PEM, devcert.CodeBadName, "invisible formatting character"},
		{"nul-in-organization", ca.Issue(t, "", certtest.Subject(pkix.Name{CommonName: "dev-1", Organization: []string{"Acme\x00Evil"}})).PEM,
			devcert.CodeBadName, "subject attribute 2.5.4.10 contains a control character"},
		{"bidi-override-in-issuer", certtest.NewCA(t, "Factory \u202eAC").Issue(t, "dev-1").PEM, devcert.CodeBadName, "issuer common name"},
		{"rsa-512", ca.Issue(t, "dev-1", certtest.RSA(512)).PEM, devcert.CodeWeakKey, "512 bits"},
		{"rsa-1024", ca.Issue(t, "dev-1", certtest.RSA(1024)).PEM, devcert.CodeWeakKey, "at least 2048"},
		{"critical-extension", ca.Issue(t, "dev-1", certtest.Extension(critical)).PEM, devcert.CodeCriticalExtension, "1.3.6.1.4.1.99999.1"},
		{"p-224", ecdsaCert(t, ca, elliptic.P224()), devcert.CodeUnsupportedKey, "P-224"},
		{"dsa", withSPKI(t, ca.Issue(t, "dev-1"), dsaSPKI(t)), devcert.CodeUnsupportedKey, "DSA keys are not supported"},
		{"unknown-key", withSPKI(t, ca.Issue(t, "dev-1"), unknownSPKI(t)), devcert.CodeUnsupportedKey, "not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := devcert.ParsePEM(string(tc.pem))
			wantCode(t, err, tc.code)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestParsePEMChain(t *testing.T) {
	root := certtest.NewCA(t, "Root")
	line := root.Issue(t, "Line CA", certtest.IsCA())
	dev := line.Issue(t, "dev-1")
	certs, err := devcert.ParsePEMChain(string(dev.ChainPEM()) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[0].Subject.CommonName != "dev-1" || certs[1].Subject.CommonName != "Line CA" {
		t.Fatalf("chain read as %d certificates", len(certs))
	}
	eleven := strings.Repeat(string(dev.PEM), devcert.MaxChain+1)
	_, err = devcert.ParsePEMChain(eleven)
	wantCode(t, err, devcert.CodeTooMany)
	_, err = devcert.ParsePEMChain(strings.Repeat(string(dev.PEM), devcert.MaxChain))
	if err != nil {
		t.Errorf("a chain of %d refused: %v", devcert.MaxChain, err)
	}
	_, err = devcert.ParsePEMChain(string(dev.PEM) + string(root.Issue(t, "bad", certtest.RSA(1024)).PEM))
	wantCode(t, err, devcert.CodeWeakKey)
	if !strings.Contains(err.Error(), "certificate 2 of the chain") {
		t.Errorf("message %q does not name the certificate", err)
	}
	_, err = devcert.ParsePEMChain(string(dev.PEM) + "junk")
	wantCode(t, err, devcert.CodeTrailingData)
	_, err = devcert.ParsePEMChain(strings.Repeat("A", 1<<20))
	wantCode(t, err, devcert.CodeTooLarge)
}

func TestFingerprint(t *testing.T) {
	dev := certtest.NewCA(t, "CA").Issue(t, "dev-1")
	hexfp := devcert.FingerprintHex(dev.Cert)
	if hexfp != dev.SHA256() {
		t.Fatalf("FingerprintHex %s, want %s", hexfp, dev.SHA256())
	}
	want := devcert.Fingerprint(dev.Cert)
	var colons []string
	for i := 0; i < 64; i += 2 {
		colons = append(colons, strings.ToUpper(hexfp[i:i+2]))
	}
	for name, s := range map[string]string{
		"lower":   hexfp,
		"upper":   strings.ToUpper(hexfp),
		"openssl": strings.Join(colons, ":"),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := devcert.ParseFingerprint(s)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("got %x, want %x", got, want)
			}
		})
	}
	for name, s := range map[string]string{
		"empty":        "",
		"short":        hexfp[:62],
		"long":         hexfp + "00",
		"not-hex":      "zz" + hexfp[2:],
		"spaces":       " " + hexfp[1:],
		"colon-short":  strings.Join(colons[:31], ":"),
		"colon-misfit": strings.Join(colons, ":")[:94] + "::"[:1],
		"semicolons":   strings.ReplaceAll(strings.Join(colons, ":"), ":", ";"),
		"colon-shift":  "A" + strings.Join(colons, ":")[:93] + ":",
		"sha1":         "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01",
		"prefix":       "sha256 Fingerprint=" + strings.Join(colons, ":"),
		"base64":       devcert.X5tS256(dev.Cert),
	} {
		t.Run("refuse/"+name, func(t *testing.T) {
			_, err := devcert.ParseFingerprint(s)
			wantCode(t, err, devcert.CodeBadFingerprint)
		})
	}
}

// RFC 8705 §3.1: x5t#S256 is the base64url SHA-256 of the DER certificate, without padding.
func TestX5tS256(t *testing.T) {
	dev := certtest.NewCA(t, "CA").Issue(t, "dev-1")
	got := devcert.X5tS256(dev.Cert)
	if len(got) != 43 || strings.ContainsAny(got, "+/=") {
		t.Errorf("x5t#S256 %q is not 43 characters of unpadded base64url", got)
	}
}

func TestDeviceID(t *testing.T) {
	ca := certtest.NewCA(t, "CA")
	both := ca.Issue(t, "dev-cn", certtest.URIs("urn:dev:ops:0001"), certtest.DNSNames("dev-0001.devices.example"))
	for _, tc := range []struct {
		field devcert.IDField
		want  string
	}{
		{"", "dev-cn"}, {devcert.SubjectCN, "dev-cn"}, {devcert.SANURI, "urn:dev:ops:0001"}, {devcert.SANDNS, "dev-0001.devices.example"},
	} {
		got, err := devcert.DeviceID(both.Cert, tc.field)
		if err != nil || got != tc.want {
			t.Errorf("DeviceID(%q) = %q, %v; want %q", tc.field, got, err, tc.want)
		}
	}
	twoURIs := ca.Issue(t, "x", certtest.URIs("urn:a", "urn:b"))
	_, err := devcert.DeviceID(twoURIs.Cert, devcert.SANURI)
	wantCode(t, err, devcert.CodeSeveralIDs)
	_, err = devcert.DeviceID(twoURIs.Cert, devcert.SANDNS)
	wantCode(t, err, devcert.CodeNoID)
	noCN := ca.Issue(t, "", certtest.Subject(pkix.Name{Organization: []string{"Acme"}}))
	_, err = devcert.DeviceID(noCN.Cert, devcert.SubjectCN)
	wantCode(t, err, devcert.CodeNoID)
	twoCNs := ca.Issue(t, "", certtest.Subject(pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-a"}, {Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev-b"}}}))
	_, err = devcert.DeviceID(twoCNs.Cert, devcert.SubjectCN)
	wantCode(t, err, devcert.CodeSeveralIDs)
	// A control character in a SAN used as the ID: crypto/x509 takes a NUL in a DNS name as IA5.
	nulDNS := ca.Issue(t, "x", certtest.DNSNames("dev-1\x00.evil"))
	// Either the parser refuses it already, or DeviceID does.
	if _, err := devcert.ParsePEM(string(nulDNS.PEM)); err == nil {
		_, err = devcert.DeviceID(nulDNS.Cert, devcert.SANDNS)
		wantCode(t, err, devcert.CodeBadName)
	} else {
		wantCode(t, err, devcert.CodeMalformed)
	}
	_, err = devcert.DeviceID(both.Cert, "issuer_cn")
	wantCode(t, err, devcert.CodeBadIDField)
}

func TestParseIDField(t *testing.T) {
	for in, want := range map[string]devcert.IDField{"": devcert.SubjectCN, "subject_cn": devcert.SubjectCN, "san_uri": devcert.SANURI, "san_dns": devcert.SANDNS} {
		if got, err := devcert.ParseIDField(in); err != nil || got != want {
			t.Errorf("ParseIDField(%q) = %q, %v", in, got, err)
		}
	}
	_, err := devcert.ParseIDField("SAN_DNS")
	wantCode(t, err, devcert.CodeBadIDField)
}

func TestVerifyDevice(t *testing.T) {
	now := time.Now()
	root := certtest.NewCA(t, "Factory Root")
	line := root.Issue(t, "Line 1 CA", certtest.IsCA())
	otherRoot := certtest.NewCA(t, "Other Factory")
	inters := []*x509.Certificate{line.Cert}
	cas := []*x509.Certificate{otherRoot.Cert, root.Cert}
	t.Run("ok/intermediate", func(t *testing.T) {
		if err := devcert.VerifyDevice(line.Issue(t, "dev-1").Cert, inters, cas, now); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ok/direct", func(t *testing.T) {
		if err := devcert.VerifyDevice(root.Issue(t, "dev-1").Cert, nil, cas, now); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("ok/no-eku", func(t *testing.T) {
		dev := root.Issue(t, "dev-1", certtest.KeyUsage(x509.KeyUsageDigitalSignature))
		if err := devcert.VerifyDevice(dev.Cert, nil, cas, now); err != nil {
			t.Fatalf("a certificate without extended key usage refused: %v", err)
		}
	})
	t.Run("ok/no-key-usage", func(t *testing.T) {
		dev := root.Issue(t, "dev-1", certtest.KeyUsage(0, x509.ExtKeyUsageClientAuth))
		if err := devcert.VerifyDevice(dev.Cert, nil, cas, now); err != nil {
			t.Fatalf("a certificate without key usage refused: %v", err)
		}
	})
	for _, tc := range []struct {
		name          string
		dev           *certtest.Cert
		intermediates []*x509.Certificate
		cas           []*x509.Certificate
		code          string
	}{
		{"expired", line.Issue(t, "d", certtest.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour))), inters, cas, devcert.CodeExpired},
		{"not-yet-valid", line.Issue(t, "d", certtest.Valid(now.Add(time.Hour), now.Add(48*time.Hour))), inters, cas, devcert.CodeNotYetValid},
		{"expired-intermediate", root.Issue(t, "old CA", certtest.IsCA(), certtest.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour))).Issue(t, "d",
			certtest.Valid(now.Add(-time.Hour), now.Add(time.Hour))), nil, cas, devcert.CodeUnknownAuthority},
		{"server-eku", line.Issue(t, "d", certtest.KeyUsage(x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth)), inters, cas, devcert.CodeKeyUsage},
		{"no-digital-signature", line.Issue(t, "d", certtest.KeyUsage(x509.KeyUsageKeyEncipherment, x509.ExtKeyUsageClientAuth)), inters, cas, devcert.CodeKeyUsage},
		{"ca-as-device", line, []*x509.Certificate{}, cas, devcert.CodeKeyUsage},
		{"other-ca", line.Issue(t, "d"), inters, []*x509.Certificate{otherRoot.Cert}, devcert.CodeUnknownAuthority},
		{"no-cas", line.Issue(t, "d"), inters, nil, devcert.CodeUnknownAuthority},
		{"missing-intermediate", line.Issue(t, "d"), nil, cas, devcert.CodeUnknownAuthority},
		{"leaf-signs", line.Issue(t, "signer", certtest.KeyUsage(x509.KeyUsageDigitalSignature)).Issue(t, "d"), inters, cas, devcert.CodeUnknownAuthority},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, devcert.VerifyDevice(tc.dev.Cert, tc.intermediates, tc.cas, now), tc.code)
		})
	}
	t.Run("expired-intermediate-code", func(t *testing.T) {
		old := root.Issue(t, "old CA", certtest.IsCA(), certtest.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour)))
		dev := old.Issue(t, "d", certtest.Valid(now.Add(-time.Hour), now.Add(time.Hour)))
		wantCode(t, devcert.VerifyDevice(dev.Cert, []*x509.Certificate{old.Cert}, cas, now), devcert.CodeExpired)
	})
	t.Run("too-many-intermediates", func(t *testing.T) {
		ca, chain := root, []*x509.Certificate{}
		for range devcert.MaxIntermediates + 1 {
			ca = ca.Issue(t, "sub CA", certtest.IsCA())
			chain = append(chain, ca.Cert)
		}
		wantCode(t, devcert.VerifyDevice(ca.Issue(t, "d").Cert, chain, cas, now), devcert.CodeChainTooLong)
		// The same depth through fewer offered certificates verifies.
		if err := devcert.VerifyDevice(ca.Issue(t, "d").Cert, chain[1:], []*x509.Certificate{chain[0]}, now); err != nil {
			t.Errorf("a chain of %d intermediates refused: %v", devcert.MaxIntermediates, err)
		}
	})
	t.Run("loop", func(t *testing.T) {
		// Two CAs that sign each other: the search must end, refusing with unknown authority.
		a, b := certtest.NewCA(t, "Loop A"), certtest.NewCA(t, "Loop B")
		aByB, bByA := crossSign(t, a, b), crossSign(t, b, a)
		dev := a.Issue(t, "d")
		err := devcert.VerifyDevice(dev.Cert, []*x509.Certificate{aByB, bByA, a.Cert, b.Cert}, []*x509.Certificate{otherRoot.Cert}, now)
		wantCode(t, err, devcert.CodeUnknownAuthority)
		// And with one of them trusted the loop does not stop the chain from being found.
		if err := devcert.VerifyDevice(dev.Cert, []*x509.Certificate{aByB, bByA}, []*x509.Certificate{b.Cert}, now); err != nil {
			t.Errorf("chain through a cross-signed CA refused: %v", err)
		}
	})
}

func TestValidateCA(t *testing.T) {
	now := time.Now()
	if err := devcert.ValidateCA(certtest.NewCA(t, "Root").Cert, now); err != nil {
		t.Fatal(err)
	}
	if err := devcert.ValidateCA(certtest.NewCA(t, "Root", certtest.RSA(2048)).Cert, now); err != nil {
		t.Fatal(err)
	}
	root := certtest.NewCA(t, "Root")
	if err := devcert.ValidateCA(root.Issue(t, "Line CA", certtest.IsCA()).Cert, now); err != nil {
		t.Fatalf("an intermediate CA refused as trust anchor: %v", err)
	}
	for _, tc := range []struct {
		name string
		ca   *certtest.Cert
		code string
	}{
		{"leaf", root.Issue(t, "dev-1"), devcert.CodeNotCA},
		{"no-cert-sign", certtest.NewCA(t, "Root", certtest.KeyUsage(x509.KeyUsageDigitalSignature)), devcert.CodeNotCA},
		{"expired", certtest.NewCA(t, "Root", certtest.Valid(now.Add(-48*time.Hour), now.Add(-time.Hour))), devcert.CodeExpired},
		{"not-yet-valid", certtest.NewCA(t, "Root", certtest.Valid(now.Add(time.Hour), now.Add(48*time.Hour))), devcert.CodeNotYetValid},
		{"rsa-1024", certtest.NewCA(t, "Root", certtest.RSA(1024)), devcert.CodeWeakKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, devcert.ValidateCA(tc.ca.Cert, now), tc.code)
		})
	}
}

// crossSign issues a certificate with subject's name and key, signed by issuer.
func crossSign(t *testing.T, subject, issuer *certtest.Cert) *x509.Certificate {
	t.Helper()
	tmpl := *subject.Cert
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, issuer.Cert, subject.Key.Public(), issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ecdsaCert is a device certificate on the given curve, signed by ca, in PEM.
func ecdsaCert(t *testing.T, ca *certtest.Cert, curve elliptic.Curve) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "dev-curve"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// withSPKI returns c's certificate with its subject public key info replaced, in PEM. crypto/x509
// cannot make DSA certificates, and parsing does not check the signature, so splicing is enough.
func withSPKI(t *testing.T, c *certtest.Cert, spki []byte) []byte {
	t.Helper()
	in := cryptobyte.String(c.Cert.Raw)
	var cert, tbs cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !cert.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		t.Fatal("cannot read certificate")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for !tbs.Empty() {
				var el cryptobyte.String
				if !tbs.ReadAnyASN1Element(&el, nil) {
					t.Fatal("cannot read TBS element")
				}
				if string(el) == string(c.Cert.RawSubjectPublicKeyInfo) {
					el = spki
				}
				b.AddBytes(el)
			}
		})
		b.AddBytes(cert) // signature algorithm and value, now over other bytes
	})
	der, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// dsaSPKI is a DSA public key (RFC 3279 §2.3.2) with toy parameters: crypto/x509 reads it as DSA.
func dsaSPKI(t *testing.T) []byte {
	t.Helper()
	params, _ := asn1.Marshal(struct{ P, Q, G *big.Int }{big.NewInt(23), big.NewInt(11), big.NewInt(4)})
	y, _ := asn1.Marshal(big.NewInt(8))
	return spki(t, asn1.ObjectIdentifier{1, 2, 840, 10040, 4, 1}, params, y)
}

// unknownSPKI is a public key of an algorithm crypto/x509 does not know.
func unknownSPKI(t *testing.T) []byte {
	t.Helper()
	return spki(t, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 2}, []byte{0x05, 0x00}, []byte{1, 2, 3})
}

func spki(t *testing.T, oid asn1.ObjectIdentifier, params, key []byte) []byte {
	t.Helper()
	der, err := asn1.Marshal(struct {
		Algorithm struct {
			OID    asn1.ObjectIdentifier
			Params asn1.RawValue
		}
		Key asn1.BitString
	}{
		Algorithm: struct {
			OID    asn1.ObjectIdentifier
			Params asn1.RawValue
		}{oid, asn1.RawValue{FullBytes: params}},
		Key: asn1.BitString{Bytes: key, BitLength: 8 * len(key)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return der
}
