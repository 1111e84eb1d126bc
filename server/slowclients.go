package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"devreg"
)

// Defaults for the limits on slow clients. A factory uplink that is slow but honest sends far more
// than MinBodyRate; a client that sends a body slower than that (or stops) holds a connection,
// a goroutine and buffers for nothing.
const (
	DefaultBodyGrace         = 10 * time.Second // a body may take this long before its first bytes must arrive
	DefaultMinBodyRate       = 1 << 10          // bytes per second, on average from the start of the body
	DefaultBodyIdle          = time.Minute      // the longest pause between two reads, however much arrived before
	DefaultMaxPendingPerAddr = 128              // connections of one address still sending their request headers
	DefaultMaxConnsPerAddr   = 1024             // connections of one address open at once
	maxHeaderBytes           = 64 << 10         // a request's headers; net/http's default is 1 MiB
)

// rateReader gives a request body a read deadline that moves with what has arrived: by
// grace + n/rate after the body started, the first n bytes must be in, and never more than idle
// after the last read. A body that arrives at least at rate never meets it, however long it is.
type rateReader struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  int64
	idle  time.Duration
	n     int64
}

func (b *rateReader) Read(p []byte) (int, error) {
	now := time.Now()
	deadline := b.start.Add(b.grace + time.Duration(b.n)*time.Second/time.Duration(b.rate))
	if idle := now.Add(b.idle); idle.Before(deadline) {
		deadline = idle
	}
	b.rc.SetReadDeadline(deadline)
	n, err := b.body.Read(p)
	b.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		// Once the body has ended, the server reads on in the background to notice a client that
		// goes away; a deadline left in place would end the request instead.
		b.rc.SetReadDeadline(time.Time{})
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = devreg.Errorf(devreg.EBADREQUEST, "the request body arrived too slowly (less than %d bytes a second, or a pause of over %s); nothing was done, send it again over a faster link or in smaller parts", b.rate, b.idle)
	}
	return n, err
}

func (b *rateReader) Close() error { return b.body.Close() }

// connLimits caps, per client address, the connections open at once and, far lower, those still
// sending a request's headers: the ones a slow client can hold by the thousand at no cost, each
// with a buffer. A connection counts as sending headers from its first byte of a request until
// the request's handler starts; in a handler or idle between requests it does not, so a broker or
// a factory behind one NAT address may keep many honest connections.
type connLimits struct {
	maxPending, maxOpen int
	mu                  sync.Mutex
	addrs               map[string]*addrConns
}

type addrConns struct{ open, pending int }

func newConnLimits(maxPending, maxOpen int) *connLimits {
	return &connLimits{maxPending: maxPending, maxOpen: maxOpen, addrs: map[string]*addrConns{}}
}

// listen wraps ln so that it hands out only connections within the limits; it closes the others
// at once.
func (l *connLimits) listen(ln net.Listener) net.Listener {
	return &limitedListener{Listener: ln, l: l}
}

type limitedListener struct {
	net.Listener
	l *connLimits
}

func (ln *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(c.RemoteAddr().String())
		if err != nil {
			host = c.RemoteAddr().String()
		}
		l := ln.l
		l.mu.Lock()
		a := l.addrs[host]
		if a == nil {
			a = &addrConns{}
			l.addrs[host] = a
		}
		if a.open >= l.maxOpen || a.pending >= l.maxPending {
			l.mu.Unlock()
			c.Close()
			continue
		}
		a.open++
		a.pending++
		l.mu.Unlock()
		return &limitedConn{Conn: c, l: l, addr: host, pending: true}, nil
	}
}

// limitedConn is a connection counted in connLimits. Its fields are guarded by connLimits.mu.
type limitedConn struct {
	net.Conn
	l       *connLimits
	addr    string
	pending bool // counted as sending headers
	idle    bool // between requests: its next byte starts a request
	closed  bool
}

// errTooManyPending ends a connection whose new request would put its address over the limit.
var errTooManyPending = errors.New("too many connections of this address are sending request headers")

func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		l := c.l
		l.mu.Lock()
		over := false
		if c.idle {
			c.idle = false
			if !c.pending {
				c.pending = true
				a := l.addrs[c.addr]
				a.pending++
				over = a.pending > l.maxPending
			}
		}
		l.mu.Unlock()
		if over {
			c.Close()
			return 0, errTooManyPending
		}
	}
	return n, err
}

func (c *limitedConn) Close() error {
	l := c.l
	l.mu.Lock()
	if !c.closed {
		c.closed = true
		a := l.addrs[c.addr]
		a.open--
		if c.pending {
			c.pending = false
			a.pending--
		}
		if a.open == 0 {
			delete(l.addrs, c.addr)
		}
	}
	l.mu.Unlock()
	return c.Conn.Close()
}

// notPending marks c as no longer sending headers: its handler runs, or it waits idle for its
// next request (idle), whose first byte marks it again.
func (l *connLimits) notPending(c *limitedConn, idle bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c.idle = idle
	if c.pending && !c.closed {
		c.pending = false
		l.addrs[c.addr].pending--
	}
}

type connKey struct{}

// connContext is the server's ConnContext: it gives each connection's requests their connection.
func (l *connLimits) connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// connState is the server's ConnState hook: a connection idle between requests sends no headers.
func (l *connLimits) connState(c net.Conn, state http.ConnState) {
	if lc, ok := asLimited(c); ok && state == http.StateIdle {
		l.notPending(lc, true)
	}
}

// started marks the connection of a request whose handler runs as no longer sending headers.
func (l *connLimits) started(ctx context.Context) {
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if lc, ok := asLimited(c); ok && l != nil {
		l.notPending(lc, false)
	}
}

// asLimited returns the counted connection under c, which net/http hands over wrapped in TLS
// when devreg serves HTTPS.
func asLimited(c net.Conn) (*limitedConn, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	return lc, ok
}

// counts returns how many connections of addr are open and how many send headers.
func (l *connLimits) counts(addr string) (open, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a := l.addrs[addr]; a != nil {
		return a.open, a.pending
	}
	return 0, 0
}
