package server

import (
	"context"
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

// pendingConns caps, per client address, the connections that have not yet sent a whole request
// header: the ones a slow client can open by the thousand at no cost. Connections that are in a
// handler or idle between requests do not count, so a broker or a factory behind one NAT address
// may keep as many honest connections as it likes.
type pendingConns struct {
	max   int
	mu    sync.Mutex
	addrs map[string]int
	conns map[net.Conn]*connInfo
}

// connInfo is what the server knows of one connection.
type connInfo struct {
	addr    string
	pending bool // counted in pendingConns.addrs
}

type connInfoKey struct{}

func newPendingConns(max int) *pendingConns {
	return &pendingConns{max: max, addrs: map[string]int{}, conns: map[net.Conn]*connInfo{}}
}

// connContext is the server's ConnContext: it gives each connection's requests its connInfo.
func (p *pendingConns) connContext(ctx context.Context, c net.Conn) context.Context {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		host = c.RemoteAddr().String()
	}
	info := &connInfo{addr: host}
	p.mu.Lock()
	p.conns[c] = info
	p.mu.Unlock()
	return context.WithValue(ctx, connInfoKey{}, info)
}

// connState is the server's ConnState hook. A new connection, and an idle one that starts
// another request, wait for headers until the handler starts; a new one over the cap is closed.
func (p *pendingConns) connState(c net.Conn, state http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.conns[c]
	if info == nil {
		return
	}
	switch state {
	case http.StateNew, http.StateActive:
		if !info.pending {
			info.pending = true
			p.addrs[info.addr]++
			if state == http.StateNew && p.addrs[info.addr] > p.max {
				c.Close()
			}
		}
	case http.StateIdle:
		p.done(info)
	case http.StateClosed, http.StateHijacked:
		p.done(info)
		delete(p.conns, c)
	}
}

// started marks the connection of a request whose handler runs as no longer waiting for headers.
func (p *pendingConns) started(ctx context.Context) {
	if p == nil {
		return
	}
	if info, ok := ctx.Value(connInfoKey{}).(*connInfo); ok {
		p.mu.Lock()
		p.done(info)
		p.mu.Unlock()
	}
}

func (p *pendingConns) done(info *connInfo) {
	if info.pending {
		info.pending = false
		if p.addrs[info.addr]--; p.addrs[info.addr] <= 0 {
			delete(p.addrs, info.addr)
		}
	}
}

// pending returns how many connections of addr wait for their headers.
func (p *pendingConns) pending(addr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addrs[addr]
}
