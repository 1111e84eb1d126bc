package webhook

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// maxURLLen bounds a webhook URL; longer ones are more likely abuse than endpoints.
const maxURLLen = 2048

// allowHint tells an operator how to deliver to private addresses on purpose,
// for instance to a receiver on the same machine while testing.
const allowHint = "devreg serve --webhook-allow-private allows it"

// Guard keeps deliveries to customer-chosen URLs from reaching addresses
// that belong to the service's own host or network: loopback, private and
// link-local ranges (where cloud metadata services answer), and the like.
//
// CheckURL tells a customer early that a URL cannot work; Client enforces
// the same rule again for every connection, which is what counts, because a
// name's addresses can change between the check and a delivery (DNS rebinding).
type Guard struct {
	// AllowPrivate lets deliveries reach any address, for installations whose
	// receivers live on the same machine or network.
	AllowPrivate bool
	// Resolver looks up host names; nil means net.DefaultResolver.
	Resolver *net.Resolver
}

// rule names a range of addresses that deliveries must not reach and says why.
type rule struct {
	prefix netip.Prefix
	what   string
}

// rules are tried in order and the first match wins, so narrow ranges come
// before the wider ones that contain them.
var rules = []rule{
	{netip.MustParsePrefix("0.0.0.0/8"), "an unspecified (this network) address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "a loopback address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (where cloud metadata services answer)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a carrier-grade NAT (shared) address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment address"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address"},
	{netip.MustParsePrefix("255.255.255.255/32"), "the broadcast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved address"},
	{netip.MustParsePrefix("::/128"), "an unspecified address"},
	{netip.MustParsePrefix("::1/128"), "a loopback address"},
	{netip.MustParsePrefix("fe80::/10"), "a link-local address"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
	{netip.MustParsePrefix("fc00::/7"), "a private (unique local) address"},
	{netip.MustParsePrefix("ff00::/8"), "a multicast address"},
	{netip.MustParsePrefix("100::/64"), "a discard-only address"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation address"},
	// Teredo tunnels reach wherever the relay can; nobody serves webhooks from one.
	{netip.MustParsePrefix("2001::/32"), "a Teredo tunnel address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a local-use NAT64 address"},
}

// embedding is an IPv6 range whose addresses carry an IPv4 address at offset,
// which the network may reach in the end; those are judged by the IPv4 address.
type embedding struct {
	prefix netip.Prefix
	what   string
	offset int
}

var embeddings = []embedding{
	{netip.MustParsePrefix("::ffff:0:0/96"), "an IPv4-mapped address", 12},
	{netip.MustParsePrefix("::ffff:0:0:0/96"), "an IPv4-translated address", 12},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible address", 12},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address", 12},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address", 2},
}

// forbidden says why deliveries must not reach addr, such as "a loopback
// address", or returns "" if they may.
func forbidden(addr netip.Addr) string {
	addr = addr.WithZone("")
	for _, r := range rules {
		if r.prefix.Contains(addr) {
			return r.what
		}
	}
	for _, e := range embeddings {
		if e.prefix.Contains(addr) {
			b := addr.As16()
			v4 := netip.AddrFrom4([4]byte(b[e.offset : e.offset+4]))
			if why := forbidden(v4); why != "" {
				return fmt.Sprintf("%s embedding %s, %s", e.what, v4, why)
			}
			return ""
		}
	}
	if !addr.IsGlobalUnicast() {
		return "not a global unicast address"
	}
	return ""
}

// CheckURL tells whether raw can be a webhook endpoint: an absolute http or
// https URL of at most 2048 bytes with a host, without user:password@ or a
// fragment. Unless g.AllowPrivate, the host must be, or resolve only to,
// addresses that deliveries may reach.
func (g Guard) CheckURL(ctx context.Context, raw string) error {
	if len(raw) > maxURLLen {
		return fmt.Errorf("webhook URL is %d bytes long; at most %d are allowed", len(raw), maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook URL %q does not parse: %v", raw, err)
	}
	switch {
	case !u.IsAbs():
		return fmt.Errorf("webhook URL %q is not absolute; give one such as https://example.com/hooks", raw)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("webhook URL %q uses %s; only http and https are allowed", raw, u.Scheme)
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Errorf("webhook URL %q has no host", raw)
	case u.User != nil:
		return fmt.Errorf("webhook URL for host %s carries a user name or password; sign deliveries with the webhook secret instead", u.Hostname())
	case strings.Contains(raw, "#"):
		return fmt.Errorf("webhook URL %q has a fragment (#...), which is never sent to the server", raw)
	}
	// url.Parse checks only that a port is digits.
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("webhook URL for host %s has port %s; ports run from 1 to 65535", u.Hostname(), p)
		}
	}
	if g.AllowPrivate {
		return nil
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if why := forbidden(addr); why != "" {
			return fmt.Errorf("webhook URL host %s is %s; %s", host, why, allowHint)
		}
		return nil
	}
	// RFC 6761 reserves localhost and its subdomains for the loopback interface,
	// whatever a resolver says.
	if name := strings.ToLower(strings.TrimSuffix(host, ".")); name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return fmt.Errorf("webhook URL host %s is a loopback name; %s", host, allowHint)
	}
	resolver := g.Resolver
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("webhook URL host %s does not resolve: %v", host, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("webhook URL host %s resolves to no address", host)
	}
	for _, addr := range addrs {
		if why := forbidden(addr); why != "" {
			return fmt.Errorf("webhook URL host %s resolves to %s, %s; %s", host, addr.WithZone(""), why, allowHint)
		}
	}
	return nil
}

