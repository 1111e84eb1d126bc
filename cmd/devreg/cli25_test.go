package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"devreg/server"
)

// runMain runs the command line in this process and returns its exit code, stdout and stderr.
func runMain(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
	code := m.Run(context.Background(), args)
	return code, out.String(), errOut.String()
}

// TestMissingImportFileIsNamed checks that a bulk upload file that does not exist is reported as
// a local file, not as a server that cannot be reached.
func TestMissingImportFileIsNamed(t *testing.T) {
	code, _, errOut := runMain(t, nil, "devices", "import", "--server", "http://127.0.0.1:1", "--api-key", "drk_x", "--device-type", "dt_x", "no-such-lot.csv")
	if code != 1 || !strings.Contains(errOut, "cannot read the bulk upload file no-such-lot.csv") || strings.Contains(errOut, "cannot reach") {
		t.Errorf("import of a missing file = %d, stderr %q; want 1 naming the file", code, errOut)
	}
}

// TestCommandGroupsListTheirCommands checks that "devreg accounts" and "devreg devices" alone (or
// with a command they lack) list their commands.
func TestCommandGroupsListTheirCommands(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"accounts"}, []string{"devreg accounts create"}},
		{[]string{"devices"}, []string{"devreg devices generate", "devreg devices import", "devreg devices list", "devreg devices export"}},
		{[]string{"devices", "remove"}, []string{"has no command \"remove\"", "devreg devices list"}},
		{[]string{"devicetypes"}, []string{"devreg devicetypes create", "devreg devicetypes list"}},
	} {
		code, _, errOut := runMain(t, nil, tc.args...)
		if code != exitUsage {
			t.Errorf("%v = exit %d; want %d", tc.args, code, exitUsage)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr lacks %q:\n%s", tc.args, w, errOut)
			}
		}
		if strings.Contains(errOut, "devreg serve") {
			t.Errorf("%v lists every command, not the group's:\n%s", tc.args, errOut)
		}
	}
}

// TestDeviceTypesCreateHelpShowsOneDefault checks that each flag of devicetypes create -h states
// at most one default.
func TestDeviceTypesCreateHelpShowsOneDefault(t *testing.T) {
	code, _, errOut := runMain(t, nil, "devicetypes", "create", "-h")
	if code != 0 || !strings.Contains(errOut, "-rotation-grace") {
		t.Fatalf("devicetypes create -h = %d:\n%s", code, errOut)
	}
	for _, flagHelp := range strings.Split(errOut, "\n  -") {
		if n := strings.Count(flagHelp, "(default "); n > 1 {
			t.Errorf("a flag's help states %d defaults:\n  -%s", n, flagHelp)
		}
	}
	if code, _, errOut := runMain(t, nil, "devicetypes", "create", "--name", "x", "--rotation-grace", "-5m"); code != exitUsage || !strings.Contains(errOut, "72h") {
		t.Errorf("--rotation-grace -5m = %d %q; want a usage error", code, errOut)
	}
}

// TestAccountsCreateWarnsOfANewDataFolder checks that accounts create says (on stderr) when it
// creates the data folder, and not when the folder exists.
func TestAccountsCreateWarnsOfANewDataFolder(t *testing.T) {
	data := filepath.Join(t.TempDir(), "fresh")
	run := func(email string) (int, string, string) {
		var out, errOut bytes.Buffer
		m := &Main{Stdin: strings.NewReader("a long enough password\n"), Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }}
		code := m.Run(context.Background(), []string{"accounts", "create", "--name", "Acme", "--email", email, "--password-stdin", "--data", data})
		return code, out.String(), errOut.String()
	}
	code, out, errOut := run("first@example.com")
	if code != 0 || !strings.Contains(out, `"api_key"`) || !strings.Contains(errOut, "created a new data folder "+data) || strings.Contains(out, "data folder") {
		t.Fatalf("first accounts create = %d, stdout %q, stderr %q; want the warning on stderr", code, out, errOut)
	}
	if code, _, errOut := run("second@example.com"); code != 0 || strings.Contains(errOut, "data folder") {
		t.Errorf("second accounts create = %d, stderr %q; want no warning", code, errOut)
	}
}

