package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestImportRateLimited runs "devreg devices import" against a server started with a tiny
// --api-rate-limit: a file refused with 429 is sent again after Retry-After and registered, and
// one from stdin, which cannot be sent again, is not, with a message that says how long to wait.
func TestImportRateLimited(t *testing.T) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	url, _ := serve(t, dir, "--api-rate-limit", "12") // a token every 5 s
	c := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + acme.APIKey}}

	code, out, errOut := c.run(t, "", "devicetypes", "create", "--name", "Thermostat T1")
	var dt struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &dt) != nil {
		t.Fatalf("devicetypes create = %d %s %s", code, out, errOut)
	}
	// A lot large enough that the server refuses it without reading it all.
	lot := filepath.Join(dir, "lot.csv")
	if code, _, errOut := c.run(t, "", "devices", "generate", "--count", "20000", "--prefix", "T1-", "-o", lot); code != 0 {
		t.Fatalf("devices generate = %d %s", code, errOut)
	}
	useUp := func(t *testing.T) {
		t.Helper()
		for range 100 {
			req, _ := http.NewRequest("GET", url+"/api/v1/devicetypes", nil)
			req.Header.Set("Authorization", "Bearer "+acme.APIKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				return
			}
		}
		t.Fatal("the key was never limited")
	}

	t.Run("file-is-sent-again", func(t *testing.T) {
		useUp(t)
		code, out, errOut := c.run(t, "", "devices", "import", "--device-type", dt.ID, lot)
		if code != 0 || !strings.Contains(out, `"created": 20000`) {
			t.Fatalf("devices import = %d:\n%s%s", code, out, errOut)
		}
		if !regexp.MustCompile(`rate-limiting this API key \(HTTP 429\) and registered nothing; sending \S+lot\.csv again in [1-5]s \(retry 1 of 5\)`).MatchString(errOut) {
			t.Errorf("stderr does not say that it waits and sends the file again:\n%s", errOut)
		}
	})

	t.Run("stdin-says-how-long-to-wait", func(t *testing.T) {
		data, err := os.ReadFile(lot)
		if err != nil {
			t.Fatal(err)
		}
		useUp(t)
		code, out, errOut := c.run(t, string(data), "devices", "import", "--device-type", dt.ID, "-")
		if code != 1 || out != "" || !regexp.MustCompile(`registered nothing; .*stdin.*try again in [1-5] s`).MatchString(errOut) {
			t.Errorf("devices import - = %d, stdout %q, stderr:\n%s", code, out, errOut)
		}
	})

	t.Run("serve-refuses-a-limit-below-1", func(t *testing.T) {
		for _, args := range [][]string{{"--api-rate-limit", "0"}, {"--api-rate-limit", "-5"}, {"--api-rate-limit", "many"}} {
			code, _, errOut := c.run(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
			if code != 2 || !strings.Contains(errOut, "--api-rate-limit") {
				t.Errorf("serve %v = %d, stderr %q; want 2 with a message", args, code, errOut)
			}
		}
		env := cli{dir: dir, env: []string{"DEVREG_API_RATE_LIMIT=0"}}
		if code, _, errOut := env.run(t, "", "serve", "--addr", "127.0.0.1:0"); code != 2 || !strings.Contains(errOut, "cannot be turned off") {
			t.Errorf("DEVREG_API_RATE_LIMIT=0 serve = %d, stderr %q; want 2 with a message", code, errOut)
		}
	})
}
