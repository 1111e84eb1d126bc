package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// TestCertificateConfusion is the outside review's certificate confusion, as an attacker holding
// some certificate and key tries them: each must be refused, the device told only invalid_client.
func TestCertificateConfusion(t *testing.T) { pgtest.Each(t, testCertificateConfusion) }

func testCertificateConfusion(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	cas, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	in := func(what, device string, chain ...*certtest.Cert) {
		t.Helper()
		if _, code, err := e.certLogin(device, chain...); code != "" {
			t.Fatalf("%s: %v, want in", what, err)
		}
	}

	// Through the type's CA (d1 holds only a secret).
	e.wantCertRefused(t, "key usage without digitalSignature", "key usage", "d1",
		ca.Issue(t, "d1", certtest.KeyUsage(x509.KeyUsageKeyEncipherment, x509.ExtKeyUsageClientAuth)))
	e.wantCertRefused(t, "a CA certificate named after the device", "CA certificate", "d1", ca.Issue(t, "d1", certtest.IsCA()))
	e.wantCertRefused(t, "the type's CA itself", "CA certificate", "d1", ca)
	sibling := ca.Issue(t, "d2")
	e.wantCertRefused(t, "a device certificate used as intermediate", "trusted CAs", "d1", sibling.Issue(t, "d1"), sibling)
	sub := ca.Issue(t, "Sub CA", certtest.IsCA())
	var tooLong []*certtest.Cert
	for i, c := 0, sub; i < 5; i++ {
		c = c.Issue(t, "Sub CA", certtest.IsCA())
		tooLong = append([]*certtest.Cert{c}, tooLong...)
	}
	e.wantCertRefused(t, "five intermediates", "intermediate", "d1", append([]*certtest.Cert{tooLong[0].Issue(t, "d1")}, append(tooLong, sub)...)...)
	in("a chain through one intermediate", "d1", sub.Issue(t, "d1"), sub)
	e.wantCertRefused(t, "an RSA-1024 device key", "RSA key is 1024 bits", "d1", ca.Issue(t, "d1", certtest.RSA(1024)))

	// Another account's type trusting the same CA gives this account's device nothing, and the
	// other way round.
	other, _, err := e.svc.NewAccount(context.Background(), "Rival", "owner@rival.example", "password-of-the-rival")
	if err != nil {
		t.Fatal(err)
	}
	rival := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: other.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	rt, err := e.svc.CreateDeviceType(rival, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddTrustedCA(rival, e.dt.ID, string(ca.PEM)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account adding a CA to this account's type = %v, want not found", err)
	}
	rivalCA := certtest.NewCA(t, "Rival CA")
	if _, err := e.svc.AddTrustedCA(rival, rt.ID, string(rivalCA.PEM)); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "another account's CA", "trusted CAs", "d1", rivalCA.Issue(t, "d1"))

	// A device disabled, or its batch, is refused whatever its certificate.
	if _, err := e.svc.SetDeviceStatus(e.admin, "d1", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a disabled device", "disabled", "d1", ca.Issue(t, "d1"))
	if _, err := e.svc.SetDeviceStatus(e.admin, "d1", devreg.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	in("d1 enabled again", "d1", ca.Issue(t, "d1"))

	// A pinned certificate (added while the type had a CA) must still fit TLS client
	// authentication, and must not be a CA.
	d3 := ca.Issue(t, "d3")
	res, err := e.svc.Register(e.admin, e.dt.ID, certEntries("d3", d3), devreg.RegisterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	in("d3 by its pinned certificate", "d3", d3)
	// A certificate is public: what it holds is no secret that logs its device in.
	for _, guess := range []string{d3.SHA256(), string(d3.PEM), string(d3.Cert.Raw), strings.ToUpper(d3.SHA256())} {
		if _, err := e.svc.AuthenticateDevice(context.Background(), e.acc, "d3", guess); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
			t.Fatalf("d3 by a secret made of its certificate (%.20q) = %v, want refused", guess, err)
		}
	}
	if _, err := e.svc.SetBatchStatus(e.admin, res.BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a device of a disabled batch", "disabled", "d3", d3)
	if _, err := e.svc.SetBatchStatus(e.admin, res.BatchID, devreg.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	list, err := e.svc.ListCredentials(e.admin, "d3")
	if err != nil || len(list) != 1 {
		t.Fatalf("d3's credentials = %+v, %v", list, err)
	}
	// The only credential that lets a device in cannot be disabled; a secret stands beside it.
	if _, err := e.svc.AddCredential(e.admin, "d3", devreg.NewCredential{Generate: true}); err != nil {
		t.Fatal(err)
	}
	off := devreg.StatusDisabled
	if _, err := e.svc.UpdateCredential(e.admin, "d3", list[0].ID, devreg.CredentialUpdate{Status: &off}); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a disabled certificate credential", "disabled", "d3", d3)
	e.wantCertRefused(t, "a sibling while the pinned one is disabled", "none of them", "d3", ca.Issue(t, "d3"))

	// The CA deleted: the devices it alone let in are out.
	if err := e.svc.DeleteTrustedCA(e.admin, e.dt.ID, cas.ID); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "d1 after its type's CA was deleted", "no trusted CA", "d1", ca.Issue(t, "d1"))
}

// TestPinnedCertificateMustFitClientAuth: a certificate given as a device's credential must be
// one a device may log in with: not a CA, its key usage allowing signatures, its extended key
// usage allowing client authentication, its key strong. A certificate is refused when registered
// (a clear entry problem) or added, and one registered by fingerprint alone is refused at login.
func TestPinnedCertificateMustFitClientAuth(t *testing.T) {
	pgtest.Each(t, testPinnedCertificateMustFitClientAuth)
}

func testPinnedCertificateMustFitClientAuth(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	for _, tc := range []struct {
		id, want string
		opt      certtest.Option
	}{
		{"server-auth-only", "client authentication", certtest.KeyUsage(x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth)},
		{"a-ca", "CA certificate", certtest.IsCA()},
		{"no-digital-signature", "digital signatures", certtest.KeyUsage(x509.KeyUsageKeyEncipherment)},
		{"rsa-1024", "RSA key is 1024 bits", certtest.RSA(1024)},
	} {
		cert := ca.Issue(t, tc.id, tc.opt)
		// The type trusts no CA yet: the certificate would be pinned.
		_, err := e.svc.Register(e.admin, e.dt.ID, certEntries(tc.id, cert), devreg.RegisterOptions{})
		if devreg.ErrorCode(err) != devreg.EINVALIDROWS || !strings.Contains(err.Error()+problems(err), tc.want) {
			t.Errorf("%s: registering it = %v %s, want the entry refused saying %q", tc.id, err, problems(err), tc.want)
		}
	}
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, want string
		opt      certtest.Option
	}{
		{"server-auth-only", "client authentication", certtest.KeyUsage(x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth)},
		{"a-ca", "CA certificate", certtest.IsCA()},
		{"rsa-1024", "RSA key is 1024 bits", certtest.RSA(1024)},
	} {
		cert := ca.Issue(t, tc.id, tc.opt)
		src := certSource{{DeviceID: tc.id, CertificateSHA256: cert.SHA256()}}
		if _, err := e.svc.Register(e.admin, e.dt.ID, &src, devreg.RegisterOptions{}); err != nil {
			t.Fatalf("%s by fingerprint: %v", tc.id, err)
		}
		e.wantCertRefused(t, tc.id+", registered by fingerprint alone", tc.want, tc.id, cert)
	}
}

// problems is the entry problems of a registration's refusal, in one string.
func problems(err error) string {
	var de *devreg.Error
	if !errors.As(err, &de) {
		return ""
	}
	var b strings.Builder
	for _, p := range de.Problems {
		b.WriteString(p.Message + "; ")
	}
	return b.String()
}

// TestFingerprintAloneIsHeldToTheTypesCA: a device registered by its certificate's fingerprint
// alone (from a chip vendor's manifest) is let in only by a certificate that chains to its type's
// CA and names it, as the registration took on trust. Whoever slips a fingerprint into the
// manifest (a self-signed certificate, one of another maker's CA, one naming another device) gets
// nothing, and when the CA is deleted its devices are out; a certificate registered whole stays
// pinned.
func TestFingerprintAloneIsHeldToTheTypesCA(t *testing.T) {
	pgtest.Each(t, testFingerprintAloneIsHeldToTheTypesCA)
}

func testFingerprintAloneIsHeldToTheTypesCA(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca, otherCA := certtest.NewCA(t, "Factory CA"), certtest.NewCA(t, "Other maker's CA")
	added, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := selfSignedDevice(t, "f-self")
	good, whole := ca.Issue(t, "f-good"), ca.Issue(t, "f-whole")
	byOther, namesOther := otherCA.Issue(t, "f-other"), ca.Issue(t, "f-good")
	src := certSource{
		{Index: 0, DeviceID: "f-good", CertificateSHA256: good.SHA256()},
		{Index: 1, DeviceID: "f-self", CertificateSHA256: selfSigned.SHA256()},
		{Index: 2, DeviceID: "f-other", CertificateSHA256: byOther.SHA256()},
		{Index: 3, DeviceID: "f-named", CertificateSHA256: namesOther.SHA256()},
	}
	if _, err := e.svc.Register(e.admin, e.dt.ID, &src, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Register(e.admin, e.dt.ID, certEntries("f-whole", whole), devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	if id, code, err := e.certLogin("f-good", good); code != "" || id == "" {
		t.Fatalf("f-good by its certificate of the type's CA = %q, %v", id, err)
	}
	e.wantCertRefused(t, "a self-signed certificate's fingerprint", "trusted CAs", "f-self", selfSigned)
	e.wantCertRefused(t, "another maker's CA's certificate's fingerprint", "trusted CAs", "f-other", byOther)
	e.wantCertRefused(t, "a fingerprint of a certificate naming another device", `"f-good", not "f-named"`, "f-named", namesOther)

	if err := e.svc.DeleteTrustedCA(e.admin, e.dt.ID, added.ID); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a fingerprint alone after the type's CA was deleted", "no trusted CA", "f-good", good)
	if id, code, err := e.certLogin("f-whole", whole); code != "" || id == "" {
		t.Errorf("f-whole, registered whole, after its CA was deleted = %q, %v; want in (pinned)", id, err)
	}
}

// selfSignedDevice is a device certificate signed by its own key, as anyone can make one.
func selfSignedDevice(t *testing.T, cn string) *certtest.Cert {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &certtest.Cert{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// TestExpiredTypeCALetsNoOneIn: a CA valid when it was added lets no device in once it has
// expired, though the devices' certificates outlive it.
func TestExpiredTypeCALetsNoOneIn(t *testing.T) { pgtest.Each(t, testExpiredTypeCALetsNoOneIn) }

func testExpiredTypeCALetsNoOneIn(t *testing.T, url string) {
	e := newCertEnv(t, url)
	now := *e.now.Load()
	ca := certtest.NewCA(t, "Short-lived CA", certtest.Valid(now.Add(-time.Hour), now.Add(24*time.Hour)))
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, "d1", certtest.Valid(now.Add(-time.Hour), now.Add(30*24*time.Hour)))
	if _, code, err := e.certLogin("d1", leaf); code != "" {
		t.Fatalf("d1 while its CA is valid: %v", err)
	}
	e.advance(48 * time.Hour)
	e.wantCertRefused(t, "d1 after its type's CA expired", "expired", "d1", leaf)
}
