package webhook

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
)

func TestForbiddenAddresses(t *testing.T) {
	forbiddenCases := map[string]string{
		"127.0.0.1":                             "loopback",
		"127.255.255.254":                       "loopback",
		"10.1.2.3":                              "private",
		"172.16.0.1":                            "private",
		"172.31.255.255":                        "private",
		"192.168.1.1":                           "private",
		"169.254.169.254":                       "link-local",
		"100.64.0.1":                            "carrier-grade NAT",
		"100.127.255.255":                       "carrier-grade NAT",
		"0.0.0.0":                               "unspecified",
		"0.1.2.3":                               "unspecified",
		"224.0.0.1":                             "multicast",
		"239.255.255.250":                       "multicast",
		"255.255.255.255":                       "broadcast",
		"240.0.0.1":                             "reserved",
		"192.0.2.7":                             "documentation",
		"198.18.0.1":                            "benchmarking",
		"::":                                    "unspecified",
		"::1":                                   "loopback",
		"fe80::1":                               "link-local",
		"fe80::1%eth0":                          "link-local",
		"fc00::1":                               "unique local",
		"fd12:3456:789a::1":                     "unique local",
		"ff02::1":                               "multicast",
		"2001:db8::1":                           "documentation",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2":  "Teredo",
		"64:ff9b:1::1":                          "local-use NAT64",
		"::ffff:127.0.0.1":                      "IPv4-mapped address embedding 127.0.0.1, a loopback",
		"::ffff:169.254.169.254":                "IPv4-mapped address embedding 169.254.169.254, a link-local",
		"::ffff:0:10.0.0.1":                     "IPv4-translated address embedding 10.0.0.1, a private",
		"::127.0.0.1":                           "IPv4-compatible address embedding 127.0.0.1, a loopback",
		"64:ff9b::7f00:1":                       "NAT64 address embedding 127.0.0.1, a loopback",
		"64:ff9b::169.254.169.254":              "NAT64 address embedding 169.254.169.254",
		"2002:7f00:1::1":                        "6to4 address embedding 127.0.0.1, a loopback",
		"2002:c0a8:101::1":                      "6to4 address embedding 192.168.1.1, a private",
		"2002:a00:1:ffff:ffff:ffff:ffff:ffff":   "6to4 address embedding 10.0.0.1",
		"::ffff:255.255.255.255":                "broadcast",
		"64:ff9b::e000:1":                       "multicast",
		"2002:6440:1::1":                        "carrier-grade NAT",
		"::ffff:0.0.0.0":                        "unspecified",
		"fec0::1":                               "site-local",
		"100::1":                                "discard-only",
		"::ffff:100.64.0.1":                     "carrier-grade NAT",
		"64:ff9b::a9fe:a9fe":                    "link-local",
		"2002:a9fe:a9fe::":                      "link-local",
		"::ffff:192.168.0.1":                    "private",
		"::ffff:172.16.0.1":                     "private",
		"::10.0.0.1":                            "private",
		"fe80::ffff:127.0.0.1":                  "link-local",
		"ff05::2":                               "multicast",
		"::2":                                   "unspecified",
		"::ffff:224.0.0.1":                      "multicast",
		"::ffff:240.0.0.1":                      "reserved",
		"::ffff:198.51.100.1":                   "documentation",
		"::ffff:203.0.113.1":                    "documentation",
		"::ffff:192.0.0.1":                      "IETF protocol assignment",
		"2002:c000:0201::":                      "documentation",
		"64:ff9b::ffff:ffff":                    "broadcast",
		"64:ff9b::c0a8:1":                       "private",
		"::ffff:0:7f00:1":                       "loopback",
		"0:0:0:0:0:ffff:7f00:0001":              "loopback",
		"2001:0000:0000:0000:0000:0000:0000:01": "Teredo",
	}
	for text, want := range forbiddenCases {
		addr := netip.MustParseAddr(text)
		if why := forbidden(addr); !strings.Contains(why, want) {
			t.Errorf("forbidden(%s) = %q; want it to say %q", text, why, want)
		}
	}

	allowed := []string{
		"8.8.8.8", "1.1.1.1", "93.184.215.14",
		"100.63.255.255", "100.128.0.0", // either side of carrier-grade NAT
		"172.15.255.255", "172.32.0.0", // either side of 172.16/12
		"169.253.255.255", "169.255.0.0", // either side of link-local
		"11.0.0.1", "126.255.255.255", "128.0.0.1",
		"2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:82b::200e",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
	}
	for _, text := range allowed {
		if why := forbidden(netip.MustParseAddr(text)); why != "" {
			t.Errorf("forbidden(%s) = %q; want it allowed", text, why)
		}
	}
}

