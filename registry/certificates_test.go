package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/devcert"
	"devreg/devtoken"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// newCertEnv is newCredEnv at the real time, which the certificates certtest makes are valid at.
func newCertEnv(t *testing.T, url string) *credEnv {
	e := newCredEnv(t, url, 0)
	now := time.Now().UTC().Truncate(time.Microsecond)
	e.now.Store(&now)
	return e
}

// certLogin authenticates device with chain and returns the credential used, or the error code.
func (e *credEnv) certLogin(device string, chain ...*certtest.Cert) (string, string, error) {
	var certs []*x509.Certificate
	for _, c := range chain {
		certs = append(certs, c.Cert)
	}
	dev, err := e.svc.AuthenticateDeviceCertificate(context.Background(), e.acc, device, certs)
	return dev.CredentialID, devreg.ErrorCode(err), err
}

func (e *credEnv) wantCertRefused(t *testing.T, what, reason, device string, chain ...*certtest.Cert) {
	t.Helper()
	_, code, err := e.certLogin(device, chain...)
	var refused *CertificateRefused
	if code != devreg.EUNAUTHORIZED || !errors.Is(err, ErrInvalidClient) || !errors.As(err, &refused) {
		t.Fatalf("%s: login = %v (code %q), want invalid_client with a reason", what, err, code)
	}
	if msg := err.(*devreg.Error).Message; msg != "invalid_client" {
		t.Errorf("%s: the device is told %q, want only invalid_client", what, msg)
	}
	if !strings.Contains(refused.Error(), reason) {
		t.Errorf("%s: reason for the log = %q, want it to say %q", what, refused.Error(), reason)
	}
}

// TestCertificateCredential adds a certificate to a device through the API's service call: it is
// listed with its fingerprint and what it says, its window is its validity narrowed by the one
// asked for, it lets the device in while it is enabled and valid, and no other certificate does,
// not even one from the same CA with the device's ID.
func TestCertificateCredential(t *testing.T) { pgtest.Each(t, testCertificateCredential) }

func testCertificateCredential(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	leaf := ca.Issue(t, "d1", certtest.Serial(0x1f2e))
	until := e.now.Load().Add(30 * 24 * time.Hour)
	cred, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(leaf.PEM), NotAfter: &until})
	if err != nil {
		t.Fatal(err)
	}
	if cred.Kind != devreg.CredentialCertificate || cred.SHA256 != leaf.SHA256() || cred.Serial != "1f2e" ||
		cred.Subject != "CN=d1" || !strings.Contains(cred.Issuer, "Factory CA") {
		t.Errorf("added credential = %+v, want a certificate with fingerprint %s, serial 1f2e, subject CN=d1", cred, leaf.SHA256())
	}
	if !cred.NotAfter.Equal(until) || !cred.NotBefore.Equal(leaf.Cert.NotBefore) {
		t.Errorf("window = %v to %v, want the certificate's start %v to the asked end %v", cred.NotBefore, cred.NotAfter, leaf.Cert.NotBefore, until)
	}
	list, err := e.svc.ListCredentials(e.admin, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Kind != devreg.CredentialSecret || list[0].SHA256 != "" || list[1].SHA256 != leaf.SHA256() || list[1].Serial != "1f2e" {
		t.Fatalf("listing = %+v, want the secret and the certificate with its details", list)
	}

	id, code, err := e.certLogin("d1", leaf)
	if code != "" || id != cred.ID {
		t.Fatalf("login with the certificate = %q, %v; want credential %s", id, err, cred.ID)
	}
	e.wantLogin(t, s1, "the secret still works")

	sibling := ca.Issue(t, "d1")
	e.wantCertRefused(t, "a sibling certificate of the pinned device", "none of them", "d1", sibling)
	e.wantCertRefused(t, "the certificate for another device", "no such device", "d9", leaf)

	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(leaf.PEM)}); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("the same certificate again = %v, want a conflict", err)
	}
	e.register(t, devreg.ConflictFail, "d2", "second-secret-2")
	leafForD2 := leaf // the certificate names d1; a second device may not hold it either way
	if _, err := e.svc.AddCredential(e.admin, "d2", devreg.NewCredential{Certificate: string(leafForD2.PEM)}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("d1's certificate on d2 = %v, want refused (its common name is d1)", err)
	}

	for name, pem := range map[string]string{
		"expired":  string(ca.Issue(t, "d1", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))).PEM),
		"not PEM":  "MIIB...",
		"CA":       string(ca.PEM),
		"other ID": string(ca.Issue(t, "d2").PEM),
		"two":      string(leaf.PEM) + string(sibling.PEM),
	} {
		if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: pem}); devreg.ErrorCode(err) != devreg.EINVALID {
			t.Errorf("%s certificate = %v, want EINVALID", name, err)
		}
	}

	disabled := devreg.StatusDisabled
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cred.ID, devreg.CredentialUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a disabled certificate credential", "disabled", "d1", leaf)
	enabled := devreg.StatusEnabled
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cred.ID, devreg.CredentialUpdate{Status: &enabled}); err != nil {
		t.Fatal(err)
	}
	e.advance(31 * 24 * time.Hour)
	e.wantCertRefused(t, "after the window the caller set", "outside its window", "d1", leaf)
	e.advance(400 * 24 * time.Hour)
	e.wantCertRefused(t, "an expired certificate", "not valid now", "d1", leaf)

	if err := e.svc.DeleteCredential(e.admin, "d1", cred.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := e.svc.ListCredentials(e.admin, "d1"); len(list) != 1 {
		t.Errorf("after the delete %d credentials are listed, want 1", len(list))
	}
}

