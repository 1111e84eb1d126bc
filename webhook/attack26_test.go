package webhook

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Reproducers and checks from an outside review of the guard (issue 26).

// TestGuardRefusesLoopbackInEveryDisguise: a receiver on 127.0.0.1 is reached by none of the
// usual ways of writing its address (decimal, octal and hex IPv4 that libc resolvers accept,
// short forms, trailing dots, IPv6 forms that carry it, names that IDNA maps to it, userinfo and
// fragment tricks): CheckURL refuses each, and so does the Client at connect time, whatever the
// URL check said.
func TestGuardRefusesLoopbackInEveryDisguise(t *testing.T) {
	srv, hits := counting(t)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	hosts := []string{
		"2130706433", "0x7f.1", "127.1", "0177.0.0.1", "017700000001", "0x7f000001", "127.000.000.001", "0",
		"127.0.0.1.", "localhost.", "LOCALHOST", "0.0.0.0", "[::]", "[::1%25lo]",
		"[::ffff:7f00:1]", "[::ffff:127.0.0.1]", "[::127.0.0.1]", "[0:0:0:0:0:ffff:127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]",
		"①②⑦.0.0.1", "127。0。0。1", // the HTTP client maps these to 127.0.0.1 (IDNA)
		"127.0.0.1:80@evil.example", "evil.example#@127.0.0.1",
	}
	client := Guard{}.Client(2 * time.Second)
	for _, h := range hosts {
		u := fmt.Sprintf("http://%s:%d/hook", h, port)
		if err := (Guard{}).CheckURL(context.Background(), u); err == nil {
			t.Errorf("CheckURL(%q) accepted it", u)
		}
		if resp, err := post(client, u); err == nil {
			resp.Body.Close()
			t.Errorf("the client reached %q: %s", u, resp.Status)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the loopback receiver saw %d requests", n)
	}
}

// TestClientBoundsAnswerHeaders: a receiver that answers with a megabyte of headers fails the
// delivery; the transport's default would read and keep 10 MiB of them, on each of the
// deliveries under way.
func TestClientBoundsAnswerHeaders(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Padding", big)
	}))
	t.Cleanup(srv.Close)
	resp, err := post(Guard{AllowPrivate: true}.Client(5*time.Second), srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a 1 MiB header was taken: %s", resp.Status)
	}
	if !strings.Contains(err.Error(), "header") {
		t.Errorf("error %q does not say the headers were too large", err)
	}
}
