package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"devreg/internal/certtest"
)

// serveLogged starts "devreg serve" like serve does, and also keeps what it logs.
func serveLogged(t *testing.T, dir string, args ...string) (string, *exec.Cmd, func() string) {
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
	var mu sync.Mutex
	var logged strings.Builder
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`serving on (https?://\S+)`)
		for sc.Scan() {
			mu.Lock()
			logged.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	logs := func() string { mu.Lock(); defer mu.Unlock(); return logged.String() }
	select {
	case u, ok := <-found:
		if !ok {
			t.Fatalf("devreg serve ended without serving: %s", logs())
		}
		return u, cmd, logs
	case <-time.After(20 * time.Second):
		t.Fatal("devreg serve did not start in 20s")
	}
	return "", nil, nil
}

// TestServeHTTPSReloadsOnSIGHUP runs the binary on HTTPS, replaces its certificate files and
// sends SIGHUP: new handshakes get the new certificate. The CLI reaches it with the private CA
// in SSL_CERT_FILE, and not without.
func TestServeHTTPSReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	a := createAccount(t, dir, "Acme", "ops@acme.test")
	ca := certtest.NewCA(t, "devreg test CA")
	certFile, keyFile := ca.Server(t).WriteFiles(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	base, cmd, logs := serveLogged(t, dir, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("serving on %s, want https", base)
	}
	u, _ := url.Parse(base)
	served := func() *x509.Certificate {
		c, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := served()

	next := ca.Server(t)
	next.WriteFiles(t, dir, "server")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs(), `"trigger":"SIGHUP"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged 5s after SIGHUP: %s", logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := served(); got.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("after SIGHUP a new handshake got serial %v (the first was %v), want the new certificate's %v", got.SerialNumber, first.SerialNumber, next.Cert.SerialNumber)
	}

	// Go's crypto/x509 on Linux reads SSL_CERT_FILE in place of the system's CA bundle.
	env := []string{"DEVREG_SERVER=https://localhost:" + u.Port(), "DEVREG_API_KEY=" + a.APIKey}
	if code, _, errOut := (cli{dir: dir, env: env}).run(t, "", "devicetypes", "list"); code == 0 || !strings.Contains(errOut, "certificate") {
		t.Errorf("the CLI without the private CA: exit %d, %s; want a refused certificate", code, errOut)
	}
	if code, out, errOut := (cli{dir: dir, env: append(env, "SSL_CERT_FILE="+caFile)}).run(t, "", "devicetypes", "list"); code != 0 {
		t.Errorf("the CLI with SSL_CERT_FILE: exit %d, %s %s", code, out, errOut)
	}
	stop(t, cmd)
}

func TestServeTLSRefusals(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		args []string
		says string
	}{
		{"cert-without-key", []string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{"acme-and-files", []string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-acme", "devreg.example.com", "--tls-acme-dir", "acme"}, "exclude each other"},
		{"acme-without-dir", []string{"--tls-acme", "devreg.example.com"}, "needs --tls-acme-dir"},
		{"header-without-proxy", []string{"--tls-client-cert-header", "X-SSL-Client-Cert"}, "needs --trusted-proxy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := (cli{dir: dir}).run(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.says) {
				t.Errorf("exit %d, stderr %q; want exit 2 saying %q", code, errOut, tt.says)
			}
		})
	}
}