// TestCertificateLoginThrottled counts wrong certificates as wrong secrets: after
// DeviceMaxFailures of them even the right certificate waits.
func TestCertificateLoginThrottled(t *testing.T) { pgtest.Each(t, testCertificateLoginThrottled) }

func testCertificateLoginThrottled(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	leaf := ca.Issue(t, "d1")
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(leaf.PEM)}); err != nil {
		t.Fatal(err)
	}
	wrong := ca.Issue(t, "d1")
	for range DeviceMaxFailures {
		e.wantCertRefused(t, "a wrong certificate", "none of them", "d1", wrong)
	}
	if _, code, _ := e.certLogin("d1", leaf); code != devreg.ERATELIMITED {
		t.Errorf("the right certificate after %d wrong ones = %q, want %q", DeviceMaxFailures, code, devreg.ERATELIMITED)
	}
	if _, code := e.login(s1); code != devreg.ERATELIMITED {
		t.Errorf("the right secret after %d wrong certificates = %q, want %q (one throttle per device)", DeviceMaxFailures, code, devreg.ERATELIMITED)
	}
}

// certSource yields the entries of a registration request from memory.
type certSource []devreg.DeviceEntry

func (s *certSource) Next() (devreg.DeviceEntry, error) {
	if len(*s) == 0 {
		return devreg.DeviceEntry{}, io.EOF
	}
	e := (*s)[0]
	*s = (*s)[1:]
	return e, nil
}

// certEntries is a registration request of device IDs and certificates (PEM) given in turn.
func certEntries(idsAndCerts ...any) *certSource {
	var s certSource
	for i := 0; i+1 < len(idsAndCerts); i += 2 {
		e := devreg.DeviceEntry{Index: i / 2, DeviceID: idsAndCerts[i].(string)}
		switch c := idsAndCerts[i+1].(type) {
		case *certtest.Cert:
			e.Certificate = string(c.PEM)
		case string:
			e.Secret = c
		}
		s = append(s, e)
	}
	return &s
}

// TestRegisterCertificates registers devices by their certificates: they log in with them, a
// resend is unchanged, and every bad entry is named: a certificate listed twice or held by another
// device, one for another device ID, a fingerprint alone for a type without CAs, a mix of secrets
// and certificates. A dry run and a refused request write nothing.
func TestRegisterCertificates(t *testing.T) { pgtest.Each(t, testRegisterCertificates) }

