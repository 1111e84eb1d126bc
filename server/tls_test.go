package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"devreg/internal/logtest"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"devreg/internal/certtest"
)

// tlsServer starts a server on HTTPS with a certificate of ca in files in a temp dir, and returns
// it with the files' paths.
func tlsServer(t *testing.T, ca *certtest.Cert, cfg Config) (s *Server, certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = ca.Server(t).WriteFiles(t, dir, "server")
	cfg.TLSCertFile, cfg.TLSKeyFile = certFile, keyFile
	return openTestServer(t, cfg), certFile, keyFile
}

// httpsClient trusts ca and keeps its connections alive.
func httpsClient(ca *certtest.Cert, clientCerts ...tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: clientCerts}}}
}

// servedCert makes a new TLS connection (a full handshake) and returns the server's certificate.
func servedCert(t *testing.T, s *Server, ca *certtest.Cert) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", s.ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// getReused GETs /healthz and says whether it went over a connection opened before.
func getReused(t *testing.T, c *http.Client, u string) (reused bool, served *x509.Certificate) {
	t.Helper()
	req, _ := http.NewRequest("GET", u+"/healthz", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET over HTTPS: %s", resp.Status)
	}
	return reused, resp.TLS.PeerCertificates[0]
}

// TestRenewedCertificateFilesAreServed replaces the certificate files of a running server: new
// handshakes get the new certificate within the reload interval, and a keep-alive connection
// opened before goes on working.
func TestRenewedCertificateFilesAreServed(t *testing.T) {
	ca := certtest.NewCA(t, "devreg test CA")
	s, certFile, keyFile := tlsServer(t, ca, Config{TLSReloadEvery: 50 * time.Millisecond})
	if !strings.HasPrefix(s.URL(), "https://") || !strings.HasPrefix(s.PublicURL(), "https://") {
		t.Fatalf("URL %s, public URL %s; want https", s.URL(), s.PublicURL())
	}
	client := httpsClient(ca)
	_, first := getReused(t, client, s.URL())
	// Idle between requests, the TLS connection counts as open, not as sending headers.
	waitFor(t, func() bool { open, pending := s.conns.counts("127.0.0.1"); return open == 1 && pending == 0 },
		"the idle TLS connection to count as open and not as sending headers")

	next := ca.Server(t)
	writeFile(t, keyFile, next.KeyPEM)
	writeFile(t, certFile, next.ChainPEM())
	deadline := time.Now().Add(5 * time.Second)
	for servedCert(t, s, ca).SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("new handshakes still get the old certificate 5s after the files changed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	reused, served := getReused(t, client, s.URL())
	if !reused || served.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("the keep-alive connection opened before the reload: reused %v, certificate serial %v; want it reused with the first certificate %v",
			reused, served.SerialNumber, first.SerialNumber)
	}
}

