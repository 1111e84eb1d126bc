package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/certtest"
)

// TestCertificateConfusion is the outside review's certificate confusion, as an attacker holding
// some certificate and key tries them: each must be refused, the device told only invalid_client.
func TestCertificateConfusion(t *testing.T) { forEachStore(t, testCertificateConfusion) }

func testCertificateConfusion(t *testing.T, pg bool) {
	e := newCertEnv(t, pg)
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
	forEachStore(t, testPinnedCertificateMustFitClientAuth)
}

func testPinnedCertificateMustFitClientAuth(t *testing.T, pg bool) {
	e := newCertEnv(t, pg)
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
