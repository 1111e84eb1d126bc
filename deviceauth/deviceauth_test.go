package deviceauth_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"devreg"
	"devreg/client"
	"devreg/devtoken"
	"devreg/internal/passwordtest"
	"devreg/internal/pgtest"
	"devreg/server"
)

// clock is a test clock the server reads from its handlers.
type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) Now() time.Time      { return *c.t.Load() }
func (c *clock) Set(t time.Time)     { c.t.Store(&t) }
func (c *clock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

type env struct {
	addr    string // host:port, kept across restarts so the issuer stays the same
	srv     *server.Server
	url     string
	dataDir string
	db      string
	clock   *clock
	account string
	admin   *client.Client
	key     string
	typeID  string
	alg     string // the signing algorithm the server starts with; "" for the default
	// configure, if set, changes the server's configuration (TLS, trusted proxies) before it starts.
	configure func(*server.Config)
	// hc is the HTTP client of the admin client; nil for http.DefaultClient.
	hc *http.Client
}

// start starts a server on dataDir and database, with the test clock.
func (e *env) start(t *testing.T) {
	t.Helper()
	if e.addr == "" {
		e.addr = "127.0.0.1:0"
	}
	cfg := server.Config{Addr: e.addr, DataDir: e.dataDir, Database: e.db, SigningAlg: e.alg, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if e.configure != nil {
		e.configure(&cfg)
	}
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Service.Now = e.clock.Now
	srv.Service.HashPassword = passwordtest.Hash
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	e.srv, e.url = srv, srv.URL()
	e.addr = strings.TrimPrefix(strings.TrimPrefix(e.url, "http://"), "https://")
	if e.key != "" {
		e.admin = e.newAdmin()
	}
}

// newEnv starts a server with an account, a device type and the contract's five devices plus
// a device whose ID holds colons, like a MAC address.
func newEnv(t *testing.T, database string) *env {
	t.Helper()
	return newEnvWith(t, &env{db: database})
}

// newAdmin returns a client of the Operations API with the account's key.
func (e *env) newAdmin() *client.Client {
	c := client.New(e.url, e.key)
	if e.hc != nil {
		c.HTTP = e.hc
	}
	return c
}

// newEnvWith is newEnv for a server configured by e's configure, reached with e's hc.
func newEnvWith(t *testing.T, e *env) *env {
	t.Helper()
	e.dataDir, e.clock = t.TempDir(), &clock{}
	e.clock.Set(time.Now().UTC().Truncate(time.Second))
	e.start(t)
	acct, key, err := e.srv.Service.NewAccount(context.Background(), "Acme", "ops@acme.test", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	e.account, e.key = acct.ID, key
	e.admin = e.newAdmin()
	name := "Thermostat"
	dt, err := e.admin.CreateDeviceType(context.Background(), client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	e.typeID = dt.ID
	csv := "device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3, device4, secretfordevice4, device5, secretfordevice5, AA:BB:CC:DD:EE:FF, mac-secret+with:colon"
	if _, err := e.admin.RegisterCSV(context.Background(), dt.ID, strings.NewReader(csv), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	return e
}

type tokenReq struct {
	form  url.Values
	basic *[2]string // raw Basic user and password, sent as given
	query string
	ctype string
}

func (e *env) tokenRaw(t *testing.T, r tokenReq) (int, map[string]any, http.Header) {
	t.Helper()
	u := e.url + "/device/v1/token"
	if r.query != "" {
		u += "?" + r.query
	}
	req, _ := http.NewRequest("POST", u, strings.NewReader(r.form.Encode()))
	if r.ctype == "" {
		r.ctype = "application/x-www-form-urlencoded"
	}
	req.Header.Set("Content-Type", r.ctype)
	if r.basic != nil {
		req.SetBasicAuth(r.basic[0], r.basic[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, resp.Header
}

func basicAuth(id, secret string) *[2]string {
	return &[2]string{url.QueryEscape(id), url.QueryEscape(secret)}
}

func (e *env) form(extra ...string) url.Values {
	f := url.Values{"grant_type": {"client_credentials"}, "account_id": {e.account}}
	for i := 0; i+1 < len(extra); i += 2 {
		f.Set(extra[i], extra[i+1])
	}
	return f
}

// verifyWithJWKS checks a token with a JOSE library against the published key set, not with the
// code that signed it, and returns its header key ID and claims.
func (e *env) verifyWithJWKS(t *testing.T, token string) (string, map[string]any) {
	t.Helper()
	hc := e.hc
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Get(e.url + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	sig, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	kid := sig.Signatures[0].Header.KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys with kid %q", len(keys), kid)
	}
	payload, err := sig.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("token does not verify with the published key: %v", err)
	}
	var claims map[string]any
	json.Unmarshal(payload, &claims)
	return kid, claims
}

func TestTokenAndCheckIn(t *testing.T) { pgtest.Each(t, testTokenAndCheckIn) }

func testTokenAndCheckIn(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()

	// HTTP Basic with a MAC-address ID: both parts form-encoded first.
	status, body, hdr := e.tokenRaw(t, tokenReq{form: e.form("audience", "https://telemetry.acme.test"), basic: basicAuth("AA:BB:CC:DD:EE:FF", "mac-secret+with:colon")})
	if status != 200 || body["token_type"] != "Bearer" || body["expires_in"] != float64(3600) || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("token = %d %v", status, body)
	}
	kid, claims := e.verifyWithJWKS(t, body["access_token"].(string))
	now := e.clock.Now().Unix()
	want := map[string]any{"iss": e.url, "sub": "AA:BB:CC:DD:EE:FF", "account_id": e.account, "device_type_id": e.typeID,
		"aud": "https://telemetry.acme.test", "iat": float64(now), "exp": float64(now + 3600)}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	if kid == "" || claims["jti"] == "" {
		t.Errorf("token lacks kid or jti: %q %v", kid, claims)
	}

	// client_id and client_secret in the form work too.
	status, body, _ = e.tokenRaw(t, tokenReq{form: e.form("client_id", "device1", "client_secret", "secretfordevice1")})
	if status != 200 {
		t.Fatalf("form credentials = %d %v", status, body)
	}
	token := body["access_token"].(string)

	// Check in; the API and the batch show it.
	if err := client.CheckIn(ctx, nil, e.url, token, "1.2.3", json.RawMessage(`{"battery": 97, "selftest": "pass"}`)); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(time.Minute)
	if err := client.CheckIn(ctx, nil, e.url, token, "", nil); err != nil {
		t.Fatal(err)
	}
	d, err := e.admin.Device(ctx, "device1")
	if err != nil {
		t.Fatal(err)
	}
	if d.LastSeenAt == nil || !d.LastSeenAt.Equal(e.clock.Now()) || d.FirmwareVersion == nil || *d.FirmwareVersion != "1.2.3" ||
		!strings.Contains(string(d.ReportedStatus), `"selftest":"pass"`) && !strings.Contains(string(d.ReportedStatus), `"selftest": "pass"`) {
		t.Errorf("device after check-in = %+v (status %s)", d, d.ReportedStatus)
	}
	b, _ := e.admin.Batch(ctx, d.BatchID)
	if b.ConnectedCount != 1 {
		t.Errorf("batch connected_count = %d, want 1 after two check-ins of one device", b.ConnectedCount)
	}
	connected := false
	never, _, _ := e.admin.ListDevices(ctx, client.DeviceQuery{Connected: &connected})
	if len(never) != 5 {
		t.Errorf("%d devices never connected, want 5", len(never))
	}

	// Introspection: active for the account's own services, not for another account's.
	intro := func(key, token string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.url+"/device/v1/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if status, out := intro(e.key, token); status != 200 || out["active"] != true || out["sub"] != "device1" || out["account_id"] != e.account {
		t.Errorf("introspect = %d %v", status, out)
	}
	_, otherKey, _ := e.srv.Service.NewAccount(ctx, "Other", "ops@other.test", "correct horse")
	if _, out := intro(otherKey, token); out["active"] != false || len(out) != 1 {
		t.Errorf("another account's introspection = %v, want only active=false", out)
	}
	if status, _ := intro("", token); status != 401 {
		t.Errorf("introspection without an API key = %d, want 401", status)
	}

	// Disabling the device stops its token at once.
	if _, err := e.admin.SetDeviceStatus(ctx, "device1", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if err := client.CheckIn(ctx, nil, e.url, token, "", nil); !isDeviceError(err, 401, "invalid_token") {
		t.Errorf("check-in of a disabled device: %v, want 401 invalid_token", err)
	}
	if _, out := intro(e.key, token); out["active"] != false {
		t.Errorf("introspection of a disabled device's token = %v", out)
	}
	// Disabling the batch stops every device of it.
	status, body, _ = e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device2", "secretfordevice2")})
	token2, _ := body["access_token"].(string)
	if _, err := e.admin.SetBatchStatus(ctx, d.BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if err := client.CheckIn(ctx, nil, e.url, token2, "", nil); status != 200 || !isDeviceError(err, 401, "invalid_token") {
		t.Errorf("check-in in a disabled batch: %v, want 401", err)
	}
	if status, body, _ := e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device3", "secretfordevice3")}); status != 401 || body["error"] != "invalid_client" {
		t.Errorf("token for a device of a disabled batch = %d %v, want 401 invalid_client", status, body)
	}

	// Expired tokens are refused.
	e.admin.SetBatchStatus(ctx, d.BatchID, devreg.StatusEnabled)
	_, body, _ = e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device4", "secretfordevice4")})
	e.clock.Add(time.Hour)
	if err := client.CheckIn(ctx, nil, e.url, body["access_token"].(string), "", nil); !isDeviceError(err, 401, "invalid_token") {
		t.Errorf("check-in with an expired token: %v", err)
	}
}

func isDeviceError(err error, status int, code string) bool {
	de, ok := err.(*client.DeviceError)
	return ok && de.Status == status && de.Code == code
}

func TestTokenRefusals(t *testing.T) { pgtest.Each(t, testTokenRefusals) }

func testTokenRefusals(t *testing.T, database string) {
	e := newEnv(t, database)
	wantBody := map[string]any{"error": "invalid_client"}
	tests := []struct {
		name   string
		req    tokenReq
		status int
		code   string
	}{
		{"400/credentials-in-query", tokenReq{form: e.form(), query: "client_id=device1&client_secret=secretfordevice1"}, 400, "invalid_request"},
		{"400/not-a-form", tokenReq{form: e.form("client_id", "device1", "client_secret", "secretfordevice1"), ctype: "application/json"}, 400, "invalid_request"},
		{"400/no-grant-type", tokenReq{form: url.Values{"account_id": {e.account}, "client_id": {"device1"}, "client_secret": {"secretfordevice1"}}}, 400, "invalid_request"},
		{"400/password-grant", tokenReq{form: e.form("grant_type", "password", "client_id", "device1", "client_secret", "secretfordevice1")}, 400, "unsupported_grant_type"},
		{"400/no-account", tokenReq{form: url.Values{"grant_type": {"client_credentials"}}, basic: basicAuth("device1", "secretfordevice1")}, 400, "invalid_request"},
		{"400/two-ways-to-authenticate", tokenReq{form: e.form("client_id", "device1", "client_secret", "secretfordevice1"), basic: basicAuth("device1", "secretfordevice1")}, 400, "invalid_request"},
		{"401/no-credentials", tokenReq{form: e.form()}, 401, "invalid_client"},
		{"401/wrong-secret", tokenReq{form: e.form(), basic: basicAuth("device1", "secretfordevice2")}, 401, "invalid_client"},
		{"401/secret-breaking-the-policy", tokenReq{form: e.form(), basic: basicAuth("device1", "x")}, 401, "invalid_client"},
		{"401/unknown-device", tokenReq{form: e.form(), basic: basicAuth("nobody", "secretfordevice1")}, 401, "invalid_client"},
		{"401/other-account", tokenReq{form: e.form("account_id", "acc_other"), basic: basicAuth("device1", "secretfordevice1")}, 401, "invalid_client"},
		{"401/odd-bytes-in-ids", tokenReq{form: e.form("account_id", "acc\x00\xff", "client_id", "dev\x00\xff", "client_secret", "secretfordevice1")}, 401, "invalid_client"},
		{"401/colon-id-sent-unencoded", tokenReq{form: e.form(), basic: &[2]string{"AA%3ABB", "x"}}, 401, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, hdr := e.tokenRaw(t, tt.req)
			if status != tt.status || body["error"] != tt.code {
				t.Errorf("= %d %v, want %d %s", status, body, tt.status, tt.code)
			}
			if status == 401 && fmt.Sprint(body) != fmt.Sprint(wantBody) {
				t.Errorf("401 body %v differs from %v: it must not tell the failures apart", body, wantBody)
			}
			if tt.req.basic != nil && status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("401 to Basic credentials without WWW-Authenticate")
			}
		})
	}
	t.Run("401/disabled-device", func(t *testing.T) {
		e.admin.SetDeviceStatus(context.Background(), "device5", devreg.StatusDisabled)
		status, body, _ := e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device5", "secretfordevice5")})
		if status != 401 || fmt.Sprint(body) != fmt.Sprint(wantBody) {
			t.Errorf("= %d %v, want 401 invalid_client", status, body)
		}
	})
}

func TestThrottle(t *testing.T) { pgtest.Each(t, testThrottle) }

func testThrottle(t *testing.T, database string) {
	e := newEnv(t, database)
	try := func(id, secret string) (int, http.Header) {
		status, _, hdr := e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth(id, secret)})
		return status, hdr
	}
	if status, _ := try("device1", "secretfordevice1"); status != 200 {
		t.Fatalf("first login = %d", status)
	}
	for _, id := range []string{"device1", "ghost"} {
		for i := range deviceauthMaxFailures {
			if status, _ := try(id, "wrong-secret-"+strconv.Itoa(i)); status != 401 {
				t.Fatalf("%s failure %d = %d, want 401", id, i+1, status)
			}
			e.clock.Add(time.Second)
		}
	}
	e.clock.Add(time.Minute)
	for _, tc := range []struct{ id, secret string }{{"device1", "secretfordevice1"}, {"ghost", "whatever-secret"}} {
		status, hdr := try(tc.id, tc.secret)
		retry, _ := strconv.Atoi(hdr.Get("Retry-After"))
		if status != 429 || retry <= 0 || retry > 15*60 {
			t.Errorf("%s after 10 failures = %d, Retry-After %q; want 429 with the rest of the window", tc.id, status, hdr.Get("Retry-After"))
		}
	}
	if status, _ := try("device2", "secretfordevice2"); status != 200 {
		t.Errorf("another device is held up too: %d", status)
	}
	e.clock.Add(15 * time.Minute)
	if status, _ := try("device1", "secretfordevice1"); status != 200 {
		t.Errorf("after the window, right secret = %d, want 200", status)
	}
}

const deviceauthMaxFailures = 10

func TestKeyRotation(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	tok, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", "secretfordevice1", "")
	if err != nil {
		t.Fatal(err)
	}
	oldKid, _ := e.verifyWithJWKS(t, tok.AccessToken)

	// Rotate both keys: append a line to each file and restart.
	appendLine := func(name, line string) {
		f, err := os.OpenFile(filepath.Join(e.dataDir, name), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(f, line)
		f.Close()
	}
	appendLine("signing.keys", devtoken.NewKeyLine(devtoken.EdDSA))
	secretLine := newSecretKeyLine(t)
	appendLine("secret.keys", secretLine)
	e.srv.Shutdown(ctx)
	e.start(t)

	if _, claims := e.verifyWithJWKS(t, tok.AccessToken); claims["sub"] != "device1" {
		t.Errorf("old token no longer verifies with the JWKS after rotation")
	}
	if err := client.CheckIn(ctx, nil, e.url, tok.AccessToken, "2.0.0", nil); err != nil {
		t.Errorf("old token refused after rotation: %v", err)
	}
	tok2, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", "secretfordevice1", "")
	if err != nil {
		t.Fatal(err)
	}
	if newKid, _ := e.verifyWithJWKS(t, tok2.AccessToken); newKid == oldKid {
		t.Errorf("new tokens still signed with the old key %s", oldKid)
	}

	// device1 authenticated after the rotation, so its hash moved to the new secret key; the
	// others did not, and a server does not start without the keys of its stored hashes. Once
	// they are deleted, with only the new key left, device1 still gets in.
	for _, id := range []string{"device2", "device3", "device4", "device5", "AA:BB:CC:DD:EE:FF"} {
		if err := e.admin.DeleteDevice(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(e.dataDir, "secret.keys"), []byte(secretLine+"\n"), 0o600)
	e.srv.Shutdown(ctx)
	e.start(t)
	if _, err := client.DeviceToken(ctx, nil, e.url, e.account, "device1", "secretfordevice1", ""); err != nil {
		t.Errorf("device1 after its hash moved to the new key: %v", err)
	}
}

func newSecretKeyLine(t *testing.T) string {
	t.Helper()
	// The same format the server writes; see credential.NewKeyLine.
	return credentialNewKeyLine()
}

func TestMetadataAndCheckInRefusals(t *testing.T) {
	e := newEnv(t, "")
	resp, err := http.Get(e.url + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if meta["issuer"] != e.url || meta["token_endpoint"] != e.url+"/device/v1/token" || meta["jwks_uri"] != e.url+"/.well-known/jwks.json" {
		t.Errorf("metadata = %v", meta)
	}
	tok, err := client.DeviceToken(context.Background(), nil, e.url, e.account, "device1", "secretfordevice1", "")
	if err != nil {
		t.Fatal(err)
	}
	tampered := tok.AccessToken[:len(tok.AccessToken)-4] + "AAAA"
	big := `{"status": {"blob": "` + strings.Repeat("x", 17<<10) + `"}}`
	tests := []struct {
		name, token, body string
		status            int
	}{
		{"401/no-token", "", `{}`, 401},
		{"401/tampered", tampered, `{}`, 401},
		{"401/api-key-is-no-device-token", e.key, `{}`, 401},
		{"400/status-not-object", tok.AccessToken, `{"status": "fine"}`, 400},
		{"400/not-json", tok.AccessToken, `{"status": `, 400},
		{"413/status-too-large", tok.AccessToken, big, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.url+"/device/v1/checkin", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("= %d %s, want %d", resp.StatusCode, b, tt.status)
			}
		})
	}
	if d, _ := e.admin.Device(context.Background(), "device1"); d.LastSeenAt != nil {
		t.Errorf("refused check-ins recorded a check-in")
	}
}