func testRegisterCertificates(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	c3, c4, c5 := ca.Issue(t, "d3"), ca.Issue(t, "d4"), ca.Issue(t, "d5")
	register := func(opts devreg.RegisterOptions, src devreg.EntrySource) (devreg.RegisterResult, error) {
		return e.svc.Register(e.admin, e.dt.ID, src, opts)
	}

	res, err := register(devreg.RegisterOptions{DryRun: true}, certEntries("d3", c3, "d4", c4))
	if err != nil || res.Created != 2 || !res.DryRun {
		t.Fatalf("dry run = %+v, %v; want 2 created", res, err)
	}
	if _, code, _ := e.certLogin("d3", c3); code != devreg.EUNAUTHORIZED {
		t.Fatalf("after a dry run d3 logs in (%q)", code)
	}
	if res, err = register(devreg.RegisterOptions{}, certEntries("d3", c3, "d4", c4)); err != nil || res.Created != 2 {
		t.Fatalf("register = %+v, %v; want 2 created", res, err)
	}
	if id, code, err := e.certLogin("d3", c3); code != "" || id == "" {
		t.Fatalf("d3 with its certificate: %q, %v", code, err)
	}
	if res, err = register(devreg.RegisterOptions{}, certEntries("d3", c3, "d4", c4)); err != nil || res.Unchanged != 2 {
		t.Fatalf("resend = %+v, %v; want 2 unchanged", res, err)
	}
	list, err := e.svc.ListCredentials(e.admin, "d4")
	if err != nil || len(list) != 1 || list[0].SHA256 != c4.SHA256() || list[0].Subject != "CN=d4" || !list[0].NotAfter.Equal(c4.Cert.NotAfter) {
		t.Fatalf("d4's credentials = %+v, %v; want its certificate with its details and validity", list, err)
	}

	problems := func(what string, src devreg.EntrySource, opts devreg.RegisterOptions, want map[int]string) {
		t.Helper()
		_, err := register(opts, src)
		var de *devreg.Error
		if !errors.As(err, &de) || de.Code != devreg.EINVALIDROWS {
			t.Fatalf("%s: %v, want invalid rows", what, err)
		}
		got := map[int]string{}
		for _, p := range de.Problems {
			got[p.Index] = p.Message
		}
		if len(got) != len(want) {
			t.Errorf("%s: problems %v, want at %v", what, got, want)
		}
		for i, w := range want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: entry %d: %q, want it to say %q", what, i, got[i], w)
			}
		}
	}
	expired := ca.Issue(t, "d7", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)))
	problems("bad entries", certEntries("d5", c5, "d6", c5, "d7", expired, "d8", ca.Issue(t, "d9"), "d10", ca), devreg.RegisterOptions{},
		map[int]string{1: `is "d5", not the device ID "d6"`, 2: "expired", 3: `"d9", not the device ID "d8"`, 4: "certificate"})
	notPEM := &certSource{{Index: 0, DeviceID: "d5", Certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		{Index: 1, DeviceID: "d6", Certificate: "hello"}}
	problems("not certificates", notPEM, devreg.RegisterOptions{}, map[int]string{0: "certificate", 1: "certificate"})
	problems("secrets and certificates", certEntries("d5", c5, "d6", "a-secret-of-d6"), devreg.RegisterOptions{},
		map[int]string{1: "either by secret or by certificate"})
	fpOnly := &certSource{{Index: 0, DeviceID: "d5", CertificateSHA256: c5.SHA256()}}
	problems("a fingerprint for a type without CAs", fpOnly, devreg.RegisterOptions{}, map[int]string{0: "only for certificates that chain to the type's CA"})
	if _, code, _ := e.certLogin("d5", c5); code != devreg.EUNAUTHORIZED {
		t.Fatalf("a refused registration let d5 in (%q)", code)
	}

	// A replace gives d3 a new certificate; the old one stops working and may go to no other device.
	c3b := ca.Issue(t, "d3")
	if res, err = register(devreg.RegisterOptions{OnConflict: devreg.ConflictReplace}, certEntries("d3", c3b)); err != nil || res.Replaced != 1 {
		t.Fatalf("replace = %+v, %v; want 1 replaced", res, err)
	}
	e.wantCertRefused(t, "d3's old certificate", "none of them", "d3", c3)
	if _, code, err := e.certLogin("d3", c3b); code != "" {
		t.Fatalf("d3's new certificate: %v", err)
	}
	// A device with a secret registered again with a certificate is a conflict, as another secret is.
	if _, err := register(devreg.RegisterOptions{}, certEntries("d1", ca.Issue(t, "d1"))); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("d1 (a secret) again with a certificate = %v, want a conflict", err)
	}
}

