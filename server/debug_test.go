package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

// TestDebugListener checks that the profiles are served on the debug listener only: its index
// lists the block and mutex profiles and a CPU profile can be taken, the command line (which may
// hold a database password) is not served, and the main listener has none of it.
func TestDebugListener(t *testing.T) {
	ctx := context.Background()
	srv, err := Open(ctx, Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(ctx) })
	dbg, err := ListenDebug("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer dbg.Close()
	if !strings.HasPrefix(dbg.URL(), "http://127.0.0.1:") || strings.Contains(dbg.URL(), srv.URL()) {
		t.Fatalf("debug URL %s, main URL %s: want another port on loopback", dbg.URL(), srv.URL())
	}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct {
		name, url string
		status    int
		contains  string
	}{
		{"200/debug-index", dbg.URL(), 200, "mutex"},
		{"200/debug-block", dbg.URL() + "block?debug=1", 200, "--- contention:"},
		{"200/debug-cpu", dbg.URL() + "profile?seconds=1", 200, ""},
		{"404/debug-cmdline", dbg.URL() + "cmdline", 404, ""},
		{"404/main-index", srv.URL() + "/debug/pprof/", 404, ""},
		{"404/main-profile", srv.URL() + "/debug/pprof/profile?seconds=1", 404, ""},
		{"404/main-heap", srv.URL() + "/debug/pprof/heap", 404, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.url)
			if status != tc.status || !strings.Contains(body, tc.contains) {
				t.Errorf("GET %s = %d, body %.200q; want %d with %q", tc.url, status, body, tc.status, tc.contains)
			}
		})
	}
	if err := dbg.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := http.Get(dbg.URL()); err == nil {
		t.Errorf("the debug listener still answers after Close")
	}
}