// TestDevicesGenerateWidth checks that --width numbers every device ID to that many digits, and
// that a width too narrow for the last number is refused.
func TestDevicesGenerateWidth(t *testing.T) {
	code, out, errOut := runMain(t, nil, "devices", "generate", "--count", "3", "--start", "9", "--prefix", "L-", "--width", "6")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("generate = %d, %q %q", code, out, errOut)
	}
	for i, want := range []string{"L-000009,", "L-000010,", "L-000011,"} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d = %q; want it to start %q", i+1, lines[i], want)
		}
	}
	if code, _, errOut := runMain(t, nil, "devices", "generate", "--count", "100", "--width", "2"); code != exitUsage || !strings.Contains(errOut, "the last number, 100, has 3 digits") {
		t.Errorf("--width 2 for 100 devices = %d %q; want a usage error naming the digits needed", code, errOut)
	}
	if code, out, _ := runMain(t, nil, "devices", "generate", "--count", "2", "--prefix", "d"); code != 0 || !strings.HasPrefix(out, "d1,") {
		t.Errorf("without --width = %d %q; want as many digits as the largest number", code, out)
	}
}

// TestServeConfigFile checks --config: its keys set serve's flags, the environment and then the
// command line override it, lists become comma-separated values, and an unknown key is refused
// with its name. A cancelled context stops serve right after its settings were accepted.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badAlg := write("bad-alg.yaml", "addr: 127.0.0.1:0\nsigning-alg: nope\n")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	serve := func(env map[string]string, args ...string) (int, string) {
		var out, errOut bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
		code := m.Run(cancelled, append([]string{"serve", "--data", filepath.Join(dir, "data")}, args...))
		return code, errOut.String()
	}
	accepted := func(code int, errOut string) bool {
		return code == exitRefused && strings.Contains(errOut, "interrupted")
	}
	for _, tc := range []struct {
		name     string
		env      map[string]string
		args     []string
		accepted bool
		want     string
	}{
		{"file-applies", nil, []string{"--config", badAlg}, false, "--signing-alg"},
		{"env-config", map[string]string{"DEVREG_CONFIG": badAlg}, nil, false, "--signing-alg"},
		{"env-overrides-file", map[string]string{"DEVREG_SIGNING_ALG": "EdDSA"}, []string{"--config", badAlg}, true, ""},
		{"flag-overrides-file", nil, []string{"--config=" + badAlg, "--signing-alg", "ES256"}, true, ""},
		{"flag-before-config-overrides-file", nil, []string{"--signing-alg", "ES256", "--config", badAlg}, true, ""},
		{"unknown-key", nil, []string{"--config", write("typo.yaml", "addr: 127.0.0.1:0\npublic_url: https://x.example\n")}, false, `unknown key "public_url"`},
		{"list", nil, []string{"--config", write("list.yaml", "addr: 127.0.0.1:0\ntrusted-proxy: [10.0.0.0/8, 192.168.1.1]\napi-rate-limit: 600\n")}, true, ""},
		{"bad-list-item", nil, []string{"--config", write("badlist.yaml", "addr: 127.0.0.1:0\ntrusted-proxy: [10.0.0.0/8, nope]\n")}, false, "nope"},
		{"not-yaml", nil, []string{"--config", write("broken.yaml", "addr: [\n")}, false, "is not a YAML mapping"},
		{"missing-file", nil, []string{"--config", filepath.Join(dir, "none.yaml")}, false, "cannot read the config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, errOut := serve(tc.env, tc.args...)
			if tc.accepted && !accepted(code, errOut) {
				t.Errorf("serve %v = %d %q; want the settings accepted", tc.args, code, errOut)
			}
			if !tc.accepted && (code != exitUsage || !strings.Contains(errOut, tc.want)) {
				t.Errorf("serve %v = %d %q; want a usage error with %q", tc.args, code, errOut, tc.want)
			}
		})
	}
}