// TestReloadOnSignal takes the path SIGHUP takes (devreg serve calls ReloadTLS): with the file
// watch out of the way, the new files are served after ReloadTLS and not before; a pair that does
// not load keeps the certificate in use.
func TestReloadOnSignal(t *testing.T) {
	ca := certtest.NewCA(t, "devreg test CA")
	var logs logtest.Buffer
	s, certFile, keyFile := tlsServer(t, ca, Config{TLSReloadEvery: time.Hour, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	first := servedCert(t, s, ca)

	next := ca.Server(t)
	writeFile(t, keyFile, next.KeyPEM)
	writeFile(t, certFile, next.ChainPEM())
	if got := servedCert(t, s, ca); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the new files are served before the reload")
	}
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got := servedCert(t, s, ca); got.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Fatal("after ReloadTLS, new handshakes still get the old certificate")
	}

	// A renewal caught half-way: the new certificate with the old key.
	writeFile(t, certFile, ca.Server(t).ChainPEM())
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("ReloadTLS took a certificate whose key is not in the key file")
	}
	if got := servedCert(t, s, ca); got.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Error("a failed reload changed the certificate in use")
	}
	if !strings.Contains(logs.String(), "the one loaded before stays in use") {
		t.Errorf("the failed reload was not logged: %s", logs.String())
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStalledHandshakeIsCut opens TCP connections to the HTTPS port and sends nothing, or half a
// ClientHello: each holds a slot of the per-address limit on connections sending headers, and
// the server closes it within the header timeout.
func TestStalledHandshakeIsCut(t *testing.T) {
	ca := certtest.NewCA(t, "devreg test CA")
	s, _, _ := tlsServer(t, ca, Config{HeaderTimeout: 300 * time.Millisecond, MaxPendingPerAddr: 1})
	for name, sent := range map[string]string{
		"nothing": "",
		// A TLS record header announcing 200 bytes of handshake, and the first of them.
		"half-client-hello": "\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03",
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, sent)
			waitFor(t, func() bool { _, pending := s.conns.counts("127.0.0.1"); return pending == 1 }, "the stalled handshake to count as sending headers")

			other, err := net.Dial("tcp", s.ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			other.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := other.Read(make([]byte, 1)); err == nil || isTimeout(err) {
				t.Errorf("a second connection during the stall, over the limit of 1: read %v, want it closed at once", err)
			}
			other.Close()

			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(c); isTimeout(err) {
				t.Fatal("the stalled handshake was still open 5s later, with a header timeout of 300ms")
			}
			waitFor(t, func() bool { open, _ := s.conns.counts("127.0.0.1"); return open == 0 }, "the slot to be given back")
		})
	}
	if _, served := getReused(t, httpsClient(ca), s.URL()); served == nil {
		t.Fatal("no certificate")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 5s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckTLS(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // part of the error; "" for none
	}{
		{"plain", Config{}, ""},
		{"files", Config{TLSCertFile: "c", TLSKeyFile: "k"}, ""},
		{"acme", Config{TLSACMEDomains: []string{"devreg.example.com"}, TLSACMEDir: "d"}, ""},
		{"cert-without-key", Config{TLSCertFile: "c"}, "go together"},
		{"key-without-cert", Config{TLSKeyFile: "k"}, "go together"},
		{"acme-and-files", Config{TLSCertFile: "c", TLSKeyFile: "k", TLSACMEDomains: []string{"a.example"}, TLSACMEDir: "d"}, "exclude each other"},
		{"acme-without-dir", Config{TLSACMEDomains: []string{"a.example"}}, "needs --tls-acme-dir"},
		{"dir-without-acme", Config{TLSACMEDir: "d"}, "names no domain"},
		{"acme-url", Config{TLSACMEDomains: []string{"https://a.example"}, TLSACMEDir: "d"}, "not a domain name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.CheckTLS()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("CheckTLS: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestACMEServesOnlyTheGivenDomains: the server's certificates come from autocert's manager, whose
// host policy refuses a handshake for any other name before asking a CA (no network here).
func TestACMEServesOnlyTheGivenDomains(t *testing.T) {
	var logs logtest.Buffer
	s := openTestServer(t, Config{TLSACMEDomains: []string{"devreg.example.com"}, TLSACMEDir: t.TempDir(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if !strings.Contains(strings.Join(s.tls.NextProtos, " "), "acme-tls/1") {
		t.Errorf("NextProtos %v lack acme-tls/1, so the TLS-ALPN-01 challenge could not be answered", s.tls.NextProtos)
	}
	for _, name := range []string{"other.example.com", "evil.devreg.example.com"} {
		c, err := tls.Dial("tcp", s.ln.Addr().String(), &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			t.Errorf("a handshake for %s succeeded", name)
		}
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "not configured in HostWhitelist") },
		"autocert's refusal of the other names in the log")
	if strings.Contains(logs.String(), `host \"devreg.example.com\"`) {
		t.Error("the whitelisted domain itself was refused")
	}
}

// TestHTTPSAnswers: answers over TLS carry HSTS and set the console's cookies Secure; over plain
// HTTP, HSTS only when a trusted proxy says the client came over HTTPS.
func TestHTTPSAnswers(t *testing.T) {
	ca := certtest.NewCA(t, "devreg test CA")
	s, _, _ := tlsServer(t, ca, Config{})
	ctx := context.Background()
	if _, _, err := s.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	client := httpsClient(ca)
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=31536000" {
		t.Errorf("HSTS over HTTPS: %q", got)
	}
	req, _ := http.NewRequest("POST", s.URL()+"/login", strings.NewReader(url.Values{"email": {"o@acme.test"}, "password": {"correct horse battery"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.URL())
	if resp, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(resp.Cookies()) == 0 {
		t.Fatalf("login over HTTPS: %s, no cookie", resp.Status)
	}
	for _, c := range resp.Cookies() {
		if !c.Secure {
			t.Errorf("cookie %s set over HTTPS is not Secure", c.Name)
		}
	}

	plain := openTestServer(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	for _, tc := range []struct {
		name  string
		from  net.IP
		proto string
		want  string
	}{
		{"plain", net.IPv4(127, 0, 0, 1), "", ""},
		{"trusted-proxy-https", net.IPv4(127, 0, 0, 1), "https", "max-age=31536000"},
		{"trusted-proxy-http", net.IPv4(127, 0, 0, 1), "http", ""},
		{"untrusted-says-https", net.IPv4(127, 0, 0, 2), "https", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: tc.from}}).DialContext}}
			req, _ := http.NewRequest("GET", plain.URL()+"/healthz", nil)
			if tc.proto != "" {
				req.Header.Set("X-Forwarded-Proto", tc.proto)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Strict-Transport-Security"); got != tc.want {
				t.Errorf("HSTS %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHandshakeErrorsDoNotFloodTheLog: a client that sends plain HTTP to the HTTPS port, again and
// again, costs itself nothing; the log gets one record a minute of it, not one a connection.
func TestHandshakeErrorsDoNotFloodTheLog(t *testing.T) {
	logs := &logtest.Buffer{}
	s, _, _ := tlsServer(t, certtest.NewCA(t, "devreg test CA"), Config{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	for range 50 {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		io.ReadAll(c)
		c.Close()
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "client sent an HTTP request to an HTTPS server") }, "the first handshake error to be logged")
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(logs.String(), "TLS handshake error"); n != 1 {
		t.Errorf("50 failed handshakes logged %d records, want 1: %s", n, logs.String())
	}
}