func TestCheckURL(t *testing.T) {
	ctx := context.Background()
	dns := newFakeDNS(t, "93.184.215.14")
	guard := Guard{Resolver: dns.resolver()}

	refused := map[string]string{
		"http://localhost/":                                "host localhost is a loopback name; devreg serve --webhook-allow-private allows it",
		"http://LocalHost./":                               "loopback name",
		"https://api.localhost/hook":                       "loopback name",
		"http://127.0.0.1:8080/x":                          "host 127.0.0.1 is a loopback address; devreg serve --webhook-allow-private allows it",
		"http://[::1]/":                                    "host ::1 is a loopback address",
		"http://[::ffff:127.0.0.1]/":                       "embedding 127.0.0.1, a loopback address",
		"http://169.254.169.254/latest":                    "host 169.254.169.254 is a link-local address",
		"http://10.0.0.8/":                                 "private",
		"http://0.0.0.0:9000/":                             "unspecified",
		"http://[fe80::1%25eth0]/":                         "link-local",
		"http://user:pw@example.com/":                      "host example.com carries a user name or password",
		"http://user@example.com/":                         "user name or password",
		"ftp://x/":                                         "uses ftp; only http and https",
		"javascript:alert(1)":                              "uses javascript",
		"/hooks":                                           "not absolute",
		"example.com/hooks":                                "not absolute",
		"//example.com/hooks":                              "not absolute",
		"http:example.com":                                 "has no host",
		"http:///path":                                     "has no host",
		"http://:8080/":                                    "has no host",
		"https://example.com/hooks#frag":                   "fragment",
		"https://example.com/hooks#":                       "fragment",
		"http://example.com/\x7f":                          "does not parse",
		"http://example.com:99999999999999999999/":         "has port 99999999999999999999; ports run from 1 to 65535",
		"http://example.com:0/":                            "has port 0",
		"https://example.com/" + strings.Repeat("a", 2029): "2049 bytes long; at most 2048",
	}
	for raw, want := range refused {
		err := guard.CheckURL(ctx, raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckURL(%q) = %v; want an error saying %q", raw, err, want)
		}
	}

	for _, raw := range []string{
		"https://93.184.215.14/hook",
		"http://[2606:4700:4700::1111]:8443/hook?x=1",
		"HTTPS://hooks.example.com/devreg", // resolves through the fake DNS
		"https://example.com/" + strings.Repeat("a", 2028),
	} {
		if err := guard.CheckURL(ctx, raw); err != nil {
			t.Errorf("CheckURL(%q) = %v; want it accepted", raw, err)
		}
	}

	// A name is judged by every address it resolves to, not just the first.
	dns.set("93.184.215.14", "2606:4700:4700::1111", "10.0.0.5")
	want := "host hooks.example.com resolves to 10.0.0.5, a private address; devreg serve --webhook-allow-private allows it"
	if err := guard.CheckURL(ctx, "https://hooks.example.com/"); err == nil || err.Error() != "webhook URL "+want {
		t.Errorf("CheckURL with one private address among public ones = %v; want %q", err, want)
	}
	dns.set("fd00::5")
	if err := guard.CheckURL(ctx, "https://hooks.example.com/"); err == nil || !strings.Contains(err.Error(), "resolves to fd00::5, a private (unique local) address") {
		t.Errorf("CheckURL with a unique local IPv6 address = %v", err)
	}
	dns.set()
	if err := guard.CheckURL(ctx, "https://hooks.example.com/"); err == nil || !strings.Contains(err.Error(), "hooks.example.com does not resolve") {
		t.Errorf("CheckURL for a name without addresses = %v", err)
	}

	open := Guard{AllowPrivate: true, Resolver: dns.resolver()}
	for _, raw := range []string{"http://127.0.0.1/", "http://localhost:8080/hook", "http://[::1]/", "http://hooks.example.com/"} {
		if err := open.CheckURL(ctx, raw); err != nil {
			t.Errorf("with AllowPrivate, CheckURL(%q) = %v; want it accepted", raw, err)
		}
	}
	for _, raw := range []string{"ftp://x/", "http://user:pw@127.0.0.1/", "/relative", "http://127.0.0.1/#x"} {
		if err := open.CheckURL(ctx, raw); err == nil {
			t.Errorf("with AllowPrivate, CheckURL(%q) accepted a malformed URL", raw)
		}
	}
}