// TestFutureCertificateMustChainToTheTypesCA: a certificate that becomes valid later may be
// registered for a type with CAs only if it chains to one of them, as one valid now must; one of
// its CA's that is valid later is taken, its window starting then.
func TestFutureCertificateMustChainToTheTypesCA(t *testing.T) {
	pgtest.Each(t, testFutureCertificateMustChainToTheTypesCA)
}

func testFutureCertificateMustChainToTheTypesCA(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca, foreign := certtest.NewCA(t, "Factory CA"), certtest.NewCA(t, "Someone else's CA")
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	later := certtest.Valid(time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))
	_, err := e.svc.Register(e.admin, e.dt.ID, certEntries("f1", foreign.Issue(t, "f1", later)), devreg.RegisterOptions{})
	if devreg.ErrorCode(err) != devreg.EINVALIDROWS || !strings.Contains(problemsText(err), "does not chain to a trusted CA") {
		t.Fatalf("a future certificate of another CA = %v %q; want the entry refused as not chaining to the type's CA", err, problemsText(err))
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(foreign.Issue(t, "d1", later).PEM)}); err == nil {
		t.Errorf("a future certificate of another CA was added to d1")
	}
	own := ca.Issue(t, "f2", later)
	if res, err := e.svc.Register(e.admin, e.dt.ID, certEntries("f2", own), devreg.RegisterOptions{}); err != nil || res.Created != 1 {
		t.Fatalf("a future certificate of the type's CA = %+v, %v; want it registered", res, err)
	}
}

// TestCertificatesOfTheTypesCA lets a device in by a certificate that chains to its type's trusted
// CA and names it, as long as it holds no certificate of its own; registers devices by fingerprint
// alone for a type with a CA, refusing a fingerprint listed twice or held by another device; and
// refuses another type's CA, a certificate naming another device, a sibling certificate for a
// pinned device and an expired or future certificate.
func TestCertificatesOfTheTypesCA(t *testing.T) { pgtest.Each(t, testCertificatesOfTheTypesCA) }

