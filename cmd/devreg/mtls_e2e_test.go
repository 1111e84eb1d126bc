package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/certtest"
)

// TestDeviceConnectByCertificateEndToEnd runs the binary on HTTPS and a device connects with
// "devreg device connect --cert --key --ca-file": once pinned to its certificate, once let in by
// its type's CA; both get a token and check in with it. A certificate of another CA, or a
// sibling of the pinned one, gets invalid_client.
func TestDeviceConnectByCertificateEndToEnd(t *testing.T) {
	dir := t.TempDir()
	a := createAccount(t, dir, "Acme", "ops@acme.test")
	serverCA := certtest.NewCA(t, "devreg test CA")
	certFile, keyFile := serverCA.Server(t).WriteFiles(t, dir, "server")
	caFile, _ := serverCA.WriteFiles(t, dir, "server-ca")
	base, cmd, logs := serveLogged(t, dir, "--tls-cert", certFile, "--tls-key", keyFile)

	ctx := context.Background()
	admin := client.New(base, a.APIKey)
	admin.HTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.Pool()}}}
	name := "Meter"
	dt, err := admin.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	factory := certtest.NewCA(t, "Acme factory CA")
	line := factory.Issue(t, "Acme line 1 CA", certtest.IsCA())
	if _, err := admin.AddTrustedCA(ctx, dt.ID, string(factory.PEM)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RegisterCSV(ctx, dt.ID, strings.NewReader("meter-1,secret-of-meter-1\nmeter-2,secret-of-meter-2\n"), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	pinned := factory.Issue(t, "meter-1")
	if _, err := admin.AddCredential(ctx, "meter-1", devreg.NewCredential{Certificate: string(pinned.PEM)}); err != nil {
		t.Fatal(err)
	}
	connect := func(device string, cert *certtest.Cert) (int, string) {
		t.Helper()
		name := filepath.Base(t.TempDir())
		cf, kf := cert.WriteFiles(t, dir, name)
		code, out, errOut := cli{dir: dir}.run(t, "", "device", "connect", "--server", base, "--account", a.AccountID, "--device", device,
			"--cert", cf, "--key", kf, "--ca-file", caFile, "--firmware", "2.1.0")
		return code, out + errOut
	}
	for _, tt := range []struct {
		name, device string
		cert         *certtest.Cert
	}{
		{"pinned", "meter-1", pinned},
		{"type-ca-through-intermediate", "meter-2", line.Issue(t, "meter-2")},
	} {
		if code, out := connect(tt.device, tt.cert); code != 0 || !strings.Contains(out, "token:    ok") || !strings.Contains(out, "check-in: ok") {
			t.Errorf("%s: device connect --cert = exit %d:\n%s", tt.name, code, out)
		}
	}
	for _, tt := range []struct {
		name, device string
		cert         *certtest.Cert
	}{
		{"another-ca", "meter-2", certtest.NewCA(t, "Evil CA").Issue(t, "meter-2")},
		{"pinned-sibling", "meter-1", line.Issue(t, "meter-1")},
	} {
		if code, out := connect(tt.device, tt.cert); code == 0 || !strings.Contains(out, "invalid_client") || strings.Contains(out, "check-in: ok") {
			t.Errorf("%s: device connect --cert = exit %d:\n%s", tt.name, code, out)
		}
	}
	if !strings.Contains(logs(), "device certificate refused") {
		t.Errorf("the refusals are not in the server's log:\n%s", logs())
	}
	stop(t, cmd)
}
