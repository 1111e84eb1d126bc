// Package certtest makes certificate authorities and certificates for tests with crypto/x509: a
// factory CA, device certificates it issues, server certificates for TLS listeners, and the odd
// certificates an attacker would bring (expired, not a CA, RSA-512, a NUL in the common name).
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a certificate with its private key, parsed and in PEM.
type Cert struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	PEM     []byte // the certificate, one PEM block
	KeyPEM  []byte // the private key, PKCS #8 in PEM
	Issuer  *Cert  // nil for a self-signed certificate
	options options
}

// options say how to make a certificate; the zero value is a P-256 end-entity certificate for TLS
// clients, valid from an hour ago for a year.
type options struct {
	rsaBits     int
	notBefore   time.Time
	notAfter    time.Time
	isCA        bool
	keyUsage    x509.KeyUsage
	extKeyUsage []x509.ExtKeyUsage
	dnsNames    []string
	ips         []net.IP
	uris        []*url.URL
	extra       []pkix.Extension
	serial      *big.Int
	subject     *pkix.Name
}

// An Option changes how a certificate is made.
type Option func(*options)

// RSA makes the certificate's key RSA of the given size instead of ECDSA P-256.
func RSA(bits int) Option { return func(o *options) { o.rsaBits = bits } }

// Valid sets the certificate's validity window.
func Valid(notBefore, notAfter time.Time) Option {
	return func(o *options) { o.notBefore, o.notAfter = notBefore, notAfter }
}

// IsCA makes the certificate a CA (basic constraints CA:TRUE, key usage cert sign).
func IsCA() Option { return func(o *options) { o.isCA = true } }

// KeyUsage sets the key usage (and extended key usage) in place of the defaults.
func KeyUsage(ku x509.KeyUsage, eku ...x509.ExtKeyUsage) Option {
	return func(o *options) { o.keyUsage, o.extKeyUsage = ku, eku }
}

// DNSNames sets DNS subject alternative names.
func DNSNames(names ...string) Option { return func(o *options) { o.dnsNames = names } }

// IPs sets IP address subject alternative names.
func IPs(ips ...net.IP) Option { return func(o *options) { o.ips = ips } }

// URIs sets URI subject alternative names.
func URIs(uris ...string) Option {
	return func(o *options) {
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				panic(err)
			}
			o.uris = append(o.uris, u)
		}
	}
}

// Extension adds an extension, critical or not.
func Extension(e pkix.Extension) Option {
	return func(o *options) { o.extra = append(o.extra, e) }
}

// Serial sets the serial number.
func Serial(n int64) Option { return func(o *options) { o.serial = big.NewInt(n) } }

// Subject sets the whole subject in place of one made of the common name.
func Subject(name pkix.Name) Option { return func(o *options) { o.subject = &name } }

// NewCA makes a self-signed root CA with the given common name.
func NewCA(t testing.TB, cn string, opts ...Option) *Cert {
	t.Helper()
	return make1(t, cn, nil, append([]Option{IsCA()}, opts...))
}

// Issue makes a certificate with the given common name signed by ca: a TLS client certificate
// unless the options say otherwise (IsCA for an intermediate).
func (ca *Cert) Issue(t testing.TB, cn string, opts ...Option) *Cert {
	t.Helper()
	return make1(t, cn, ca, opts)
}

// Server makes a TLS server certificate signed by ca for the given DNS names and for 127.0.0.1 and ::1.
func (ca *Cert) Server(t testing.TB, dnsNames ...string) *Cert {
	t.Helper()
	return make1(t, "devreg test server", ca, []Option{
		KeyUsage(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment, x509.ExtKeyUsageServerAuth),
		DNSNames(append([]string{"localhost"}, dnsNames...)...),
		IPs(net.IPv4(127, 0, 0, 1), net.IPv6loopback),
	})
}

func make1(t testing.TB, cn string, issuer *Cert, opts []Option) *Cert {
	t.Helper()
	o := options{
		notBefore: time.Now().Add(-time.Hour),
		notAfter:  time.Now().Add(365 * 24 * time.Hour),
	}
	for _, opt := range opts {
		opt(&o)
	}
	var key crypto.Signer
	var err error
	if o.rsaBits > 0 {
		key, err = rsa.GenerateKey(rand.Reader, o.rsaBits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	serial := o.serial
	if serial == nil {
		serial, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			t.Fatal(err)
		}
	}
	subject := pkix.Name{CommonName: cn}
	if o.subject != nil {
		subject = *o.subject
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         subject,
		NotBefore:       o.notBefore,
		NotAfter:        o.notAfter,
		DNSNames:        o.dnsNames,
		IPAddresses:     o.ips,
		URIs:            o.uris,
		ExtraExtensions: o.extra,
	}
	switch {
	case o.keyUsage != 0 || o.extKeyUsage != nil:
		tmpl.KeyUsage, tmpl.ExtKeyUsage = o.keyUsage, o.extKeyUsage
	case o.isCA:
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	default:
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if o.isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	}
	parent, signer := tmpl, key
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{
		Cert:    cert,
		Key:     key,
		PEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		Issuer:  issuer,
		options: o,
	}
}

// SHA256 is the certificate's SHA-256 fingerprint in lowercase hex (of its DER encoding).
func (c *Cert) SHA256() string {
	sum := sha256.Sum256(c.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ChainPEM is the certificate followed by its issuers up to, not including, the root.
func (c *Cert) ChainPEM() []byte {
	out := append([]byte(nil), c.PEM...)
	for i := c.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
		out = append(out, i.PEM...)
	}
	return out
}

// TLS is the certificate as crypto/tls needs it, with its intermediates.
func (c *Cert) TLS() tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for i := c.Issuer; i != nil && i.Issuer != nil; i = i.Issuer {
		tc.Certificate = append(tc.Certificate, i.Cert.Raw)
	}
	return tc
}

// Pool is a certificate pool holding c.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// WriteFiles writes the certificate (with its chain) and its key as PEM files in dir, named
// name.crt and name.key, and returns their paths.
func (c *Cert) WriteFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, c.ChainPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