func testCertificatesOfTheTypesCA(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca, otherCA := certtest.NewCA(t, "Factory CA"), certtest.NewCA(t, "Other maker's CA")
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	other, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddTrustedCA(e.admin, other.ID, string(otherCA.PEM)); err != nil {
		t.Fatal(err)
	}

	// d1 holds only a secret: a certificate of the type's CA naming it lets it in, without a credential.
	if id, code, err := e.certLogin("d1", ca.Issue(t, "d1")); code != "" || id != "" {
		t.Fatalf("d1 by its type's CA = %q, %v; want in, without a credential", id, err)
	}
	e.wantCertRefused(t, "another type's CA", "trusted CAs", "d1", otherCA.Issue(t, "d1"))
	e.wantCertRefused(t, "a certificate naming another device", `"d2", not "d1"`, "d1", ca.Issue(t, "d2"))
	e.wantCertRefused(t, "an expired certificate", "not valid now", "d1",
		ca.Issue(t, "d1", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))))
	e.wantCertRefused(t, "a future certificate", "not valid now", "d1",
		ca.Issue(t, "d1", certtest.Valid(time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))))
	e.wantCertRefused(t, "a server certificate", "client authentication", "d1",
		ca.Issue(t, "d1", certtest.KeyUsage(x509.KeyUsageDigitalSignature, x509.ExtKeyUsageServerAuth)))

	// By fingerprint alone.
	c3, c4 := ca.Issue(t, "d3"), ca.Issue(t, "d4")
	byFingerprint := func(idsAndCerts ...any) *certSource {
		var s certSource
		for i := 0; i+1 < len(idsAndCerts); i += 2 {
			s = append(s, devreg.DeviceEntry{Index: i / 2, DeviceID: idsAndCerts[i].(string), CertificateSHA256: idsAndCerts[i+1].(*certtest.Cert).SHA256()})
		}
		return &s
	}
	res, err := e.svc.Register(e.admin, e.dt.ID, byFingerprint("d3", c3, "d4", c4), devreg.RegisterOptions{})
	if err != nil || res.Created != 2 {
		t.Fatalf("register by fingerprint = %+v, %v", res, err)
	}
	if id, code, err := e.certLogin("d3", c3); code != "" || id == "" {
		t.Fatalf("d3 with its pinned certificate = %q, %v", id, err)
	}
	e.wantCertRefused(t, "a sibling certificate of a pinned device, from its type's CA", "none of them", "d3", ca.Issue(t, "d3"))
	list, err := e.svc.ListCredentials(e.admin, "d3")
	if err != nil || len(list) != 1 || list[0].SHA256 != c3.SHA256() || list[0].Subject != "" || list[0].NotAfter != nil {
		t.Fatalf("d3's credentials = %+v, %v; want the fingerprint alone", list, err)
	}
	for what, src := range map[string]*certSource{
		"two held by others":     byFingerprint("d5", c3, "d6", ca.Issue(t, "d6"), "d7", ca.Issue(t, "d7"), "d8", c4),
		"held by another device": byFingerprint("d5", ca.Issue(t, "d5"), "d6", c4),
	} {
		_, err := e.svc.Register(e.admin, e.dt.ID, src, devreg.RegisterOptions{})
		var de *devreg.Error
		if !errors.As(err, &de) || de.Code != devreg.EINVALIDROWS || len(de.Problems) == 0 || !strings.Contains(de.Problems[0].Message, "another device") {
			t.Errorf("%s: %v, want the entry named", what, err)
		}
	}
	// Within one request.
	dup := byFingerprint("d5", c3, "d6", c3)
	_, err = e.svc.Register(e.admin, e.dt.ID, dup, devreg.RegisterOptions{DryRun: true})
	var de *devreg.Error
	if !errors.As(err, &de) || len(de.Problems) != 1 || de.Problems[0].Index != 1 || !strings.Contains(de.Problems[0].Message, "listed more than once") {
		t.Errorf("a certificate twice in one request: %+v", err)
	}
	// A certificate held in the credentials table, not the device's row, is found too.
	c9 := ca.Issue(t, "d1")
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(c9.PEM)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Register(e.admin, e.dt.ID, byFingerprint("d9", c9), devreg.RegisterOptions{}); devreg.ErrorCode(err) != devreg.EINVALIDROWS {
		t.Errorf("d1's added certificate for d9: %v, want refused", err)
	}
	if _, code, _ := e.certLogin("d1", ca.Issue(t, "d1")); code != devreg.EUNAUTHORIZED {
		t.Errorf("d1, pinned now, with another certificate of its CA = %q, want refused", code)
	}
}

// TestCertificateLoginChecksTheCertificate: a certificate presented at login passes the checks
// devreg makes of every certificate it is given (devcert.Check), not only the chain's: a weak RSA
// key chaining to the type's CA is refused, and a CA certificate is no device's certificate,
// neither when added as a credential nor when presented at login.
func TestCertificateLoginChecksTheCertificate(t *testing.T) {
	pgtest.Each(t, testCertificateLoginChecksTheCertificate)
}

