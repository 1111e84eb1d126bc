package server

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"devreg"
	"devreg/credential"
	"devreg/internal/respond"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devreg_http_requests_total", Help: "HTTP requests answered, by route and status.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "devreg_http_request_duration_seconds", Help: "Time to answer HTTP requests, by route.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}, []string{"route"}),
	}
	reg.MustRegister(m.requests, m.duration)
	return m
}

// statusWriter remembers the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// The Content-Security-Policy of every answer: only this origin's scripts, styles and images, no
// framing by other sites (clickjacking of the console's forms), forms posted only here. The
// interactive API docs (Swagger UI) set styles inline and show data: images.
const (
	pagePolicy = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
	docsPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)

// securityHeaders sets the headers that keep browsers from framing, sniffing or leaking pages,
// and, on an answer over HTTPS, from ever reaching this host over plain HTTP again (HSTS, a
// year; browsers ignore it over HTTP). Not includeSubDomains: devreg cannot know what else runs
// under its domain's subdomains, and a plain HTTP service there would be cut off.
func securityHeaders(h http.Header, path string, https bool) {
	if https {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	policy := pagePolicy
	if path == "/docs" || strings.HasPrefix(path, "/docs/") {
		policy = docsPolicy
	}
	h.Set("Content-Security-Policy", policy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
}

// middleware gives every request an ID, a body limit and a minimum rate for its body, security headers, panic recovery, one access-log record and
// its metrics. Only the path is logged, never the query string or headers, which may hold credentials.
func (s *Server) middleware(next http.Handler, m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := credential.RandomString(16)
		w.Header().Set("X-Request-ID", id)
		ip := clientIP(r, s.cfg.TrustedProxies)
		ctx := devreg.NewContextWithClientIP(devreg.NewContextWithRequestID(r.Context(), id), ip)
		if chain := s.clientCertificates(r, id); chain != nil {
			ctx = devreg.NewContextWithClientCertificates(ctx, chain)
		}
		r = r.WithContext(ctx)
		s.conns.started(r.Context())
		securityHeaders(w.Header(), r.URL.Path, servedOverHTTPS(r, s.cfg.TrustedProxies))
		sw := &statusWriter{ResponseWriter: w}
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			// Also for a handler that never reads the body: net/http reads what is left of it
			// before it answers, and a body that never comes would hold the connection for good.
			rc.SetReadDeadline(start.Add(s.cfg.BodyGrace))
			r.Body = &rateReader{body: r.Body, rc: rc, start: start, grace: s.cfg.BodyGrace, rate: s.cfg.MinBodyRate, idle: s.cfg.BodyIdle}
		}
		if r.ContentLength > s.cfg.MaxBody {
			// Refused without reading a byte, by the handler's own surface (a page for the
			// console, JSON for the API), which meets the error when it reads the body.
			r.Body = tooLargeBody{limit: s.cfg.MaxBody}
		} else {
			r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBody)
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					if p == http.ErrAbortHandler {
						panic(p)
					}
					s.log.Error("panic", "request_id", id, "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					if sw.status == 0 {
						respond.WriteJSONError(sw, r, s.log, fmt.Errorf("panic: %v", p))
					}
				}
			}()
			next.ServeHTTP(sw, r)
		}()
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		elapsed := time.Since(start)
		m.requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
		s.log.Info("request", "request_id", id, "method", r.Method, "path", r.URL.Path, "status", status,
			"bytes", sw.bytes, "duration_ms", elapsed.Milliseconds(), "remote", r.RemoteAddr, "client_ip", ip)
	})
}

// tooLargeBody is the body of a request whose declared length is over the limit: reading it
// fails at once, as http.MaxBytesReader fails once past the limit.
type tooLargeBody struct{ limit int64 }

func (b tooLargeBody) Read([]byte) (int, error) { return 0, &http.MaxBytesError{Limit: b.limit} }

func (b tooLargeBody) Close() error { return nil }
