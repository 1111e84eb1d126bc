package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type cli struct {
	dir string
	env []string
}

func (c cli) run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestFactoryLine runs the factory-line commands against a real server: generate, import,
// re-import, list and export, and the refusals a station meets.
func TestFactoryLine(t *testing.T) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	url, _ := serve(t, dir)
	c := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + acme.APIKey}}

	code, out, errOut := c.run(t, "", "devicetypes", "create", "--name", "Thermostat T1", "--min-secret-length", "20", "--rotation-grace", "72h")
	var dt struct {
		ID, Name             string
		RotationGraceSeconds *int `json:"rotation_grace_seconds"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &dt) != nil || dt.ID == "" {
		t.Fatalf("devicetypes create = %d %s %s", code, out, errOut)
	}
	if dt.RotationGraceSeconds == nil || *dt.RotationGraceSeconds != 72*3600 {
		t.Errorf("devicetypes create --rotation-grace 72h made rotation_grace_seconds %v, want %d", dt.RotationGraceSeconds, 72*3600)
	}
	// The console's duration syntax works here too, and a wrong one is refused, not ignored.
	code, out, errOut = c.run(t, "", "devicetypes", "create", "--name", "Gateway G2", "--rotation-grace", "2 days 12 hours")
	gw := dt
	gw.RotationGraceSeconds = nil // decode into a pointer of its own, not through dt's
	if code != 0 || json.Unmarshal([]byte(out), &gw) != nil || gw.RotationGraceSeconds == nil || *gw.RotationGraceSeconds != 60*3600 {
		t.Errorf("devicetypes create --rotation-grace \"2 days 12 hours\" = %d %s %s, want rotation_grace_seconds %d", code, out, errOut, 60*3600)
	}
	for _, bad := range []string{"a week", "-1h"} {
		if code, _, errOut := c.run(t, "", "devicetypes", "create", "--name", "Bad", "--rotation-grace", bad); code == 0 || !strings.Contains(errOut, "rotation-grace") {
			t.Errorf("devicetypes create --rotation-grace %q = %d %s, want it refused", bad, code, errOut)
		}
	}
	if code, out, _ := c.run(t, "", "devicetypes", "list"); code != 0 || !strings.Contains(out, dt.ID) || !strings.Contains(out, "Thermostat T1") {
		t.Errorf("devicetypes list = %d:\n%s", code, out)
	}

	lot := filepath.Join(dir, "lot-0042.csv")
	if code, _, errOut := c.run(t, "", "devices", "generate", "--count", "500", "--prefix", "T1-2026-", "-o", lot); code != 0 {
		t.Fatalf("devices generate = %d %s", code, errOut)
	}
	fi, err := os.Stat(lot)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	data, _ := os.ReadFile(lot)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 500 || !strings.HasPrefix(lines[0], "T1-2026-001, ") || !strings.HasPrefix(lines[499], "T1-2026-500, ") {
		t.Fatalf("generated %d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	if secret := strings.TrimSuffix(strings.Split(lines[0], ", ")[1], ","); len(secret) != 24 || secret == strings.TrimSuffix(strings.Split(lines[1], ", ")[1], ",") {
		t.Errorf("secret %q: want 24 random characters, different per device", secret)
	}

	for _, want := range []string{`"created": 500`, `"unchanged": 500`} {
		code, out, errOut := c.run(t, "", "devices", "import", "--device-type", dt.ID, lot)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("devices import = %d, want %s:\n%s%s", code, want, out, errOut)
		}
	}
	if code, out, _ := c.run(t, string(data), "devices", "import", "--device-type", dt.ID, "--dry-run", "-"); code != 0 || !strings.Contains(out, `"dry_run": true`) {
		t.Errorf("devices import --dry-run from stdin = %d:\n%s", code, out)
	}

	code, out, _ = c.run(t, "", "devices", "export", "--device-type", dt.ID)
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if code != 0 || err != nil || len(rows) != 501 {
		t.Fatalf("devices export = %d, %d rows, %v", code, len(rows), err)
	}
	if strings.Join(rows[0], ",") != "device_id,device_type_id,status,batch_id,created_at,last_seen_at" || rows[1][0] != "T1-2026-001" || rows[500][0] != "T1-2026-500" || rows[1][1] != dt.ID {
		t.Errorf("export header or rows: %v %v %v", rows[0], rows[1], rows[500])
	}
	if strings.Contains(out, strings.TrimSuffix(strings.Split(lines[0], ", ")[1], ",")) {
		t.Errorf("export contains a secret")
	}
	code, out, _ = c.run(t, "", "devices", "list", "--device-type", dt.ID, "--json")
	if n := strings.Count(out, "\n"); code != 0 || n != 500 {
		t.Errorf("devices list --json = %d with %d lines, want 500", code, n)
	}
	if code, out, _ := c.run(t, "", "devices", "list"); code != 0 || !strings.Contains(out, "DEVICE ID") || !strings.Contains(out, "T1-2026-250") {
		t.Errorf("devices list = %d:\n%.300s", code, out)
	}

	t.Run("refused-file", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.csv")
		os.WriteFile(bad, []byte("good-1, a-long-enough-secret-001,\nbad id, a-long-enough-secret-002,\ngood-2, short-secret\n"), 0o600)
		code, out, errOut := c.run(t, "", "devices", "import", "--device-type", dt.ID, bad)
		if code != 1 || out != "" || !strings.Contains(errOut, "nothing was registered") ||
			!strings.Contains(errOut, "device ID contains a space") || !strings.Contains(errOut, "this device type needs at least 20") {
			t.Errorf("bad file = %d, stdout %q, stderr:\n%s", code, out, errOut)
		}
		// Entries counted from 1, as in the console: "bad id" is the second.
		if !regexp.MustCompile(`(?m)^2 +2 +bad id +device ID contains a space$`).MatchString(errOut) {
			t.Errorf("the refusal does not name entry 2 on line 2:\n%s", errOut)
		}
		// Many problems of one kind are counted once before the list.
		var many strings.Builder
		for i := range 300 {
			fmt.Fprintf(&many, "short-%03d, short-secret\n", i)
		}
		os.WriteFile(bad, []byte(many.String()), 0o600)
		_, _, errOut = c.run(t, "", "devices", "import", "--device-type", dt.ID, bad)
		if !regexp.MustCompile(`(?m)^300 × +secret is 12 characters long[^\n]+entries 1–300 \(lines 1–300\)$`).MatchString(errOut) {
			t.Errorf("300 short secrets are not counted as one kind:\n%.600s", errOut)
		}
	})
	t.Run("wrong-api-key", func(t *testing.T) {
		code, _, errOut := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=drk_wrong"}}.run(t, "", "devicetypes", "list")
		if code != 1 || !strings.Contains(errOut, "the server refused the API key") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
			t.Errorf("wrong key = %d, stderr %q; want one sentence", code, errOut)
		}
	})
	t.Run("unreachable-server", func(t *testing.T) {
		code, _, errOut := cli{dir: dir, env: []string{"DEVREG_API_KEY=" + acme.APIKey}}.run(t, "", "devices", "list", "--server", "http://127.0.0.1:1")
		if code != 1 || !strings.Contains(errOut, "cannot reach the devreg server at http://127.0.0.1:1") {
			t.Errorf("unreachable server = %d, stderr %q", code, errOut)
		}
	})
	t.Run("usage-errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"devices", "import", lot},
			{"devices", "generate"},
			{"devices", "import", "--device-type", dt.ID, "--on-conflict", "merge", lot},
			{"devices", "generate", "--count", "2", "--prefix", "bad prefix "},
		} {
			if code, _, errOut := c.run(t, "", args...); code != 2 || errOut == "" {
				t.Errorf("%v = exit %d (%q), want 2 with a message", args, code, errOut)
			}
		}
		if code, out, _ := c.run(t, "", "--version"); code != 0 || !strings.HasPrefix(out, "devreg ") {
			t.Errorf("--version = %d %q", code, out)
		}
		if code, _, errOut := c.run(t, "", "devices", "export", "-h"); code != 0 || !strings.Contains(errOut, "Example:") {
			t.Errorf("devices export -h = %d %q", code, errOut)
		}
		if code, out, _ := c.run(t, "", "completion", "bash"); code != 0 || !strings.Contains(out, "complete -F _devreg devreg") {
			t.Errorf("completion bash = %d", code)
		}
	})
}
