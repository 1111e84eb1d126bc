package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "devreg-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "devreg")
	// Built as make build and the Dockerfile build it (without cgo): the binary that ships is the
	// one tested, and deploy's test of the image's build reuses the compiled packages.
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type account struct {
	AccountID string `json:"account_id"`
	Email     string `json:"email"`
	APIKey    string `json:"api_key"`
}

func createAccount(t *testing.T, dir, name, email string, args ...string) account {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"accounts", "create", "--name", name, "--email", email, "--password-stdin"}, args...)...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader("correct horse battery\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("accounts create: %v %s", err, stderrOf(err))
	}
	var a account
	if err := json.Unmarshal(out, &a); err != nil || a.AccountID == "" || !strings.HasPrefix(a.APIKey, "drk_") || a.Email != email {
		t.Fatalf("accounts create printed %s (%v)", out, err)
	}
	return a
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// serve starts "devreg serve" in dir on a free port and returns its URL and process.
func serve(t *testing.T, dir string, args ...string) (string, *exec.Cmd) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`serving on (http://\S+)`)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	select {
	case url, ok := <-found:
		if !ok {
			t.Fatal("devreg serve ended without serving")
		}
		return url, cmd
	case <-time.After(20 * time.Second):
		t.Fatal("devreg serve did not start in 20s")
	}
	return "", nil
}

func stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("devreg serve after SIGTERM: %v, want a clean exit", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("devreg serve did not stop within 20s of SIGTERM")
	}
}

// TestSeedFlowEndToEnd runs the seed document's Method 2 against the real binary, on each
// database: define a device type, find its ID, register devices as JSON and as the bulk upload
// file, and see them by type.
func TestSeedFlowEndToEnd(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testSeedFlowEndToEnd(t, "--database", url) })
}

