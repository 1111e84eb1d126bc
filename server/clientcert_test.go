package server

import (
	"devreg/internal/logtest"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"devreg"
	"devreg/internal/certtest"
)

// certEcho is the server's middleware around a handler that answers with the common names of the
// client certificates the request's context carries, leaf first, one a line.
func certEcho(t *testing.T, cfg Config) (*Server, http.Handler, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	cfg.MaxBody = DefaultMaxBody
	s := &Server{cfg: cfg, log: slog.New(slog.NewJSONHandler(logs, nil)), conns: newConnLimits(DefaultMaxPendingPerAddr, DefaultMaxConnsPerAddr)}
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range devreg.ClientCertificatesFromContext(r.Context()) {
			fmt.Fprintln(w, c.Subject.CommonName)
		}
	}), newMetrics(prometheus.NewRegistry()))
	return s, h, logs
}

func echoed(t *testing.T, c *http.Client, u string, header http.Header) string {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", resp.Status, body)
	}
	return strings.TrimSpace(strings.ReplaceAll(string(body), "\n", " "))
}

// escapeLikeNginx escapes as nginx's $ssl_client_escaped_cert does (ngx_escape_uri): every byte
// but letters, digits and -._~ as %XX, so the PEM's line breaks become %0A and spaces %20.
func escapeLikeNginx(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

// TestClientCertificateOnTheConnection: over devreg's own TLS (its real configuration), a client
// certificate of any CA is taken, not required, and wins over the proxy header.
func TestClientCertificateOnTheConnection(t *testing.T) {
	ca := certtest.NewCA(t, "devreg test CA")
	certFile, keyFile := ca.Server(t).WriteFiles(t, t.TempDir(), "server")
	s, h, _ := certEcho(t, Config{TLSCertFile: certFile, TLSKeyFile: keyFile, ClientCertHeader: "X-SSL-Client-Cert",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	cfg, err := s.tlsConfig()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(h)
	ts.TLS = cfg
	ts.StartTLS()
	defer ts.Close()

	factory := certtest.NewCA(t, "factory root")
	line := factory.Issue(t, "line 3", certtest.IsCA())
	device := line.Issue(t, "device-1")
	other := factory.Issue(t, "device-2")
	header := http.Header{"X-Ssl-Client-Cert": {escapeLikeNginx(string(other.PEM))}}

	if got := echoed(t, httpsClient(ca, device.TLS()), ts.URL, nil); got != "device-1 line 3" {
		t.Errorf("with a client certificate: %q, want the chain device-1 line 3", got)
	}
	if got := echoed(t, httpsClient(ca, device.TLS()), ts.URL, header); got != "device-1 line 3" {
		t.Errorf("with a client certificate and the header from a trusted peer: %q, want the connection's certificate", got)
	}
	if got := echoed(t, httpsClient(ca), ts.URL, nil); got != "" {
		t.Errorf("without a client certificate: %q, want none (and the request served)", got)
	}
}

// TestClientCertificateHeader sends the forms proxies use from a trusted proxy, malformed ones,
// and the header from a peer that is no trusted proxy.
func TestClientCertificateHeader(t *testing.T) {
	factory := certtest.NewCA(t, "factory root")
	line := factory.Issue(t, "line 3", certtest.IsCA())
	device := line.Issue(t, "device-1")
	attacker := factory.Issue(t, "attacker")
	chain := string(device.ChainPEM())

	_, h, logs := certEcho(t, Config{ClientCertHeader: "X-SSL-Client-Cert",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	ts := httptest.NewServer(h)
	defer ts.Close()
	_, xh, xlogs := certEcho(t, Config{ClientCertHeader: "X-Forwarded-Client-Cert",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	xts := httptest.NewServer(xh)
	defer xts.Close()

	xfccElement := func(c *certtest.Cert, withChain bool) string {
		e := fmt.Sprintf(`By=spiffe://example.com/devreg;Hash=%s;Cert="%s"`, c.SHA256(), escapeLikeNginx(string(c.PEM)))
		if withChain {
			e += fmt.Sprintf(`;Chain="%s"`, escapeLikeNginx(string(c.ChainPEM())))
		}
		return e + fmt.Sprintf(`;Subject="CN=%s,O=Example \"Devices\"";URI=;DNS=a.example;DNS=b.example`, c.Cert.Subject.CommonName)
	}
	spacey := strings.NewReplacer("\n", " ").Replace(chain)
	tabby := strings.NewReplacer("\n", "\n\t").Replace(chain) // nginx's old $ssl_client_cert, line breaks kept
	for _, tc := range []struct {
		name  string
		url   string
		value string
		want  string
		log   string
	}{
		{"nginx-escaped-chain", ts.URL, escapeLikeNginx(chain), "device-1 line 3", ""},
		{"nginx-escaped-leaf", ts.URL, escapeLikeNginx(string(device.PEM)), "device-1", ""},
		{"pem-with-spaces", ts.URL, spacey, "device-1 line 3", ""},
		{"pem-with-tabs", ts.URL, strings.ReplaceAll(tabby, "\n", ""), "device-1 line 3", ""},
		{"xfcc-cert", xts.URL, xfccElement(device, false), "device-1", ""},
		{"xfcc-chain", xts.URL, xfccElement(device, true), "device-1 line 3", ""},
		// A proxy that appends its element to the client's (APPEND_FORWARD) cannot be told from a
		// certificate whose SAN holds a "," (see xfcc-key-injected-by-a-san): several elements
		// give no certificate.
		{"xfcc-several-elements", xts.URL, xfccElement(attacker, false) + "," + xfccElement(device, true), "", "holds 2 elements"},
		{"xfcc-no-cert", xts.URL, `By=spiffe://example.com/devreg;Hash=abcd;Subject="CN=device-1"`, "", "neither Cert nor Chain"},
		{"xfcc-open-quote", xts.URL, `Cert="-----BEGIN%20CERTIFICATE`, "", "quote is not closed"},
		{"not-pem", ts.URL, "hello", "", "not understood"},
		{"junk-after-pem", ts.URL, spacey + " junk", "", "certificate 3"},
		{"bad-base64", ts.URL, pemBegin + " !!!! " + pemEnd, "", "base64"},
		{"not-a-certificate", ts.URL, pemBegin + " aGVsbG8= " + pemEnd, "", "certificate 1"},
		{"over-64KiB", ts.URL, strings.Repeat(spacey+" ", 64<<10/len(spacey)+1), "", "more than the 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name, l := "X-SSL-Client-Cert", logs
			if tc.url == xts.URL {
				name, l = "X-Forwarded-Client-Cert", xlogs
			}
			if got := echoed(t, http.DefaultClient, tc.url, http.Header{http.CanonicalHeaderKey(name): {tc.value}}); got != tc.want {
				t.Errorf("certificates %q, want %q", got, tc.want)
			}
			if tc.log != "" && !strings.Contains(l.String(), tc.log) {
				t.Errorf("the refusal was not logged with %q: %s", tc.log, l.String())
			}
		})
	}
	if b64 := strings.Fields(string(device.PEM))[2][:40]; strings.Contains(logs.String()+xlogs.String(), b64) {
		t.Errorf("a log record holds the header's content: %s", logs.String()+xlogs.String())
	}

	// Envoy's forward_client_cert_details APPEND_FORWARD keeps the element the client sent and
	// appends its own: whatever quotes and separators the client's element leaves open, the
	// request never gets a certificate the client named.
	t.Run("xfcc-client-element-tampers", func(t *testing.T) {
		esc := escapeLikeNginx(string(attacker.PEM))
		for _, prefix := range []string{
			`Cert="` + esc, `Cert="` + esc + `;x="`, `x="`, `x=\"`, `Cert=` + esc + `;y="`, `Cert="` + esc + `",`, `"`, `\`,
			`Chain="` + esc + `";Cert="` + esc + `` + "\\",
		} {
			got := echoed(t, http.DefaultClient, xts.URL, http.Header{"X-Forwarded-Client-Cert": {prefix + "," + xfccElement(device, false)}})
			if got != "" && got != "device-1" {
				t.Errorf("client's element %.30q before the proxy's gave the request %q", prefix, got)
			}
		}
	})

	// Envoy writes URI= and DNS= values as they are in the client's certificate, unquoted (its
	// conn_manager_utility.cc: "URI=" + uriSanPeerCertificate()): a certificate whose URI SAN
	// reads "urn:x;Chain=<a victim's certificate>" adds a key to the proxy's element. The request
	// must get the certificate the proxy hashed, or none.
	t.Run("xfcc-key-injected-by-a-san", func(t *testing.T) {
		victim := escapeLikeNginx(string(device.PEM))
		// envoy is the element Envoy adds for a client that presented c.
		envoy := func(c *certtest.Cert) string {
			var uris []string
			for _, u := range c.Cert.URIs {
				uris = append(uris, u.String())
			}
			return fmt.Sprintf(`By=spiffe://example.com/devreg;Hash=%s;Cert="%s";Subject="CN=%s";URI=%s`,
				c.SHA256(), escapeLikeNginx(string(c.PEM)), c.Cert.Subject.CommonName, strings.Join(uris, ","))
		}
		for _, san := range []string{
			"urn:x;Chain=" + victim,
			"urn:x;Cert=" + victim,
			"urn:x;Hash=" + device.SHA256() + ";Cert=" + victim,
			"urn:x;Hash=" + device.SHA256() + ";Chain=" + victim,
			// A "," starts an element of the client's own making, Hash and all.
			"urn:x,Hash=" + device.SHA256() + ";Cert=" + victim,
		} {
			sly := factory.Issue(t, "sly", certtest.URIs(san))
			if got := echoed(t, http.DefaultClient, xts.URL, http.Header{"X-Forwarded-Client-Cert": {envoy(sly)}}); got != "" && got != "sly" {
				t.Errorf("URI SAN %.40q gave the request %q, want the client's own certificate or none", san, got)
			}
		}
		if got := echoed(t, http.DefaultClient, xts.URL, http.Header{"X-Forwarded-Client-Cert": {envoy(factory.Issue(t, "plain", certtest.URIs("urn:x")))}}); got != "plain" {
			t.Errorf("a plain URI SAN gave %q, want plain", got)
		}
	})

	t.Run("spoofed-by-untrusted-peer", func(t *testing.T) {
		spoofer := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
		for range 3 {
			if got := echoed(t, spoofer, ts.URL, http.Header{"X-Ssl-Client-Cert": {escapeLikeNginx(chain)}}); got != "" {
				t.Fatalf("the header from 127.0.0.2, no trusted proxy, gave the request the certificates %q", got)
			}
		}
		if n := strings.Count(logs.String(), "does not come from a --trusted-proxy"); n != 1 {
			t.Errorf("3 spoofed headers logged %d times, want once (a minute)", n)
		}
	})
}

// TestClientCertificateHeaderNeedsTheOption: without --tls-client-cert-header, no header is
// read, whatever its name and whoever sends it.
func TestClientCertificateHeaderNeedsTheOption(t *testing.T) {
	device := certtest.NewCA(t, "factory root").Issue(t, "device-1")
	_, h, _ := certEcho(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	ts := httptest.NewServer(h)
	defer ts.Close()
	for _, name := range []string{"X-Ssl-Client-Cert", "X-Forwarded-Client-Cert", "Ssl-Client-Cert"} {
		if got := echoed(t, http.DefaultClient, ts.URL, http.Header{name: {escapeLikeNginx(string(device.PEM))}}); got != "" {
			t.Errorf("%s without the option gave %q", name, got)
		}
	}
}
