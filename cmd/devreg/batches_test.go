package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestBatchesCommands imports a lot (named after its file), lists it, disables and enables it,
// is refused deleting it without confirmation and with a register key, and deletes it with the
// count printed; on both databases.
func TestBatchesCommands(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testBatchesCommands(t, "--database", url) })
}

func testBatchesCommands(t *testing.T, args ...string) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", args...)
	url, _ := serve(t, dir, args...)
	c := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + acme.APIKey}}

	code, out, errOut := c.run(t, "", "devicetypes", "create", "--name", "Plug")
	var dt struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &dt) != nil {
		t.Fatalf("devicetypes create = %d %s %s", code, out, errOut)
	}
	lot := filepath.Join(dir, "lot 0042.csv")
	if code, _, errOut := c.run(t, "", "devices", "generate", "--count", "30", "--prefix", "P-", "-o", lot); code != 0 {
		t.Fatalf("devices generate = %d %s", code, errOut)
	}
	code, out, errOut = c.run(t, "", "devices", "import", "--device-type", dt.ID, lot)
	var res devreg.RegisterResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Created != 30 {
		t.Fatalf("devices import = %d %s %s", code, out, errOut)
	}
	other := filepath.Join(dir, "other.csv")
	c.run(t, "", "devices", "generate", "--count", "2", "--prefix", "Q-", "-o", other)
	if code, out, errOut := c.run(t, "", "devices", "import", "--device-type", dt.ID, "--batch-name", "Line 3, shift 2", other); code != 0 {
		t.Fatalf("devices import --batch-name = %d %s %s", code, out, errOut)
	}

	code, out, _ = c.run(t, "", "batches", "list", "--device-type", dt.ID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "Line 3, shift 2") ||
		!strings.Contains(lines[2], res.BatchID) || !strings.Contains(lines[2], "lot 0042.csv") {
		t.Errorf("batches list = %d:\n%s", code, out)
	}
	code, out, _ = c.run(t, "", "batches", "list", "--json")
	var first devreg.Batch
	if code != 0 || json.Unmarshal([]byte(strings.Split(out, "\n")[1]), &first) != nil || first.ID != res.BatchID || first.Name != "lot 0042.csv" || first.DeviceCount != 30 {
		t.Errorf("batches list --json = %d:\n%s", code, out)
	}

	for _, verb := range []string{"disable", "enable"} {
		code, out, errOut := c.run(t, "", "batches", verb, res.BatchID)
		var b devreg.Batch
		if code != 0 || json.Unmarshal([]byte(out), &b) != nil || string(b.Status) != verb+"d" {
			t.Errorf("batches %s = %d %s %s", verb, code, out, errOut)
		}
	}

	// Not confirmed: nothing deleted. The question names the lot and its count.
	code, _, errOut = c.run(t, "n\n", "batches", "delete", res.BatchID)
	if code != 1 || !strings.Contains(errOut, `Delete batch "lot 0042.csv" (`+res.BatchID+`) with its 30 devices? [y/N]`) || !strings.Contains(errOut, "nothing deleted") {
		t.Errorf("batches delete answered n = %d %s", code, errOut)
	}
	// A register key may not.
	regKey := newAPIKey(t, url, acme.APIKey, "station", "register")
	station := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + regKey}}
	if code, _, errOut := station.run(t, "", "batches", "delete", "--yes", res.BatchID); code != 1 || !strings.Contains(errOut, `scope "admin"`) {
		t.Errorf("batches delete with a register key = %d %s", code, errOut)
	}
	code, out, errOut = c.run(t, "y\n", "batches", "delete", res.BatchID)
	if code != 0 || strings.TrimSpace(out) != "deleted batch "+res.BatchID+" and its 30 devices" {
		t.Errorf("batches delete answered y = %d %q %s", code, out, errOut)
	}
	if code, _, errOut := c.run(t, "", "batches", "delete", "--yes", res.BatchID); code != 1 || !strings.Contains(errOut, "no batch") {
		t.Errorf("batches delete of a deleted batch = %d %s", code, errOut)
	}
	if code, out, _ := c.run(t, "", "devices", "list", "--device-type", dt.ID, "--json"); code != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("devices left: %d\n%s", code, out)
	}
	if code, _, errOut := c.run(t, "", "batches", "delete"); code != 2 || !strings.Contains(errOut, "one batch ID") {
		t.Errorf("batches delete without an ID = %d %s", code, errOut)
	}
}

// newAPIKey makes an API key of scope through the API with the admin key, and returns it.
func newAPIKey(t *testing.T, server, adminKey, name, scope string) string {
	t.Helper()
	req, err := http.NewRequest("POST", server+"/api/v1/apikeys", strings.NewReader(`{"name": "`+name+`", "scope": "`+scope+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var k struct{ Key string }
	if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&k) != nil || k.Key == "" {
		t.Fatalf("create API key: HTTP %d", resp.StatusCode)
	}
	return k.Key
}