// counting is an httptest server that answers 200 "ok" and counts the requests it sees.
func counting(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func post(client *http.Client, target string) (*http.Response, error) {
	return client.Post(target, "application/json", strings.NewReader(`{"type":"test"}`))
}

func TestClientRefusesForbiddenAddressesWhenConnecting(t *testing.T) {
	srv, hits := counting(t) // listens on 127.0.0.1

	resp, err := post(Guard{}.Client(5*time.Second), srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the guarded client reached %s: %s", srv.URL, resp.Status)
	}
	if !strings.Contains(err.Error(), "127.0.0.1, a loopback address") || !strings.Contains(err.Error(), allowHint) {
		t.Fatalf("error %q does not say the address is loopback and how to allow it", err)
	}

	// localhost is not special to the client: it resolves, and the address is refused.
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	if resp, err := post(Guard{}.Client(5*time.Second), fmt.Sprintf("http://localhost:%d/", port)); err == nil {
		resp.Body.Close()
		t.Fatal("the guarded client reached localhost")
	} else if !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("error %q does not mention loopback", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the server saw %d requests from a refused client", n)
	}

	resp, err = post(Guard{AllowPrivate: true}.Client(5*time.Second), srv.URL)
	if err != nil {
		t.Fatalf("with AllowPrivate the client cannot reach %s: %v", srv.URL, err)
	}
	answer, err := ReadAnswer(resp, 100)
	if err != nil || resp.StatusCode != 200 || answer != "ok" || hits.Load() != 1 {
		t.Fatalf("with AllowPrivate: %s %q %v after %d requests", resp.Status, answer, err, hits.Load())
	}
}

// TestClientDefeatsDNSRebinding has a name resolve to a public address while
// the URL is checked and to loopback when the delivery connects.
func TestClientDefeatsDNSRebinding(t *testing.T) {
	srv, hits := counting(t)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	target := fmt.Sprintf("http://rebind.example.com:%d/hook", port)
	dns := newFakeDNS(t, "93.184.215.14")

	guard := Guard{Resolver: dns.resolver()}
	if err := guard.CheckURL(context.Background(), target); err != nil {
		t.Fatalf("CheckURL while the name is public: %v", err)
	}
	dns.set("127.0.0.1")
	resp, err := post(guard.Client(5*time.Second), target)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the guarded client followed the rebound name to the loopback server: %s", resp.Status)
	}
	if !strings.Contains(err.Error(), "127.0.0.1, a loopback address") {
		t.Fatalf("error %q does not say the address is loopback", err)
	}
	if hits.Load() != 0 {
		t.Fatal("the loopback server saw the refused request")
	}

	// The same name through the same resolver does reach the server when
	// private addresses are allowed, so the refusal above came from the guard
	// and not from a lookup that failed.
	resp, err = post(Guard{AllowPrivate: true, Resolver: dns.resolver()}.Client(5*time.Second), target)
	if err != nil {
		t.Fatalf("with AllowPrivate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || hits.Load() != 1 {
		t.Fatalf("with AllowPrivate: %s after %d requests", resp.Status, hits.Load())
	}
}

func TestClientDoesNotFollowRedirects(t *testing.T) {
	var followed atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed.Add(1)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()

	resp, err := post(Guard{AllowPrivate: true}.Client(5*time.Second), srv.URL+"/hook")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/elsewhere" {
		t.Fatalf("got %s to %q; want the 307 itself", resp.Status, resp.Header.Get("Location"))
	}
	if followed.Load() != 0 {
		t.Fatal("the client followed the redirect")
	}
}