// control runs on every socket the Client opens, after name resolution and
// before connecting, so it sees the very address about to be reached.
func (g Guard) control(network, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("refusing to connect to %s: cannot tell its address: %v", address, err)
	}
	if why := forbidden(ap.Addr()); why != "" {
		return fmt.Errorf("refusing to connect to %s, %s; %s", ap.Addr().WithZone(""), why, allowHint)
	}
	return nil
}

// maxAnswerHeaders bounds the headers of a receiver's answer, far above what any sends.
const maxAnswerHeaders = 64 << 10

// Client returns an http.Client for deliveries. Every connection it opens is
// checked against g at connect time, it ignores proxy settings from the
// environment, it returns redirects instead of following them (Standard
// Webhooks counts a 3xx as a failed delivery), it reads at most 64 KiB of an
// answer's headers, and it gives up on a request after timeout.
func (g Guard) Client(timeout time.Duration) *http.Client {
	dialer := &net.Dialer{
		Timeout:   timeout,
		KeepAlive: 30 * time.Second,
		Resolver:  g.Resolver,
		Control:   g.control,
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxConnsPerHost:       4,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       60 * time.Second,
		ExpectContinueTimeout: time.Second,
		// An answer's headers are not kept; the default would read 10 MiB of them.
		MaxResponseHeaderBytes: maxAnswerHeaders,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ReadAnswer returns at most max bytes of resp's body as text for a delivery
// log, and closes the body without reading the rest, so an endpoint that
// answers with an endless stream costs only max bytes. Invalid UTF-8 becomes
// U+FFFD, and a character cut off at max is dropped. On a read error it
// returns what it read along with the error.
func ReadAnswer(resp *http.Response, max int64) (string, error) {
	if resp == nil || resp.Body == nil {
		return "", nil
	}
	defer resp.Body.Close()
	if max <= 0 {
		return "", nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, max))
	if int64(len(b)) == max {
		// Drop a multi-byte character that the limit cut in two.
		for i := 1; i < utf8.UTFMax && i <= len(b); i++ {
			if utf8.RuneStart(b[len(b)-i]) {
				if !utf8.FullRune(b[len(b)-i:]) {
					b = b[:len(b)-i]
				}
				break
			}
		}
	}
	text := strings.ToValidUTF8(string(b), "\uFFFD")
	if err != nil {
		return text, fmt.Errorf("reading the answer: %w", err)
	}
	return text, nil
}
