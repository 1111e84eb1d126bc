package deviceauth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"devreg/internal/logtest"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/devcert"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
	"devreg/server"
)

// mtlsEnv is a devreg serving HTTPS, asking devices for their certificates, whose device type
// trusts the factory CA; logs holds what it logs.
type mtlsEnv struct {
	*env
	serverCA *certtest.Cert
	factory  *certtest.Cert
	logs     *logtest.Buffer
}

func newMTLSEnv(t *testing.T, database string) *mtlsEnv {
	t.Helper()
	serverCA := certtest.NewCA(t, "devreg server CA")
	certFile, keyFile := serverCA.Server(t).WriteFiles(t, t.TempDir(), "server")
	logs := &logtest.Buffer{}
	e := newEnvWith(t, &env{db: database, hc: deviceClient(serverCA, nil), configure: func(c *server.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}})
	m := &mtlsEnv{env: e, serverCA: serverCA, factory: certtest.NewCA(t, "Acme factory CA"), logs: logs}
	if _, err := e.admin.AddTrustedCA(context.Background(), e.typeID, string(m.factory.PEM)); err != nil {
		t.Fatal(err)
	}
	return m
}

// deviceClient is an HTTP client that trusts serverCA and presents cert (nil: none), on a new
// connection per request.
func deviceClient(serverCA, cert *certtest.Cert) *http.Client {
	cfg := &tls.Config{RootCAs: serverCA.Pool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{cert.TLS()}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 30 * time.Second}
}

// post sends form to path as a device presenting cert (nil: none), with an optional bearer
// token, and returns the status, the decoded answer and the header.
func (m *mtlsEnv) post(t *testing.T, cert *certtest.Cert, path, bearer string, form url.Values) (int, map[string]any, http.Header) {
	t.Helper()
	return postTo(t, deviceClient(m.serverCA, cert), m.url+path, bearer, form, nil)
}

