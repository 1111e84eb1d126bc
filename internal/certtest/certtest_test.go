package certtest

import (
	"crypto/x509"
	"testing"
	"time"
)

// A device certificate chains to its factory CA through an intermediate, for TLS client auth, and
// an expired one does not verify.
func TestIssuedCertificatesVerify(t *testing.T) {
	root := NewCA(t, "Factory Root")
	line := root.Issue(t, "Line 1 CA", IsCA())
	dev := line.Issue(t, "dev-0001")
	inter := x509.NewCertPool()
	inter.AddCert(line.Cert)
	opts := x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := dev.Cert.Verify(opts); err != nil {
		t.Fatalf("device certificate does not verify: %v", err)
	}
	if len(dev.TLS().Certificate) != 2 {
		t.Errorf("TLS chain has %d certificates, want the device's and the intermediate's", len(dev.TLS().Certificate))
	}
	old := line.Issue(t, "dev-0002", Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
	if _, err := old.Cert.Verify(opts); err == nil {
		t.Error("an expired device certificate verified")
	}
	if len(dev.SHA256()) != 64 {
		t.Errorf("fingerprint %q is not 64 hex digits", dev.SHA256())
	}
}