func testCertificateLoginChecksTheCertificate(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "an RSA-1024 certificate of the type's CA", "at least 2048", "d1", ca.Issue(t, "d1", certtest.RSA(1024)))
	if id, code, err := e.certLogin("d1", ca.Issue(t, "d1", certtest.RSA(2048))); code != "" || id != "" {
		t.Fatalf("d1 with an RSA-2048 certificate of its type's CA = %q, %v; want in", id, err)
	}

	plain, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "No CA"})
	if err != nil {
		t.Fatal(err)
	}
	src := certEntries("d2", certtest.NewCA(t, "d2"))
	if _, err := e.svc.Register(e.admin, plain.ID, src, devreg.RegisterOptions{}); devreg.ErrorCode(err) != devreg.EINVALIDROWS ||
		!strings.Contains(err.Error()+problemsText(err), "CA certificate") {
		t.Errorf("registering a CA certificate as d2's: %v, want the entry refused as a CA certificate", err)
	}
	self := certtest.NewCA(t, "d1")
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Certificate: string(self.PEM)}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("adding a CA certificate as d1's credential: %v, want 422", err)
	}
}

// problemsText joins the messages of err's problems.
func problemsText(err error) string {
	var de *devreg.Error
	if !errors.As(err, &de) {
		return ""
	}
	var b strings.Builder
	for _, p := range de.Problems {
		b.WriteString(p.Message + "\n")
	}
	return b.String()
}

// TestBrokerTakesBoundTokenOnlyWithItsCertificate: a token bound to a certificate (cnf
// x5t#S256, RFC 8705 §3) logs its device in through a broker only if the broker sent that
// certificate, and the broker's key trusts its TLS (trusts_broker_tls); without the certificate,
// or with another, a stolen token would be a password like any other.
func TestBrokerTakesBoundTokenOnlyWithItsCertificate(t *testing.T) {
	pgtest.Each(t, testBrokerTakesBoundTokenOnlyWithItsCertificate)
}

func testBrokerTakesBoundTokenOnlyWithItsCertificate(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(ca.PEM)); err != nil {
		t.Fatal(err)
	}
	cert, other := ca.Issue(t, "d1"), ca.Issue(t, "d1")
	issueToken(t, e.svc, e.acc, "d1", "") // makes the signing keys
	now := e.svc.Now()
	bound, err := devtoken.Sign(e.svc.TokenKeys.Current(), devtoken.Claims{Issuer: e.svc.TokenIssuer, Subject: "d1", AccountID: e.acc,
		IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "jti-of-the-bound-token", Cnf: &devtoken.Confirmation{X5tS256: devcert.X5tS256(cert.Cert)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, trusts := range []bool{false, true} {
		broker := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: e.acc, Scope: devreg.ScopeBroker, Name: "broker", TrustsBrokerTLS: trusts})
		if _, err := e.svc.BrokerLogin(broker, BrokerCredentials{Username: "d1", ClientID: "d1", Password: bound}); !errors.Is(err, ErrInvalidClient) {
			t.Errorf("trusts_broker_tls %v: the bound token without its certificate: %v, want invalid_client", trusts, err)
		}
		if _, err := e.svc.BrokerLogin(broker, BrokerCredentials{Username: "d1", ClientID: "d1", Password: bound, CertificateDER: other.Cert.Raw}); !errors.Is(err, ErrInvalidClient) {
			t.Errorf("trusts_broker_tls %v: the bound token with another certificate: %v, want invalid_client", trusts, err)
		}
		dev, err := e.svc.BrokerLogin(broker, BrokerCredentials{Username: "d1", ClientID: "d1", Password: bound, CertificateDER: cert.Cert.Raw})
		switch {
		case trusts && (err != nil || dev.DeviceID != "d1"):
			t.Errorf("the bound token with its certificate, from a key with trusts_broker_tls: %+v, %v; want d1 in", dev, err)
		case !trusts && !errors.Is(err, ErrInvalidClient):
			// A key without trusts_broker_tls is not believed that the device presented the certificate.
			t.Errorf("the bound token with its certificate, from a key without trusts_broker_tls: %v, want invalid_client", err)
		}
	}
}