func postTo(t *testing.T, hc *http.Client, u, bearer string, form url.Values, header http.Header) (int, map[string]any, http.Header) {
	t.Helper()
	ctype := "application/x-www-form-urlencoded"
	body := form.Encode()
	if strings.HasSuffix(u, "/checkin") {
		ctype, body = "application/json", `{"firmware_version": "1.0.0"}`
	}
	req, _ := http.NewRequest("POST", u, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for k, v := range header {
		req.Header[k] = v
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(raw, &out)
	return resp.StatusCode, out, resp.Header
}

// certToken asks for a token for device by cert alone (RFC 8705 tls_client_auth).
func (m *mtlsEnv) certToken(t *testing.T, cert *certtest.Cert, device string) (int, map[string]any, http.Header) {
	t.Helper()
	return m.post(t, cert, "/device/v1/token", "", m.form("client_id", device))
}

// claims decodes a token's claims, checked against the published keys.
func (m *mtlsEnv) claims(t *testing.T, token string) map[string]any {
	t.Helper()
	_, c := m.verifyWithJWKS(t, token)
	return c
}

// x5tS256 is RFC 8705 §3.1's thumbprint of cert, computed here from the DER, apart from devcert.
func x5tS256(cert *certtest.Cert) string {
	sum := sha256.Sum256(cert.Cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestX5tS256Vector checks the thumbprint computation this file tests against: on a certificate
// openssl reads (when it is installed), openssl's SHA-256 of the DER in base64url without padding
// equals it, as RFC 8705 §3.1 defines x5t#S256.
func TestX5tS256Vector(t *testing.T) {
	cert := certtest.NewCA(t, "vector").Issue(t, "device1")
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Logf("openssl not installed; the thumbprint is checked against the encoding by hand only")
	} else {
		cmd := exec.Command("openssl", "x509", "-outform", "DER")
		cmd.Stdin = bytes.NewReader(cert.PEM)
		der, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		if got := strings.TrimRight(base64.URLEncoding.EncodeToString(sum[:]), "="); got != x5tS256(cert) {
			t.Errorf("openssl's x5t#S256 = %s, ours %s", got, x5tS256(cert))
		}
	}
	if got := devcert.X5tS256(cert.Cert); got != x5tS256(cert) {
		t.Errorf("devcert.X5tS256 = %s, want %s", got, x5tS256(cert))
	}
	if got := x5tS256(cert); len(got) != 43 || strings.ContainsAny(got, "+/=") {
		t.Errorf("x5t#S256 = %q, want 43 base64url characters without padding", got)
	}
}

// TestCertificateLogin: over devreg's own TLS, a device gets a token by its certificate alone,
// pinned or chained to its type's CA; the token is bound to the certificate (cnf x5t#S256),
// introspection shows it, and the check-in takes the token only with that certificate.
func TestCertificateLogin(t *testing.T) { pgtest.Each(t, testCertificateLogin) }

func testCertificateLogin(t *testing.T, database string) {
	m := newMTLSEnv(t, database)
	ctx := context.Background()
	pinned := m.factory.Issue(t, "device1")
	cred, err := m.admin.AddCredential(ctx, "device1", devreg.NewCredential{Certificate: string(pinned.PEM)})
	if err != nil {
		t.Fatal(err)
	}
	byCA := m.factory.Issue(t, "device2")

	tokens := map[string]string{}
	for _, tt := range []struct {
		name, device string
		cert         *certtest.Cert
		cred         any
	}{
		{"pinned", "device1", pinned, cred.ID},
		{"type-ca", "device2", byCA, nil},
	} {
		status, body, _ := m.certToken(t, tt.cert, tt.device)
		if status != 200 || body["token_type"] != "Bearer" {
			t.Fatalf("%s: token by certificate = %d %v", tt.name, status, body)
		}
		tokens[tt.name] = body["access_token"].(string)
		claims := m.claims(t, tokens[tt.name])
		cnf, _ := claims["cnf"].(map[string]any)
		if cnf["x5t#S256"] != x5tS256(tt.cert) || len(cnf) != 1 || claims["sub"] != tt.device || claims["cred"] != tt.cred {
			t.Errorf("%s: claims = %v, want cnf {x5t#S256: %s} and cred %v", tt.name, claims, x5tS256(tt.cert), tt.cred)
		}
		if status, body, _ := m.post(t, tt.cert, "/device/v1/checkin", tokens[tt.name], nil); status != 204 {
			t.Errorf("%s: check-in with the token and its certificate = %d %v", tt.name, status, body)
		}
		// RFC 8705 §3: a bound token is taken only with its certificate.
		for _, other := range []struct {
			name string
			cert *certtest.Cert
		}{{"no-certificate", nil}, {"other-certificate", m.factory.Issue(t, tt.device)}} {
			status, body, hdr := m.post(t, other.cert, "/device/v1/checkin", tokens[tt.name], nil)
			if status != 401 || body["error"] != "invalid_token" || !strings.Contains(hdr.Get("WWW-Authenticate"), "invalid_token") {
				t.Errorf("%s: check-in with the bound token and %s = %d %v, want 401 invalid_token", tt.name, other.name, status, body)
			}
		}
	}

	// Introspection shows the binding, for the services that take the token.
	hc := m.hc
	req, _ := http.NewRequest("POST", m.url+"/device/v1/introspect", strings.NewReader(url.Values{"token": {tokens["type-ca"]}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+m.key)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var intro map[string]any
	json.NewDecoder(resp.Body).Decode(&intro)
	resp.Body.Close()
	if cnf, _ := intro["cnf"].(map[string]any); intro["active"] != true || cnf["x5t#S256"] != x5tS256(byCA) {
		t.Errorf("introspection = %v, want active with cnf x5t#S256 %s", intro, x5tS256(byCA))
	}

	// The metadata says so (RFC 8705 §2.1.1, §3.3).
	resp, err = hc.Get(m.url + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Methods []string `json:"token_endpoint_auth_methods_supported"`
		Bound   bool     `json:"tls_client_certificate_bound_access_tokens"`
	}
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if !strings.Contains(strings.Join(meta.Methods, " "), "tls_client_auth") || !meta.Bound {
		t.Errorf("metadata = %+v, want tls_client_auth and bound tokens", meta)
	}

	// A secret sent over a connection with a certificate is the way in: the token is not bound.
	status, body, _ := m.post(t, byCA, "/device/v1/token", "", m.form("client_id", "device2", "client_secret", "secretfordevice2"))
	if status != 200 {
		t.Fatalf("secret over mTLS = %d %v", status, body)
	}
	if claims := m.claims(t, body["access_token"].(string)); claims["cnf"] != nil {
		t.Errorf("a token got with a secret is bound: %v", claims)
	}
	if status, _, _ := m.post(t, nil, "/device/v1/checkin", body["access_token"].(string), nil); status != 204 {
		t.Errorf("the unbound token at check-in without a certificate = %d", status)
	}
	// No secret and no certificate: nothing to go on.
	if status, body, _ := m.certToken(t, nil, "device2"); status != 401 || body["error"] != "invalid_client" {
		t.Errorf("no secret, no certificate = %d %v", status, body)
	}

	// The type-CA token lives as that login would now: pinning another certificate on the device
	// ends it, as does disabling the device; the pinned token ends with its credential.
	other := m.factory.Issue(t, "device2")
	if _, err := m.admin.AddCredential(ctx, "device2", devreg.NewCredential{Certificate: string(other.PEM)}); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := m.post(t, byCA, "/device/v1/checkin", tokens["type-ca"], nil); status != 401 || body["error"] != "invalid_token" {
		t.Errorf("type-CA token once the device has another pinned certificate = %d %v, want 401 invalid_token", status, body)
	}
	if err := m.admin.DeleteCredential(ctx, "device1", cred.ID); err != nil {
		t.Fatal(err)
	}
	if status, body, _ := m.post(t, pinned, "/device/v1/checkin", tokens["pinned"], nil); status != 401 || body["error"] != "invalid_token" {
		t.Errorf("pinned token once its credential is deleted = %d %v, want 401 invalid_token", status, body)
	}
}

// TestCertificateLoginRefusals is the outside adversary's list: certificates that must not let a
// device in get 401 invalid_client and nothing more, and the log says why, with the request ID.
func TestCertificateLoginRefusals(t *testing.T) { pgtest.Each(t, testCertificateLoginRefusals) }

func testCertificateLoginRefusals(t *testing.T, database string) {
	m := newMTLSEnv(t, database)
	ctx := context.Background()
	name := "Lock"
	lock, err := m.admin.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	lockCA := certtest.NewCA(t, "Lock factory CA")
	if _, err := m.admin.AddTrustedCA(ctx, lock.ID, string(lockCA.PEM)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.admin.AddCredential(ctx, "device1", devreg.NewCredential{Certificate: string(m.factory.Issue(t, "device1").PEM)}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tt := range []struct {
		name, device string
		cert         *certtest.Cert
		reason       string
	}{
		{"another-types-ca", "device2", lockCA.Issue(t, "device2"), "does not verify against the device type's trusted CAs"},
		{"pinned-sibling", "device1", m.factory.Issue(t, "device1"), "this certificate is none of them"},
		{"expired", "device2", m.factory.Issue(t, "device2", certtest.Valid(now.Add(-48*time.Hour), now.Add(-24*time.Hour))), "not valid now"},
		{"not-yet-valid", "device2", m.factory.Issue(t, "device2", certtest.Valid(now.Add(24*time.Hour), now.Add(48*time.Hour))), "not valid now"},
		{"wrong-key-usage", "device2", m.factory.Issue(t, "device2", certtest.KeyUsage(x509.KeyUsageKeyEncipherment, x509.ExtKeyUsageServerAuth)), "key usage does not allow digital signatures"},
		{"other-devices-id", "device2", m.factory.Issue(t, "device3"), `device ID is "device3"`},
		{"self-signed-ca", "device2", certtest.NewCA(t, "device2"), "is a CA certificate"},
		{"rsa-1024", "device2", m.factory.Issue(t, "device2", certtest.RSA(1024)), "at least 2048"},
		{"unknown-device", "nosuchdevice", m.factory.Issue(t, "nosuchdevice"), "no such device"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := m.certToken(t, tt.cert, tt.device)
			if status != 401 || len(body) != 1 || body["error"] != "invalid_client" {
				t.Fatalf("token = %d %v, want 401 {\"error\": \"invalid_client\"} and nothing else", status, body)
			}
			id := hdr.Get("X-Request-ID")
			var logged map[string]any
			for _, line := range strings.Split(m.logs.String(), "\n") {
				if strings.Contains(line, id) && strings.Contains(line, "device certificate refused") {
					json.Unmarshal([]byte(line), &logged)
				}
			}
			if reason, _ := logged["reason"].(string); !strings.Contains(reason, tt.reason) || logged["certificate_sha256"] != tt.cert.SHA256() {
				t.Errorf("log of request %s = %v, want the reason %q and the certificate's fingerprint", id, logged, tt.reason)
			}
		})
	}

	// Refused certificates count toward the device's failed logins, like wrong secrets: once
	// they are used up, even the right certificate waits.
	good := m.factory.Issue(t, "device4")
	bad := lockCA.Issue(t, "device4")
	for i := 0; i < 10; i++ {
		if status, _, _ := m.certToken(t, bad, "device4"); status != 401 {
			t.Fatalf("attempt %d with a foreign certificate = %d", i+1, status)
		}
	}
	status, body, hdr := m.certToken(t, good, "device4")
	if status != 429 || body["error"] != "invalid_client" || hdr.Get("Retry-After") == "" {
		t.Errorf("the right certificate after 10 refusals = %d %v, want 429 invalid_client with Retry-After", status, body)
	}
}

// TestCertificateLoginBehindProxy: devreg on plain HTTP behind a TLS proxy takes the device's
// certificate from --tls-client-cert-header (nginx's $ssl_client_escaped_cert) only from a
// --trusted-proxy; from anyone else the header is ignored and the device is refused.
func TestCertificateLoginBehindProxy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		proxies string
		want    int
	}{
		{"trusted-proxy", "127.0.0.1/32", 200},
		{"untrusted-peer", "192.0.2.0/24", 401},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pgtest.Each(t, func(t *testing.T, database string) {
				e := newEnvWith(t, &env{db: database, configure: func(c *server.Config) {
					c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tt.proxies)}
					c.ClientCertHeader = "X-SSL-Client-Escaped-Cert"
				}})
				factory := certtest.NewCA(t, "Acme factory CA")
				if _, err := e.admin.AddTrustedCA(context.Background(), e.typeID, string(factory.PEM)); err != nil {
					t.Fatal(err)
				}
				dev := factory.Issue(t, "device2")
				header := http.Header{"X-Ssl-Client-Escaped-Cert": {strings.ReplaceAll(url.QueryEscape(string(dev.PEM)), "+", "%20")}}
				status, body, _ := postTo(t, http.DefaultClient, e.url+"/device/v1/token", "", e.form("client_id", "device2"), header)
				if status != tt.want {
					t.Fatalf("token with the proxy's header = %d %v, want %d", status, body, tt.want)
				}
				if status != 200 {
					if body["error"] != "invalid_client" || len(body) != 1 {
						t.Errorf("refusal = %v, want only invalid_client", body)
					}
					return
				}
				tok := body["access_token"].(string)
				if status, body, _ := postTo(t, http.DefaultClient, e.url+"/device/v1/checkin", tok, nil, header); status != 204 {
					t.Errorf("check-in with the bound token and the proxy's header = %d %v", status, body)
				}
				if status, _, _ := postTo(t, http.DefaultClient, e.url+"/device/v1/checkin", tok, nil, nil); status != 401 {
					t.Errorf("check-in with the bound token, without the header = %d, want 401", status)
				}
			})
		})
	}
}