func TestClientSettings(t *testing.T) {
	client := Guard{}.Client(7 * time.Second)
	tr, ok := client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T, want *http.Transport", client.Transport)
	}
	if tr.Proxy != nil {
		t.Error("the transport takes a proxy, which would connect on the deliveries' behalf unchecked")
	}
	if client.Timeout != 7*time.Second || tr.TLSHandshakeTimeout != 7*time.Second || tr.ResponseHeaderTimeout != 7*time.Second {
		t.Errorf("timeouts: overall %s, TLS handshake %s, response header %s; want 7s each",
			client.Timeout, tr.TLSHandshakeTimeout, tr.ResponseHeaderTimeout)
	}
	if tr.MaxConnsPerHost != 4 || tr.MaxIdleConnsPerHost != 2 || tr.IdleConnTimeout != 60*time.Second {
		t.Errorf("pool: MaxConnsPerHost %d, MaxIdleConnsPerHost %d, IdleConnTimeout %s; want 4, 2, 1m0s",
			tr.MaxConnsPerHost, tr.MaxIdleConnsPerHost, tr.IdleConnTimeout)
	}
	if tr.DialContext == nil {
		t.Error("the transport dials without the guard")
	}
}

func TestClientGivesUpOnASilentServer(t *testing.T) {
	// A listener that accepts connections and never answers on them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})

	start := time.Now()
	resp, err := post(Guard{AllowPrivate: true}.Client(300*time.Millisecond), "http://"+ln.Addr().String()+"/")
	elapsed := time.Since(start)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a server that never answers answered %s", resp.Status)
	}
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("error %v is not a timeout", err)
	}
	if elapsed < 250*time.Millisecond || elapsed > 3*time.Second {
		t.Fatalf("the client gave up after %s; want about 300ms", elapsed)
	}
}

