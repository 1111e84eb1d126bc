package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"devreg"
)

// TestExpiredKeyIsExplained: a factory line whose key has expired is told so, not just that the
// key was refused.
func TestExpiredKeyIsExplained(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	url, _ := serve(t, dir)
	body := `{"name": "line 3", "scope": "register", "expires_at": "` + time.Now().Add(5*time.Second).UTC().Format(time.RFC3339Nano) + `"}`
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/api/v1/apikeys", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+acme.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k devreg.APIKey
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != 201 || k.ExpiresAt == nil {
		t.Fatalf("create an expiring key: %d %+v %v", resp.StatusCode, k, err)
	}
	list := func() (int, string) {
		code, stdout, stderr := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + k.Key}}.run(t, "", "devicetypes", "list")
		return code, stdout + stderr
	}
	if code, out := list(); code != 0 {
		t.Fatalf("the key before it expires: %d %s", code, out)
	}
	time.Sleep(time.Until(k.ExpiresAt.Add(100 * time.Millisecond)))
	if code, out := list(); code != 1 || !strings.Contains(out, "the API key has expired (key_expired)") {
		t.Errorf("the key after it expired: %d %s", code, out)
	}
}
