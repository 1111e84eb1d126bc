package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// TestDeviceConnectRotate runs the end-of-line station's "devreg device connect --rotate" against
// the real server, on each database: the factory secret is replaced by one printed once, which
// then logs in, while the factory secret keeps working for the grace; a wrong secret changes
// nothing and fails clearly.
func TestDeviceConnectRotate(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testDeviceConnectRotate(t, "--database", url) })
}

func testDeviceConnectRotate(t *testing.T, dbArgs ...string) {
	ctx := context.Background()
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	url, _ := serve(t, dir, dbArgs...)
	c := client.New(url, acme.APIKey)
	name := "Thermostat T1"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, dt.ID, []client.Credential{{DeviceID: "AA:BB:CC:00:00:01", Secret: "factory-secret-1"}}, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	connect := func(secret string, extra ...string) (int, string, string) {
		t.Helper()
		return cli{dir: dir}.run(t, secret+"\n", append([]string{"device", "connect", "--server", url, "--account", acme.AccountID, "--device", "AA:BB:CC:00:00:01"}, extra...)...)
	}

	before := time.Now()
	code, out, stderr := connect("factory-secret-1", "--rotate", "--firmware", "1.0.0")
	if code != 0 || !strings.Contains(out, "rotate:   ok") || !strings.Contains(out, "token:    ok") || !strings.Contains(out, "check-in: ok") {
		t.Fatalf("device connect --rotate = exit %d:\n%s%s", code, out, stderr)
	}
	newSecret := lineValue(t, out, "new secret")
	credID := lineValue(t, out, "new credential")
	until, err := time.Parse(time.RFC3339, lineValue(t, out, "old secret valid until"))
	if err != nil {
		t.Fatal(err)
	}
	if len(newSecret) < 24 || strings.Count(out, newSecret) != 1 || strings.Contains(stderr, newSecret) {
		t.Errorf("the new secret %q must be printed once, on stdout only:\n%s%s", newSecret, out, stderr)
	}
	grace := time.Duration(devreg.DefaultRotationGraceSeconds) * time.Second
	if until.Before(before.Add(grace).Add(-2*time.Second)) || until.After(time.Now().Add(grace)) {
		t.Errorf("old secret valid until %s, want about now + 7 days", until)
	}

	// The device checked in with the new secret: the new credential has been used.
	creds, err := c.ListCredentials(ctx, "AA:BB:CC:00:00:01")
	if err != nil || len(creds) != 2 || creds[1].ID != credID || creds[1].Source != devreg.CredentialFromDevice || creds[1].LastUsedAt == nil {
		t.Fatalf("credentials after the rotation = %+v, %v; want the new one %s, made by the device and used", creds, err, credID)
	}
	if creds[0].NotAfter == nil || creds[0].NotAfter.Truncate(time.Second).Compare(until) != 0 {
		t.Errorf("the factory credential ends at %v, the command said %s", creds[0].NotAfter, until)
	}
	if d, err := c.Device(ctx, "AA:BB:CC:00:00:01"); err != nil || d.FirmwareVersion == nil || *d.FirmwareVersion != "1.0.0" {
		t.Errorf("device after connect --rotate = %+v, %v; want it checked in", d, err)
	}

	// The printed secret logs in, and so does the factory secret during the grace.
	for _, secret := range []string{newSecret, "factory-secret-1"} {
		if code, out, stderr := connect(secret); code != 0 || !strings.Contains(out, "token:    ok") || !strings.Contains(out, "check-in: ok") {
			t.Errorf("device connect with %q = exit %d:\n%s%s", secret, code, out, stderr)
		}
	}

	// A wrong secret: nothing rotates, and the command says so and fails.
	code, out, stderr = connect("not-the-secret", "--rotate")
	if code != 1 || !strings.Contains(out, "rotate:   FAILED") || !strings.Contains(out, "invalid_client") ||
		!strings.Contains(stderr, "could not rotate its secret") || strings.Contains(out, "new secret") || strings.Contains(out, "token:") {
		t.Errorf("device connect --rotate with a wrong secret = exit %d:\n%s%s", code, out, stderr)
	}
	if creds, err := c.ListCredentials(ctx, "AA:BB:CC:00:00:01"); err != nil || len(creds) != 2 {
		t.Errorf("a failed rotation changed the credentials: %+v, %v", creds, err)
	}
}

// lineValue returns the value of the "name: value" line of out.
func lineValue(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: (\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no line %q in:\n%s", name+": ...", out)
	}
	return m[1]
}
