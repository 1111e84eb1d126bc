package server

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync/atomic"
	"time"
)

// errorLog is net/http's error log. A failed TLS handshake costs its client nothing (plain HTTP
// sent to the HTTPS port, a port scan, a handshake that stalls), and net/http logs every one: a
// single client could write thousands of records a second. Those records pass at most once a
// minute, the next one saying how many were left out; every other record passes.
type errorLog struct {
	next       io.Writer
	handshakes rateLog
	dropped    atomic.Int64
}

func newErrorLog(h slog.Handler) *log.Logger {
	return log.New(&errorLog{next: slog.NewLogLogger(h, slog.LevelWarn).Writer()}, "", 0)
}

func (l *errorLog) Write(p []byte) (int, error) {
	if !bytes.HasPrefix(p, []byte("http: TLS handshake error")) {
		return l.next.Write(p)
	}
	if !l.handshakes.allow(time.Now()) {
		l.dropped.Add(1)
		return len(p), nil
	}
	msg := bytes.TrimRight(p, "\n")
	if n := l.dropped.Swap(0); n > 0 {
		msg = fmt.Appendf(msg, " (and %d more TLS handshake errors since the last one logged, not logged; at most one a minute is)", n)
	}
	if _, err := l.next.Write(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}