func TestReadAnswerStopsAtMax(t *testing.T) {
	const gigabyte = 1 << 30
	written := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zeros := make([]byte, 32<<10)
		var n int64
		for n < gigabyte {
			m, err := w.Write(zeros)
			n += int64(m)
			if err != nil {
				break
			}
		}
		written <- n
	}))
	defer srv.Close()

	resp, err := post(Guard{AllowPrivate: true}.Client(30*time.Second), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	answer, err := ReadAnswer(resp, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("ReadAnswer took %s", elapsed)
	}
	if answer != strings.Repeat("\x00", 1000) {
		t.Fatalf("ReadAnswer returned %d bytes, want 1000 zeros", len(answer))
	}
	// Closing the body must drop the connection rather than drain it, so the
	// server's writes fail long before the gigabyte is through.
	select {
	case n := <-written:
		if n >= gigabyte {
			t.Fatal("the whole gigabyte was read")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server is still writing 10s after ReadAnswer returned")
	}
}

// closeRecorder is a response body that remembers being closed.
type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestReadAnswerText(t *testing.T) {
	cases := []struct {
		name, body string
		max        int64
		want       string
	}{
		{"short", `{"ok":true}`, 100, `{"ok":true}`},
		{"cut", "0123456789", 4, "0123"},
		{"cut inside a two-byte character", "hé!", 2, "h"},
		{"cut inside a four-byte character", "a🙂", 4, "a"},
		{"character ending exactly at max", "hé!", 3, "hé"},
		{"invalid bytes", "\xff\xfeok", 100, "\uFFFDok"},
		{"nothing wanted", "abc", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := &closeRecorder{Reader: strings.NewReader(c.body)}
			got, err := ReadAnswer(&http.Response{Body: body}, c.max)
			if err != nil || got != c.want || !utf8.ValidString(got) {
				t.Fatalf("ReadAnswer = %q, %v; want %q", got, err, c.want)
			}
			if !body.closed {
				t.Fatal("ReadAnswer left the body open")
			}
		})
	}

	body := &closeRecorder{Reader: io.MultiReader(strings.NewReader("partial"), errReader{})}
	got, err := ReadAnswer(&http.Response{Body: body}, 100)
	if got != "partial" || err == nil || !strings.Contains(err.Error(), "connection reset") || !body.closed {
		t.Fatalf("ReadAnswer on a broken body = %q, %v (closed %v)", got, err, body.closed)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// fakeDNS is a DNS server on 127.0.0.1 that answers every A and AAAA query
// with the addresses it holds at the moment, so a test can make any name
// resolve to what it likes and change that between lookups, as a rebinding
// attacker's name server would.
type fakeDNS struct {
	conn  net.PacketConn
	addrs atomic.Pointer[[]netip.Addr]
}

func newFakeDNS(t *testing.T, addrs ...string) *fakeDNS {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d := &fakeDNS{conn: conn}
	d.set(addrs...)
	go d.serve()
	return d
}

func (d *fakeDNS) set(addrs ...string) {
	parsed := make([]netip.Addr, len(addrs))
	for i, a := range addrs {
		parsed[i] = netip.MustParseAddr(a)
	}
	d.addrs.Store(&parsed)
}

// resolver returns a pure Go resolver that sends every query to d.
func (d *fakeDNS) resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "udp", d.conn.LocalAddr().String())
		},
	}
}

func (d *fakeDNS) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if answer := d.answer(buf[:n]); answer != nil {
			d.conn.WriteTo(answer, from)
		}
	}
}

// answer builds the response to one query (RFC 1035, section 4.1): the
// query's id and question, then one record per address of the asked type.
func (d *fakeDNS) answer(query []byte) []byte {
	const typeA, typeAAAA = 1, 28
	if len(query) < 12 {
		return nil
	}
	end := 12 // the question's name is a sequence of labels ending in an empty one
	for end < len(query) && query[end] != 0 {
		end += int(query[end]) + 1
	}
	end += 1 + 4 // the empty label, the type and the class
	if end > len(query) {
		return nil
	}
	qtype := binary.BigEndian.Uint16(query[end-4:])
	var rdata [][]byte
	for _, a := range *d.addrs.Load() {
		switch {
		case qtype == typeA && a.Is4():
			b := a.As4()
			rdata = append(rdata, b[:])
		case qtype == typeAAAA && a.Is6():
			b := a.As16()
			rdata = append(rdata, b[:])
		}
	}
	msg := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(query)) // id
	msg = binary.BigEndian.AppendUint16(msg, 0x8580)                          // response, authoritative, recursion desired and available
	msg = binary.BigEndian.AppendUint16(msg, 1)                               // questions
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(rdata)))              // answers
	msg = binary.BigEndian.AppendUint32(msg, 0)                               // authority and additional records
	msg = append(msg, query[12:end]...)
	for _, r := range rdata {
		msg = append(msg, 0xc0, 12) // the name, pointing at the question's
		msg = binary.BigEndian.AppendUint16(msg, qtype)
		msg = binary.BigEndian.AppendUint16(msg, 1) // class IN
		msg = binary.BigEndian.AppendUint32(msg, 0) // TTL
		msg = binary.BigEndian.AppendUint16(msg, uint16(len(r)))
		msg = append(msg, r...)
	}
	return msg
}
