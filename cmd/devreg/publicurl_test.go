package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeNeedsAUsablePublicURL: "devreg serve" with an address that names no host and no
// --public-url would publish "http://:18391" as its token issuer and JWKS URI; it refuses to
// start (exit 2) and says to set --public-url, as it does for a --public-url that is no URL
// clients could use. With --public-url it starts and publishes that.
func TestServeNeedsAUsablePublicURL(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  string // DEVREG_ADDR, if set
		says string
	}{
		// Port 0, so that a server that starts after all takes no port another one needs.
		{"no-host", []string{"--addr", ":0"}, "", "--addr :0 names no host, so the default public URL (http://:0)"},
		{"no-host-from-env", nil, ":0", "--addr :0 names no host"},
		{"any-ipv4-address", []string{"--addr", "0.0.0.0:0"}, "", "--addr 0.0.0.0:0 names no host"},
		{"any-ipv6-address", []string{"--addr", "[::]:0"}, "", "--addr [::]:0 names no host"},
		{"public-url-without-scheme", []string{"--addr", ":0", "--public-url", "devreg.example.com"}, "", `--public-url "devreg.example.com" is not an address clients could use`},
		{"public-url-without-host", []string{"--addr", "127.0.0.1:0", "--public-url", "http://:8080"}, "", `--public-url "http://:8080" is not`},
		{"public-url-any-address", []string{"--addr", "127.0.0.1:0", "--public-url", "http://0.0.0.0:8080"}, "", `--public-url "http://0.0.0.0:8080" is not`},
		{"public-url-port-out-of-range", []string{"--addr", "127.0.0.1:0", "--public-url", "http://devreg.example.com:99999"}, "", `--public-url "http://devreg.example.com:99999" is not`},
		{"public-url-with-query", []string{"--addr", "127.0.0.1:0", "--public-url", "https://devreg.example.com/?x=1"}, "", "a query is not"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			// A server that starts instead is stopped after a while, and the case fails.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, append([]string{"serve"}, tt.args...)...)
			cmd.Dir = dir
			cmd.Env = os.Environ()
			if tt.env != "" {
				cmd.Env = append(cmd.Env, "DEVREG_ADDR="+tt.env)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != exitUsage || !strings.Contains(stderr.String(), tt.says) || !strings.Contains(stderr.String(), "https://devreg.example.com") {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q and showing a --public-url", code, stderr.String(), exitUsage, tt.says)
			}
			if _, err := os.Stat(filepath.Join(dir, "devreg-data")); err == nil {
				t.Error("the refused server created its data directory")
			}
		})
	}

	t.Run("no-host-with-public-url", func(t *testing.T) {
		url, _ := serve(t, t.TempDir(), "--addr", ":0", "--public-url", "https://devreg.example.com/")
		resp, err := http.Get(url + "/.well-known/oauth-authorization-server")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil {
			t.Fatal(err)
		}
		if meta.Issuer != "https://devreg.example.com" || meta.JWKSURI != "https://devreg.example.com/.well-known/jwks.json" {
			t.Errorf("metadata = %+v, want the public URL as issuer and JWKS base", meta)
		}
	})
}

// The addresses that need no --public-url: those with a host, the default among them.
func TestCheckPublicURLAcceptsAddressesWithAHost(t *testing.T) {
	for _, addr := range []string{"localhost:8080", "127.0.0.1:0", "[::1]:8080", "devreg.internal:443", "192.0.2.7:8080"} {
		if err := checkPublicURL(addr, ""); err != nil {
			t.Errorf("--addr %s: %v", addr, err)
		}
	}
	for _, u := range []string{"https://devreg.example.com", "http://localhost:8080/", "https://example.com/devreg", "https://devreg.example.com:65535"} {
		if err := checkPublicURL(":8080", u); err != nil {
			t.Errorf("--public-url %s: %v", u, err)
		}
	}
}
