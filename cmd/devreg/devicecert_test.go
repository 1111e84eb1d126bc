package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg/internal/certtest"
)

// tokenServer is a TLS server standing in for devreg's token and check-in endpoints over mutual
// TLS (which the server side of issue 23 adds later): it asks for, but does not require, a client
// certificate, and records what each token request brought.
type tokenServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // per token request: "cert=CN form=... auth=..."
}

func newTokenServer(t *testing.T, serverCert *certtest.Cert) *tokenServer {
	s := &tokenServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /device/v1/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		cn := "none"
		if len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		s.mu.Lock()
		s.seen = append(s.seen, fmt.Sprintf("cert=%s form=%s auth=%q", cn, r.PostForm.Encode(), r.Header.Get("Authorization")))
		s.mu.Unlock()
		if cn != r.PostForm.Get("client_id") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error": "invalid_client", "error_description": "no certificate of this device on the connection"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token": "token-of-` + cn + `", "token_type": "Bearer", "expires_in": 3600}`))
	})
	mux.HandleFunc("POST /device/v1/checkin", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer token-of-") {
			http.Error(w, `{"error": "invalid_token"}`, http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s.Server = httptest.NewUnstartedServer(mux)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
	s.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert.TLS()}, ClientAuth: tls.RequestClientCert}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *tokenServer) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.seen
	s.seen = nil
	return seen
}

// startMosquitto starts a private Mosquitto broker with a TLS listener that requires a client
// certificate of clientCA and takes its common name as the username (use_identity_as_username).
// The test fails, never skips, where Mosquitto cannot run.
func startMosquitto(t *testing.T, clientCA, server *certtest.Cert) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/mosquitto"); err != nil {
			t.Fatalf("this test needs Mosquitto 2 (apt-get install -y mosquitto): %v", err)
		}
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	os.WriteFile(filepath.Join(dir, "ca.pem"), clientCA.PEM, 0o644)
	certFile, keyFile := server.WriteFiles(t, dir, "server")
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// Run as root, Mosquitto drops to the user "mosquitto", who cannot read the test's files.
	conf := fmt.Sprintf("user %s\nper_listener_settings true\nlistener %s 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nrequire_certificate true\nuse_identity_as_username true\nallow_anonymous false\n",
		me.Username, port, filepath.Join(dir, "ca.pem"), certFile, keyFile)
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s in 10 s:\n%s", addr, log.String())
		}
	}
}

// TestDeviceConnectCertificate: with --cert and --key the device presents its certificate on the
// TLS connection and asks for a token with grant_type, account_id and client_id and no secret, trusts
// the server by --ca-file, and with --mqtt mqtts:// logs in to a broker by the same certificate.
func TestDeviceConnectCertificate(t *testing.T) {
	dir := t.TempDir()
	serverCA := certtest.NewCA(t, "Server CA")
	factory := certtest.NewCA(t, "Factory CA")
	line := factory.Issue(t, "Line 1 CA", certtest.IsCA())
	dev := line.Issue(t, "dev-0001")
	certFile, keyFile := dev.WriteFiles(t, dir, "dev-0001")
	caFile, _ := serverCA.WriteFiles(t, dir, "server-ca")
	srv := newTokenServer(t, serverCA.Server(t))
	connect := func(extra ...string) (int, string) {
		t.Helper()
		code, out, stderr := cli{dir: dir}.run(t, "", append([]string{"device", "connect", "--server", srv.URL, "--account", "acc_1", "--device", "dev-0001"}, extra...)...)
		return code, out + stderr
	}

	t.Run("token-and-check-in", func(t *testing.T) {
		code, out := connect("--cert", certFile, "--key", keyFile, "--ca-file", caFile)
		if code != 0 || !strings.Contains(out, "token:    ok (Bearer token, valid for 3600s)") || !strings.Contains(out, "check-in: ok") {
			t.Fatalf("device connect --cert = exit %d:\n%s", code, out)
		}
		want := `cert=dev-0001 form=account_id=acc_1&client_id=dev-0001&grant_type=client_credentials auth=""`
		if got := srv.take(); len(got) != 1 || got[0] != want {
			t.Errorf("the token requests %q, want one: %s", got, want)
		}
	})
	t.Run("mqtts-by-certificate", func(t *testing.T) {
		broker := startMosquitto(t, factory, serverCA.Server(t))
		code, out := connect("--cert", certFile, "--key", keyFile, "--ca-file", caFile, "--mqtt", "mqtts://"+broker)
		if code != 0 || !strings.Contains(out, "mqtt:     ok (connected to mqtts://"+broker) {
			t.Errorf("device connect --cert --mqtt mqtts:// = exit %d:\n%s", code, out)
		}
		other := certtest.NewCA(t, "Other Factory").Issue(t, "dev-0001")
		otherCert, otherKey := other.WriteFiles(t, dir, "other")
		if code, out := connect("--cert", otherCert, "--key", otherKey, "--ca-file", caFile, "--mqtt", "mqtts://"+broker); code != 1 || !strings.Contains(out, "mqtt:     FAILED") {
			t.Errorf("a certificate the broker does not trust = exit %d:\n%s", code, out)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"server-not-trusted", []string{"--cert", certFile, "--key", keyFile}, 1, "token:    FAILED"},
		{"cert-without-key", []string{"--cert", certFile, "--ca-file", caFile}, 2, "--cert and --key go together"},
		{"cert-and-secret", []string{"--cert", certFile, "--key", keyFile, "--secret", "s3cret-value"}, 2, "leave out --secret and --rotate"},
		{"cert-and-rotate", []string{"--cert", certFile, "--key", keyFile, "--rotate"}, 2, "leave out --secret and --rotate"},
		{"key-of-another-certificate", []string{"--cert", certFile, "--key", filepath.Join(dir, "server-ca.key"), "--ca-file", caFile}, 2, "private key does not match public key"},
		{"ca-file-not-pem", []string{"--cert", certFile, "--key", keyFile, "--ca-file", keyFile}, 2, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := connect(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.says) {
				t.Errorf("= exit %d, want %d saying %q:\n%s", code, tc.code, tc.says, out)
			}
		})
	}
	t.Run("plain-http-server", func(t *testing.T) {
		code, out, stderr := cli{dir: dir}.run(t, "", "device", "connect", "--server", "http://127.0.0.1:1", "--account", "acc_1", "--device", "dev-0001", "--cert", certFile, "--key", keyFile)
		if code != 2 || !strings.Contains(out+stderr, "needs an https:// --server") {
			t.Errorf("--cert with an http:// server = exit %d:\n%s%s", code, out, stderr)
		}
	})
}