// TestEveryCommandsHelpHasAnExample checks that -h of every command shows an example.
func TestEveryCommandsHelpHasAnExample(t *testing.T) {
	if len(subcommands) < 15 {
		t.Fatalf("only %d commands", len(subcommands))
	}
	for name := range subcommands {
		code, _, errOut := runMain(t, nil, append(strings.Fields(name), "-h")...)
		if code != 0 || !regexp.MustCompile(`Examples?:\n  .*devreg `).MatchString(errOut) {
			t.Errorf("devreg %s -h = %d without an example:\n%s", name, code, errOut)
		}
	}
	if code, _, errOut := runMain(t, nil, "serve", "-h"); code != 0 || !strings.Contains(errOut, "Example:\n  devreg serve") {
		t.Errorf("devreg serve -h = %d without an example:\n%s", code, errOut)
	}
}

// TestDevicesListNamesTypesAndPages checks that devices list shows each device's type by name,
// lists every page by default, and with --limit one page and the command for the next, whose
// pages together list every device once.
func TestDevicesListNamesTypesAndPages(t *testing.T) {
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(ctx) })
	_, key, err := srv.Service.NewAccount(ctx, "Lister", "lister@example.com", "a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DEVREG_SERVER": srv.URL(), "DEVREG_API_KEY": key}
	code, out, errOut := runMain(t, env, "devicetypes", "create", "--name", "Gateway G7")
	var dt struct{ ID string }
	if json.Unmarshal([]byte(out), &dt); code != 0 || dt.ID == "" {
		t.Fatalf("devicetypes create = %d %s %s", code, out, errOut)
	}
	lot := filepath.Join(t.TempDir(), "lot.csv")
	os.WriteFile(lot, []byte("g1,secret-of-g1\ng2,secret-of-g2\ng3,secret-of-g3\ng4,secret-of-g4\ng5,secret-of-g5\n"), 0o600)
	if code, out, errOut := runMain(t, env, "devices", "import", "--device-type", dt.ID, lot); code != 0 {
		t.Fatalf("import = %d %s %s", code, out, errOut)
	}
	rows := func(out string) []string {
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
			if !strings.Contains(line, "Gateway G7") {
				t.Errorf("row %q does not name the device type", line)
			}
			ids = append(ids, strings.Fields(line)[0])
		}
		return ids
	}
	code, out, _ = runMain(t, env, "devices", "list")
	if all := rows(out); code != 0 || strings.Join(all, " ") != "g1 g2 g3 g4 g5" {
		t.Fatalf("devices list = %d, devices %v", code, all)
	}
	var seen []string
	args := []string{"devices", "list", "--limit", "2"}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatalf("more than 3 pages of 2 for 5 devices: %v", seen)
		}
		code, out, errOut := runMain(t, env, args...)
		page := rows(out)
		if code != 0 || len(page) > 2 {
			t.Fatalf("%v = %d, %d devices, stderr %q", args, code, len(page), errOut)
		}
		seen = append(seen, page...)
		next, ok := strings.CutPrefix(strings.TrimSpace(errOut), "next page: devreg ")
		if !ok {
			if errOut != "" {
				t.Errorf("last page's stderr %q", errOut)
			}
			break
		}
		args = strings.Fields(next)
	}
	if strings.Join(seen, " ") != "g1 g2 g3 g4 g5" {
		t.Errorf("pages of 2 listed %v; want every device once", seen)
	}
	if code, _, errOut := runMain(t, env, "devices", "list", "--cursor", "abc"); code != exitUsage || !strings.Contains(errOut, "--limit") {
		t.Errorf("--cursor without --limit = %d %q; want a usage error", code, errOut)
	}
}