func testSeedFlowEndToEnd(t *testing.T, dbArgs ...string) {
	ctx := context.Background()
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	url, srv := serve(t, dir, dbArgs...)
	other := createAccount(t, dir, "Other", "ops@other.test", dbArgs...) // while the server runs
	c := client.New(url, acme.APIKey)

	name := "Thermostat T1"
	created, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	types, err := c.ListDeviceTypes(ctx)
	if err != nil || len(types) != 1 || types[0].Name != name {
		t.Fatalf("ListDeviceTypes = %+v, %v", types, err)
	}
	dtID := types[0].ID
	if dtID != created.ID {
		t.Fatalf("listed ID %s, created %s", dtID, created.ID)
	}
	res, err := c.Register(ctx, dtID, []client.Credential{{DeviceID: "proto-1", Secret: "prototype-secret"}}, client.RegisterOptions{})
	if err != nil || res.Created != 1 {
		t.Fatalf("Register JSON = %+v, %v", res, err)
	}
	csv := "device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3,\n\ndevice4, secretfordevice4, device5, secretfordevice5\n"
	res, err = c.RegisterCSV(ctx, dtID, strings.NewReader(csv), client.RegisterOptions{})
	if err != nil || res.Created != 5 {
		t.Fatalf("Register CSV = %+v, %v", res, err)
	}
	_, err = c.RegisterCSV(ctx, dtID, strings.NewReader("device1, changed-secret, bad id, secret-of-bad"), client.RegisterOptions{})
	var ce *client.Error
	if !errorsAs(err, &ce) || ce.Status != 422 || len(ce.Problems) != 1 || ce.Problems[0].Index != 1 || ce.Problems[0].Line != 1 {
		t.Fatalf("bad file: err = %#v, want 422 naming entry 1 on line 1", err)
	}
	devices, next, err := c.ListDevices(ctx, client.DeviceQuery{DeviceTypeID: dtID})
	if err != nil || next != "" {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range devices {
		ids = append(ids, d.DeviceID)
	}
	if diff := cmp.Diff([]string{"proto-1", "device1", "device2", "device3", "device4", "device5"}, ids); diff != "" { // registration order
		t.Errorf("devices of the type (-want +got):\n%s", diff)
	}
	if _, err := client.New(url, other.APIKey).DeviceType(ctx, dtID); !client.IsCode(err, devreg.ENOTFOUND) {
		t.Errorf("another account sees the device type: %v", err)
	}

	// The end-of-line test station: the new device gets a token and checks in.
	connect := func(secret string, extra ...string) (int, string) {
		cmd := exec.Command(binary, append([]string{"device", "connect", "--server", url, "--account", acme.AccountID, "--device", "device3"}, extra...)...)
		cmd.Env = append(os.Environ(), "DEVREG_DEVICE_SECRET="+secret)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, string(out)
	}
	if code, out := connect("secretfordevice3", "--firmware", "1.0.0", "--status", `{"selftest": "pass"}`); code != 0 || !strings.Contains(out, "token:    ok") || !strings.Contains(out, "check-in: ok") {
		t.Errorf("device connect = exit %d:\n%s", code, out)
	}
	if d, err := c.Device(ctx, "device3"); err != nil || d.LastSeenAt == nil || d.FirmwareVersion == nil || *d.FirmwareVersion != "1.0.0" {
		t.Errorf("device3 after device connect = %+v, %v", d, err)
	}
	if code, out := connect("not-the-secret"); code != 1 || !strings.Contains(out, "invalid_client") {
		t.Errorf("device connect with a wrong secret = exit %d:\n%s", code, out)
	}

	stop(t, srv)
	url, _ = serve(t, dir, dbArgs...) // the data survives a restart, under the same key
	c = client.New(url, acme.APIKey)
	res, err = c.RegisterCSV(ctx, dtID, strings.NewReader(csv), client.RegisterOptions{})
	if err != nil || res.Unchanged != 5 {
		t.Errorf("resend after restart = %+v, %v; want 5 unchanged", res, err)
	}
}

func errorsAs(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	*target = e
	return ok
}

func TestServeDefaultsCreateDataDir(t *testing.T) {
	dir := t.TempDir()
	url, srv := serve(t, dir)
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("/healthz = %d %q", resp.StatusCode, body)
	}
	stop(t, srv)
	for _, f := range []string{"devreg-data/devreg.db", "devreg-data/secret.keys"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s was not created: %v", f, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "devreg-data/secret.keys")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("secret.keys has mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestCommandLineRefusals(t *testing.T) {
	dir := t.TempDir()
	createAccount(t, dir, "Acme", "ops@acme.test")
	tests := []struct {
		name  string
		args  []string
		stdin string
		code  int
		says  string
	}{
		{"unknown-command", []string{"frobnicate"}, "", 2, `unknown command "frobnicate"`},
		{"missing-email", []string{"accounts", "create", "--name", "X", "--password-stdin"}, "pw-123456\n", 2, "--email"},
		{"no-terminal-for-prompt", []string{"accounts", "create", "--name", "X", "--email", "x@y.test"}, "", 2, "--password-stdin"},
		{"email-taken", []string{"accounts", "create", "--name", "X", "--email", "ops@acme.test", "--password-stdin"}, "pw-123456\n", 1, "already exists"},
		{"short-password", []string{"accounts", "create", "--name", "X", "--email", "x@y.test", "--password-stdin"}, "short\n", 1, "at least 8"},
		{"bad-max-body", []string{"serve", "--max-body", "lots"}, "", 2, "--max-body"},
		{"bad-signing-alg", []string{"serve", "--signing-alg", "RS256"}, "", 2, "--signing-alg"},
		{"fractional-max-body", []string{"serve", "--max-body", "0.5"}, "", 2, "--max-body"},
		{"nan-max-body", []string{"serve", "--max-body", "NaN"}, "", 2, "--max-body"},
		{"huge-max-body", []string{"serve", "--max-body", "12345678901234567890"}, "", 2, "--max-body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binary, tt.args...)
			cmd.Dir = dir
			cmd.Stdin = strings.NewReader(tt.stdin)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != tt.code || !strings.Contains(stderr.String(), tt.says) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, stderr.String(), tt.code, tt.says)
			}
		})
	}
}
