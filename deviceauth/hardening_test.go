package deviceauth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// TestParallelWrongSecrets sends 100 wrong secrets for one device at once: at most 10 of them are
// checked (401), every other is refused unchecked (429 with Retry-After), and then the right
// secret is refused too.
func TestParallelWrongSecrets(t *testing.T) { pgtest.Each(t, testParallelWrongSecrets) }

func testParallelWrongSecrets(t *testing.T, database string) {
	e := newEnv(t, database)
	const n = 100
	type answer struct {
		status int
		body   map[string]any
		retry  string
	}
	answers := make(chan answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("POST", e.url+"/device/v1/token", strings.NewReader(e.form().Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("device1", "wrong-secret-"+strconv.Itoa(i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			answers <- answer{resp.StatusCode, body, resp.Header.Get("Retry-After")}
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	counts := map[int]int{}
	for a := range answers {
		counts[a.status]++
		if a.body["error"] != "invalid_client" {
			t.Errorf("answer %d has body %v, want error invalid_client", a.status, a.body)
		}
		if retry, _ := strconv.Atoi(a.retry); a.status == 429 && (retry <= 0 || retry > 15*60) {
			t.Errorf("429 with Retry-After %q, want the rest of the window", a.retry)
		}
	}
	if counts[401] > deviceauthMaxFailures || counts[401]+counts[429] != n {
		t.Errorf("answers to %d parallel wrong secrets: %v; want at most %d checked (401), the rest 429", n, counts, deviceauthMaxFailures)
	}
	status, body, hdr := e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device1", "secretfordevice1")})
	if status != 429 || body["error"] != "invalid_client" || hdr.Get("Retry-After") == "" {
		t.Errorf("right secret after the parallel guesses = %d %v (Retry-After %q), want 429 invalid_client", status, body, hdr.Get("Retry-After"))
	}
}

// TestSuccessesAreNoFailures logs a device in 30 times in a row, after 9 failures: no success is
// throttled or counts as a failure, so the 10th failure is still checked and only then does the
// throttle hold.
func TestSuccessesAreNoFailures(t *testing.T) { pgtest.Each(t, testSuccessesAreNoFailures) }

func testSuccessesAreNoFailures(t *testing.T, database string) {
	e := newEnv(t, database)
	try := func(secret string) int {
		status, _, _ := e.tokenRaw(t, tokenReq{form: e.form(), basic: basicAuth("device1", secret)})
		return status
	}
	for i := range deviceauthMaxFailures - 1 {
		if status := try("wrong-secret"); status != 401 {
			t.Fatalf("failure %d = %d, want 401", i+1, status)
		}
	}
	for i := range 30 {
		if status := try("secretfordevice1"); status != 200 {
			t.Fatalf("success %d after 9 failures = %d, want 200", i+1, status)
		}
	}
	if status := try("wrong-secret"); status != 401 {
		t.Errorf("10th failure = %d, want 401: the successes counted as failures", status)
	}
	if status := try("secretfordevice1"); status != 429 {
		t.Errorf("right secret after 10 failures = %d, want 429", status)
	}
}

// TestTokenEndsWithRegistration checks that a token ends with the registration it was issued
// for: deleting the device and registering it again, or replacing it, with a new secret ends it;
// a resend of the same secret does not.
func TestTokenEndsWithRegistration(t *testing.T) { pgtest.Each(t, testTokenEndsWithRegistration) }

func testTokenEndsWithRegistration(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	register := func(id, secret string, onConflict devreg.OnConflict) {
		t.Helper()
		if _, err := e.admin.RegisterCSV(ctx, e.typeID, strings.NewReader(id+", "+secret), client.RegisterOptions{OnConflict: onConflict}); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	token := func(id, secret string) string {
		t.Helper()
		tok, err := client.DeviceToken(ctx, nil, e.url, e.account, id, secret, "")
		if err != nil {
			t.Fatalf("token for %s: %v", id, err)
		}
		return tok.AccessToken
	}
	active := func(token string) any { t.Helper(); return e.active(t, token) }
	ended := func(name, token string) {
		t.Helper()
		if err := client.CheckIn(ctx, nil, e.url, token, "1.0.0", nil); !isDeviceError(err, 401, "invalid_token") {
			t.Errorf("%s: check-in with the old token: %v, want 401 invalid_token", name, err)
		}
		if a := active(token); a != false {
			t.Errorf("%s: introspection of the old token says active %v, want false", name, a)
		}
	}

	old := token("device1", "secretfordevice1")
	if err := e.admin.DeleteDevice(ctx, "device1"); err != nil {
		t.Fatal(err)
	}
	register("device1", "newsecretfordevice1", "")
	ended("deleted and registered again", old)
	if err := client.CheckIn(ctx, nil, e.url, token("device1", "newsecretfordevice1"), "1.0.0", nil); err != nil {
		t.Errorf("new registration's token: %v", err)
	}

	old = token("device2", "secretfordevice2")
	register("device2", "newsecretfordevice2", devreg.ConflictReplace)
	ended("replaced", old)

	old = token("device3", "secretfordevice3")
	register("device3", "secretfordevice3", "")
	register("device3", "secretfordevice3", devreg.ConflictReplace)
	if err := client.CheckIn(ctx, nil, e.url, old, "1.0.0", nil); err != nil {
		t.Errorf("token after a resend of the same secret: %v", err)
	}
	if a := active(old); a != true {
		t.Errorf("introspection after a resend of the same secret says active %v", a)
	}
}

// TestES256Tokens restarts a server with --signing-alg ES256: new tokens are ES256 and verify
// against the JWKS with a JOSE library, which still lists the Ed25519 key, so a token issued
// before the switch still checks in.
func TestES256Tokens(t *testing.T) {
	e := newEnv(t, "")
	_, body, _ := e.tokenRaw(t, tokenReq{form: e.form("client_id", "device1", "client_secret", "secretfordevice1")})
	before := body["access_token"].(string)
	e.srv.Shutdown(context.Background())
	e.alg = "ES256"
	e.start(t)
	status, body, _ := e.tokenRaw(t, tokenReq{form: e.form("client_id", "device1", "client_secret", "secretfordevice1")})
	if status != 200 {
		t.Fatalf("token after the switch = %d %v", status, body)
	}
	token := body["access_token"].(string)
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if !strings.Contains(string(hdr), `"alg":"ES256"`) {
		t.Errorf("token header after switching to ES256: %s", hdr)
	}
	if _, claims := e.verifyWithJWKS(t, token); claims["sub"] != "device1" {
		t.Errorf("ES256 token claims: %v", claims)
	}
	e.verifyWithJWKS(t, before)
	if err := client.CheckIn(context.Background(), nil, e.url, before, "", nil); err != nil {
		t.Errorf("an EdDSA token issued before the switch no longer checks in: %v", err)
	}
}
