package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// metricsServer serves /metrics on a listener of its own (--metrics-listen), so that the public
// port need not show it: the figures are aggregates, but how busy a service is and how many
// logins it throttles is for its operators, and a scraper on the internal network needs no path
// through the load balancer.
type metricsServer struct {
	ln   net.Listener
	http *http.Server
}

func listenMetrics(addr string, h http.Handler, log *slog.Logger) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	ms := &metricsServer{ln: ln, http: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	go func() {
		if err := ms.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	return ms, nil
}

func (ms *metricsServer) close() { ms.http.Close() }

// MetricsURL returns the address of /metrics on the metrics listener, or "" when /metrics is
// served on the main one.
func (s *Server) MetricsURL() string {
	if s.metrics == nil {
		return ""
	}
	return "http://" + s.metrics.ln.Addr().String() + "/metrics"
}
