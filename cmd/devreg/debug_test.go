package main

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestServeDebugListen checks --debug-listen: without it no profiles are served anywhere; with it
// they are served on that address, and still not on --addr.
func TestServeDebugListen(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"off-by-default", nil},
		{"on-when-asked", []string{"--debug-listen", "127.0.0.1:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, profiles := serveWithLines(t, t.TempDir(), tc.args...)
			if resp, err := http.Get(url + "/debug/pprof/"); err != nil || resp.StatusCode != 404 {
				t.Errorf("GET /debug/pprof/ on --addr = %v, %v; want 404", resp, err)
			}
			if tc.args == nil {
				if profiles != "" {
					t.Errorf("profiles served at %s without --debug-listen", profiles)
				}
				return
			}
			resp, err := http.Get(profiles + "mutex?debug=1")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "sampling period=") {
				t.Errorf("GET %smutex = %d %.200q, want the mutex profile", profiles, resp.StatusCode, body)
			}
		})
	}
	t.Run("bad-address", func(t *testing.T) {
		cmd := exec.Command(binary, "serve", "--addr", "127.0.0.1:0", "--debug-listen", "256.0.0.1:0")
		cmd.Dir = t.TempDir()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--debug-listen") {
			t.Errorf("serve with a bad --debug-listen = %v\n%s; want an error that names the flag", err, out)
		}
	})
}

// serveWithLines starts "devreg serve" in dir as serve does, and returns its URL and the address
// of the profiles it printed, if any.
func serveWithLines(t *testing.T, dir string, args ...string) (url, profiles string) {
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
	t.Cleanup(func() { stop(t, cmd) })
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		serving, prof := regexp.MustCompile(`serving on (http://\S+)`), regexp.MustCompile(`devreg profiles: (http://\S+)`)
		var p string
		for sc.Scan() {
			if m := prof.FindStringSubmatch(sc.Text()); m != nil {
				p = m[1]
			}
			if m := serving.FindStringSubmatch(sc.Text()); m != nil {
				found <- [2]string{m[1], p}
				io.Copy(io.Discard, stderr)
				return
			}
		}
		close(found)
	}()
	select {
	case f, ok := <-found:
		if !ok {
			t.Fatal("devreg serve ended without serving")
		}
		return f[0], f[1]
	case <-time.After(20 * time.Second):
		t.Fatal("devreg serve did not start in 20s")
	}
	return "", ""
}
