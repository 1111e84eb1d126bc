package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
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
