package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devreg/client"
)

// certLoginDevices is how many devices each kind of login spreads over, each with its own TLS
// session cache (a device resumes only its own sessions: a cache shared by devices would hand one
// device's session, and so its certificate, to another).
const certLoginDevices = 16

// certLoginWorkers is how many logins are in flight at once.
const certLoginWorkers = 4

// runCertLogin measures device logins at the token endpoint of one devreg serving HTTPS (SQLite):
// by secret, and by certificate (RFC 8705 tls_client_auth, the certificate chaining to the device
// type's CA) with ECDSA P-256 and RSA-2048 device keys; each with a full TLS handshake and with
// a resumed TLS session (TLS 1.3 tickets), on a new connection per login. It prints logins/s and
// how much a certificate login costs against a secret login (issue 23 asks for at most 1.5 on a
// resumed session). Each figure is the median of -runs measures of -rate-time (2 s here unless
// set), so that the measures take about 40 s.
func runCertLogin(cfg config) error {
	if !flagSet("rate-time") {
		cfg.rateTime = 2 * time.Second
	}
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx := context.Background()
	ca, caKey, err := selfSignedCA("devreg bench CA")
	if err != nil {
		return err
	}
	certFile, keyFile, err := writeServerCert(b.dir, ca, caKey)
	if err != nil {
		return err
	}
	srv := &server{data: filepath.Join(b.dir, "certlogin")}
	if srv.accountID, srv.apiKey, err = createAccount(ctx, b.bin, nil, "--data", srv.data); err != nil {
		return err
	}
	if srv.url, srv.cmd, err = serve(b.bin, "--data", srv.data, "--tls-cert", certFile, "--tls-key", keyFile); err != nil {
		return err
	}
	defer srv.stop()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv.c = client.New(srv.url, srv.apiKey)
	srv.c.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	typeID, err := srv.newType(ctx, "meters")
	if err != nil {
		return err
	}
	if _, err := srv.c.AddTrustedCA(ctx, typeID, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))); err != nil {
		return err
	}
	kinds := []string{"secret", "ecdsa-p256", "rsa-2048"}
	var csv strings.Builder
	for _, kind := range kinds {
		for i := range certLoginDevices {
			fmt.Fprintf(&csv, "%s-%02d,secret-of-%s-%02d\n", kind, i, kind, i)
		}
	}
	if _, err := srv.c.RegisterCSV(ctx, typeID, strings.NewReader(csv.String()), client.RegisterOptions{}); err != nil {
		return err
	}
	loads := map[string]*loginLoad{}
	var names []string
	for _, kind := range kinds {
		devices, err := benchDevices(kind, ca, caKey)
		if err != nil {
			return err
		}
		for _, hs := range []string{"full", "resumed"} {
			name := kind + "/" + hs
			if loads[name], err = newLoginLoad(ctx, srv, roots, devices, hs == "resumed"); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			names = append(names, name)
		}
	}
	// The figures are measured in turns, cfg.runs times, so that a change in the machine's load
	// (other processes) spreads over all of them; each is the median of its runs.
	measured := map[string][]float64{}
	var resumed, total map[string]int64 = map[string]int64{}, map[string]int64{}
	for range cfg.runs {
		for _, name := range names {
			rate, n, r, err := loads[name].measure(ctx, cfg.rateTime)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			measured[name] = append(measured[name], rate)
			total[name] += n
			resumed[name] += r
		}
	}
	rate := func(name string) float64 { return medianOf(measured[name]) }
	share := func(name string) float64 { return 100 * float64(resumed[name]) / float64(max(total[name], 1)) }
	fmt.Printf("devreg-bench cert-login: token endpoint over HTTPS (SQLite), a new TLS connection per login, %d in flight,\n", certLoginWorkers)
	fmt.Printf("  %d devices per kind, certificates chained to the type's CA; median of %d runs of %s\n", certLoginDevices, cfg.runs, cfg.rateTime)
	for _, hs := range []string{"full", "resumed"} {
		secret := rate("secret/" + hs)
		fmt.Printf("  %-7s  secret                  %6.0f logins/s  (%3.0f%% resumed)\n", hs, secret, share("secret/"+hs))
		for _, kind := range kinds[1:] {
			name := kind + "/" + hs
			fmt.Printf("  %-7s  certificate %-10s  %6.0f logins/s  (%3.0f%% resumed)  cost certificate/secret %.2f\n", hs, kind, rate(name), share(name), secret/rate(name))
		}
	}
	fmt.Printf("  issue 23: a certificate login on a resumed session costs at most 1.5x a secret login\n")
	return nil
}

