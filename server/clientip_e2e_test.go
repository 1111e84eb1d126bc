package server_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"devreg"
	"devreg/server"
)

// TestAuditRecordsTheClientAddress: the audit log and the key list show the client's address as
// the server saw it, and the address a trusted proxy forwards only for that proxy.
func TestAuditRecordsTheClientAddress(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"direct", nil, "127.0.0.1"},
		{"behind-a-trusted-proxy", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), TrustedProxies: tc.trusted, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve()
			t.Cleanup(func() { http.DefaultClient.CloseIdleConnections(); srv.Shutdown(context.Background()) })
			acc, key, err := srv.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", srv.URL()+"/api/v1/devicetypes", strings.NewReader(`{"name": "Sensor"}`))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Forwarded-For", "203.0.113.5")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Fatalf("create type: %d", resp.StatusCode)
			}
			admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
			entries, _, _, err := srv.Service.AuditLog(admin, devreg.AuditFilter{Action: "devicetype.create"})
			if err != nil || len(entries) != 1 || entries[0].IP != tc.want || entries[0].RequestID != resp.Header.Get("X-Request-ID") {
				t.Errorf("audit entry %+v (%v), want IP %s and request ID %s", entries, err, tc.want, resp.Header.Get("X-Request-ID"))
			}
			keys, err := srv.Service.ListAPIKeys(admin)
			if err != nil || len(keys) != 1 || keys[0].LastUsedIP == nil || *keys[0].LastUsedIP != tc.want {
				t.Errorf("the key's last address: %+v, %v; want %s", keys, err, tc.want)
			}
		})
	}
}