// TestCertificateLoginResumedSession: a device that resumes its TLS session (a TLS 1.3 ticket, on
// a new connection) presents no certificate in that handshake, and crypto/tls gives the server the
// one the session was made with: the device still logs in by it, and its token is bound to it.
func TestCertificateLoginResumedSession(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		m := newMTLSEnv(t, database)
		dev := m.factory.Issue(t, "device2")
		cfg := &tls.Config{RootCAs: m.serverCA.Pool(), Certificates: []tls.Certificate{dev.TLS()}, MinVersion: tls.VersionTLS13,
			ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		for i, wantResumed := range []bool{false, true, true} {
			req, _ := http.NewRequest("POST", m.url+"/device/v1/token", strings.NewReader(m.form("client_id", "device2").Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.TLS.DidResume != wantResumed || resp.StatusCode != 200 {
				t.Fatalf("login %d: resumed %v, HTTP %d %v; want resumed %v and a token", i+1, resp.TLS.DidResume, resp.StatusCode, body, wantResumed)
			}
			if cnf, _ := m.claims(t, body["access_token"].(string))["cnf"].(map[string]any); cnf["x5t#S256"] != x5tS256(dev) {
				t.Errorf("login %d: cnf = %v, want the device's certificate", i+1, cnf)
			}
		}
	})
}

// A device type that registers its devices at their first certificate login (auto_register)
// answers the device beyond its hourly limit 429 rate_limited with Retry-After and says why, not
// invalid_client's "too many failed attempts", which would send its maker looking for a wrong
// certificate.
func TestAutoRegisterLimitAtTheTokenEndpoint(t *testing.T) {
	pgtest.Each(t, testAutoRegisterLimitAtTheTokenEndpoint)
}

func testAutoRegisterLimitAtTheTokenEndpoint(t *testing.T, database string) {
	m := newMTLSEnv(t, database)
	on, limit := true, 1
	if _, err := m.admin.UpdateDeviceType(context.Background(), m.typeID, client.DeviceTypeInput{AutoRegister: &on, AutoRegisterLimit: &limit}); err != nil {
		t.Fatal(err)
	}
	if status, out, _ := m.certToken(t, m.factory.Issue(t, "jit-0001"), "jit-0001"); status != http.StatusOK {
		t.Fatalf("first device of the hour: %d %v, want a token", status, out)
	}
	status, out, header := m.certToken(t, m.factory.Issue(t, "jit-0002"), "jit-0002")
	if status != http.StatusTooManyRequests || out["error"] != "rate_limited" || header.Get("Retry-After") == "" {
		t.Fatalf("second device beyond a limit of 1: %d %v Retry-After %q, want 429 rate_limited with Retry-After", status, out, header.Get("Retry-After"))
	}
	if desc, _ := out["error_description"].(string); !strings.Contains(desc, "auto_register_limit") {
		t.Errorf("the answer %q does not say which limit", desc)
	}
}