// benchDevice is a device of a login kind: its ID and, for a certificate login, its certificate.
type benchDevice struct {
	id   string
	cert *tls.Certificate // nil: logs in with its secret
}

// benchDevices makes the devices of a kind: secret, ecdsa-p256 or rsa-2048, each certificate
// issued by ca with the device ID as its common name.
func benchDevices(kind string, ca *x509.Certificate, caKey crypto.Signer) ([]benchDevice, error) {
	devices := make([]benchDevice, certLoginDevices)
	for i := range devices {
		devices[i].id = fmt.Sprintf("%s-%02d", kind, i)
		var key crypto.Signer
		var err error
		switch kind {
		case "secret":
			continue
		case "ecdsa-p256":
			key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "rsa-2048":
			key, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(1000 + i)), Subject: pkix.Name{CommonName: devices[i].id},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return nil, err
		}
		devices[i].cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	return devices, nil
}

// loginLoad is a kind of login: its devices, each with its own HTTP client that opens a new
// connection per request (and, to resume, keeps its TLS sessions).
type loginLoad struct {
	srv     *server
	devices []benchDevice
	clients []*http.Client
}

// newLoginLoad prepares the logins of devices, and logs each in once, outside the measure, which
// checks the answer and (with resume) gets it a session ticket.
func newLoginLoad(ctx context.Context, srv *server, roots *x509.CertPool, devices []benchDevice, resume bool) (*loginLoad, error) {
	l := &loginLoad{srv: srv, devices: devices, clients: make([]*http.Client, len(devices))}
	for i, dev := range devices {
		cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		} else {
			cfg.SessionTicketsDisabled = true
		}
		if dev.cert != nil {
			cfg.Certificates = []tls.Certificate{*dev.cert}
		}
		l.clients[i] = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 30 * time.Second}
	}
	for i := range devices {
		if _, err := l.login(ctx, i); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// login logs device i in and reports whether its TLS session was resumed.
func (l *loginLoad) login(ctx context.Context, i int) (bool, error) {
	dev := l.devices[i]
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {l.srv.accountID}, "client_id": {dev.id}}
	if dev.cert == nil {
		form.Set("client_secret", "secret-of-"+dev.id)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", l.srv.url+"/device/v1/token", strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := l.clients[i].Do(req)
	if err != nil {
		return false, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "access_token") {
		return false, fmt.Errorf("device %s: HTTP %d: %s", dev.id, resp.StatusCode, body)
	}
	return resp.TLS != nil && resp.TLS.DidResume, nil
}

// measure logs the devices in for d, certLoginWorkers at a time, and returns the logins per
// second, how many logins there were and how many of them resumed their TLS session.
func (l *loginLoad) measure(ctx context.Context, d time.Duration) (float64, int64, int64, error) {
	var logins, resumed atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range certLoginWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(deadline); i = (i + certLoginWorkers) % len(l.devices) {
				r, err := l.login(ctx, i)
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				logins.Add(1)
				if r {
					resumed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	n := logins.Load()
	return float64(n) / time.Since(start).Seconds(), n, resumed.Load(), firstErr
}

// selfSignedCA makes a P-256 CA for the bench's server and device certificates.
func selfSignedCA(cn string) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// writeServerCert writes a server certificate for 127.0.0.1 issued by ca, and its key, as PEM
// files in dir.
func writeServerCert(dir string, ca *x509.Certificate, caKey crypto.Signer) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "devreg bench server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), 0o600)
}
