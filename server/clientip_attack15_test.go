package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/server"
)

func atk15Server(t *testing.T, trusted ...string) (*server.Server, devreg.Account, string) {
	t.Helper()
	return atk15ServerAt(t, nil, trusted...)
}

// atk15ServerAt is atk15Server whose service tells the time with now, when set (before it serves:
// its background work reads the clock).
func atk15ServerAt(t *testing.T, now func() time.Time, trusted ...string) (*server.Server, devreg.Account, string) {
	t.Helper()
	var prefixes []netip.Prefix
	for _, p := range trusted {
		prefixes = append(prefixes, netip.MustParsePrefix(p))
	}
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), TrustedProxies: prefixes, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if now != nil {
		srv.Service.Now = now
	}
	go srv.Serve()
	t.Cleanup(func() { http.DefaultClient.CloseIdleConnections(); srv.Shutdown(context.Background()) })
	acc, key, err := srv.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	return srv, acc, key
}

func atk15Get(t *testing.T, srv *server.Server, key string, forwardedFor ...string) {
	t.Helper()
	req, _ := http.NewRequest("GET", srv.URL()+"/api/v1/devicetypes", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	for _, v := range forwardedFor {
		req.Header.Add("X-Forwarded-For", v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET = %d", resp.StatusCode)
	}
}

func atk15LastIP(t *testing.T, srv *server.Server, acc devreg.Account) string {
	t.Helper()
	admin := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	keys, err := srv.Service.ListAPIKeys(admin)
	if err != nil || len(keys) != 1 {
		t.Fatalf("keys %+v, %v", keys, err)
	}
	if keys[0].LastUsedIP == nil {
		return ""
	}
	return *keys[0].LastUsedIP
}

// TestAttack15ForwardedForFromAnUntrustedPeer: with --trusted-proxy naming proxies, a client that
// connects directly (not from one of them) cannot put an address of its choice, or several X-
// Forwarded-For lines of them, into the key's last address (or the audit log).
func TestAttack15ForwardedForFromAnUntrustedPeer(t *testing.T) {
	srv, acc, key := atk15Server(t, "10.0.0.0/8", "192.0.2.1/32")
	atk15Get(t, srv, key, "203.0.113.5", "10.1.1.1, 192.0.2.1")
	if ip := atk15LastIP(t, srv, acc); ip != "127.0.0.1" {
		t.Errorf("last used IP %q, want the peer 127.0.0.1: the X-Forwarded-For of an untrusted peer was believed", ip)
	}
}

// TestAttack15LastUsedIPFollowsTheLastUse: the key object's last_used_ip is "the client address
// of the key's last use", what a security review reads to see where a key is used from. It was
// written only when last_used_at was stamped, at most once a minute, so a stolen key used from
// another address within a minute of the factory station's last call left the station's address
// there for good if the key was not used again.
//
// What should happen: last_used_ip follows the key's last use within about a minute (issue 22:
// each server writes a key's row at most once a minute, whatever the address, so a broker
// cluster sharing a key does not write it on every call). Within the minute the row keeps the
// station's address; once the minute has passed, the server writes the latest use, the other
// address, without another call.
func TestAttack15LastUsedIPFollowsTheLastUse(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	srv, acc, key := atk15ServerAt(t, func() time.Time { mu.Lock(); defer mu.Unlock(); return now }, "127.0.0.0/8") // the test client stands behind a trusted proxy
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	atk15Get(t, srv, key, "198.51.100.7") // the factory station
	if ip := atk15LastIP(t, srv, acc); ip != "198.51.100.7" {
		t.Fatalf("last used IP %q after the station's call", ip)
	}
	advance(10 * time.Second)
	atk15Get(t, srv, key, "203.0.113.66") // someone else, with the same key, moments later
	if ip := atk15LastIP(t, srv, acc); ip != "198.51.100.7" {
		t.Errorf("last used IP %q within the minute, want the station's 198.51.100.7 (the row is written once a minute)", ip)
	}
	advance(time.Minute)
	// The server writes what waits every few seconds: the last use shows within one of those.
	deadline := time.Now().Add(30 * time.Second)
	for ip := atk15LastIP(t, srv, acc); ip != "203.0.113.66"; ip = atk15LastIP(t, srv, acc) {
		if time.Now().After(deadline) {
			t.Fatalf("last used IP %q a minute after a call from 203.0.113.66; want 203.0.113.66", ip)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
