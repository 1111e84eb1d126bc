package server

import (
	"net/http/httptest"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote, xff, want string
	}{
		{"direct", "198.51.100.7:5555", "", "198.51.100.7"},
		{"direct-ignores-xff", "198.51.100.7:5555", "203.0.113.1", "198.51.100.7"},
		{"trusted-proxy", "10.1.2.3:443", "203.0.113.1", "203.0.113.1"},
		{"two-trusted-hops", "10.1.2.3:443", "203.0.113.1, 192.0.2.1", "203.0.113.1"},
		{"spoofed-left-of-client", "10.1.2.3:443", "6.6.6.6, 203.0.113.1", "203.0.113.1"},
		{"trusted-without-xff", "10.1.2.3:443", "", "10.1.2.3"},
		{"garbage-hop", "10.1.2.3:443", "203.0.113.1, nonsense", "10.1.2.3"},
		{"ipv6", "[2001:db8::1]:443", "", "2001:db8::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := clientIP(r, trusted); got != tc.want {
				t.Errorf("clientIP = %q, want %q", got, tc.want)
			}
		})
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8, proxy.example"); err == nil {
		t.Error("a host name was taken as a trusted proxy")
	}
}
