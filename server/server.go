// Package server wires devreg together: it opens the store and the server keys, mounts the
// Operations API, the docs, /healthz and /metrics on one mux behind the common middleware
// (request IDs, access log, panic recovery, body limit), and runs and stops the HTTP server.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"devreg/brokerapi"
	"devreg/console"
	"devreg/credential"
	"devreg/deviceauth"
	"devreg/devtoken"
	"devreg/httpapi"
	"devreg/internal/ratelimit"
	"devreg/registry"
	"devreg/store"
)

// Config is everything a server is configured with.
type Config struct {
	Addr           string        // listen address, host:port
	DataDir        string        // where the embedded database and the server keys live
	Database       string        // database URL; "" for the embedded SQLite database in DataDir
	PublicURL      string        // the address clients use; "" for http:// + Addr
	MaxBody        int64         // largest request body in bytes
	SecretKeyFile  string        // the secret-hashing key file; "" for secret.keys in DataDir
	SigningKeyFile string        // the device-token signing key file; "" for signing.keys in DataDir
	TokenLifetime  time.Duration // how long device tokens are valid; 0 for an hour
	SigningAlg     string        // the device tokens' signature: devtoken.EdDSA (default) or devtoken.ES256
	// APIRateLimit is how many requests a minute each admin, register or read API key may make
	// (to the Operations API and to token introspection), counted by this server alone; 0 for
	// ratelimit.DefaultLimit. There is no value that turns the limit off.
	APIRateLimit int

	// Limits on slow clients; 0 for the defaults (DefaultBodyGrace, ...).
	BodyGrace         time.Duration // how long a body may take before its first bytes
	MinBodyRate       int64         // bytes per second a body must average after that
	BodyIdle          time.Duration // the longest pause within a body
	MaxPendingPerAddr int           // connections of one address that may be sending headers at once
	MaxConnsPerAddr   int           // connections of one address that may be open at once
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client's address
	// (for the audit log and API keys' last use); none: the connection's peer is the client.
	TrustedProxies []netip.Prefix
	Logger         *slog.Logger
}

// DefaultMaxBody is the default request body limit: 1 GiB.
const DefaultMaxBody = 1 << 30

// DatabaseURL returns the database the config selects.
func (c Config) DatabaseURL() string {
	if c.Database != "" {
		return c.Database
	}
	return "sqlite:" + filepath.Join(c.DataDir, "devreg.db")
}

// KeyFile returns the path of the secret-hashing key file.
func (c Config) KeyFile() string {
	if c.SecretKeyFile != "" {
		return c.SecretKeyFile
	}
	return filepath.Join(c.DataDir, "secret.keys")
}

// SigningKeyPath returns the path of the device-token signing key file.
func (c Config) SigningKeyPath() string {
	if c.SigningKeyFile != "" {
		return c.SigningKeyFile
	}
	return filepath.Join(c.DataDir, "signing.keys")
}

// OpenRegistry opens the data directory, the store and the key file, and returns the registry
// service over them and the store, which the caller closes. It refuses a key file that lacks a
// key the stored hashes were made with, and makes a new key file only for a database without
// devices: a lost or replaced key file would otherwise lock every registered device out silently.
func OpenRegistry(ctx context.Context, cfg Config) (*registry.Service, *store.DB, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := store.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		return nil, nil, err
	}
	keys, err := openKeyring(ctx, cfg.KeyFile(), db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return registry.New(db, keys), db, nil
}

func openKeyring(ctx context.Context, path string, db *store.DB) (*credential.Keyring, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		has, err := db.HasDevices(ctx)
		if err != nil {
			return nil, err
		}
		if has {
			return nil, fmt.Errorf("the secret key file %s is missing, but the database holds devices whose secrets were hashed with it; "+
				"put the key file back from your backup (devreg makes a new one only for a database without devices)", path)
		}
	}
	keys, err := credential.LoadOrCreateKeyring(path)
	if err != nil {
		return nil, err
	}
	used, err := db.HashKeyIDs(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the key IDs of the stored hashes: %w", err)
	}
	var missing []string
	for _, id := range used {
		if _, ok := keys.Lookup(id); !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the secret key file %s lacks the keys %s, which stored device secrets were hashed with; "+
			"put back the key file that holds them (from your backup) before starting, or no such device could authenticate",
			path, strings.Join(missing, ", "))
	}
	return keys, nil
}

// Server is a running devreg service.
type Server struct {
	cfg     Config
	signing *devtoken.SigningKeys
	log     *slog.Logger
	db      *store.DB
	Service *registry.Service
	http    *http.Server
	ln      net.Listener
	conns   *connLimits
	limits  *ratelimit.Limiter // API keys' requests, shared by the Operations API and introspection
}

// Open prepares a server: it opens the data directory, keys and database, and listens on
// cfg.Addr. Serve then answers requests.
func Open(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	cfg.BodyGrace = cmp.Or(cfg.BodyGrace, DefaultBodyGrace)
	cfg.MinBodyRate = cmp.Or(cfg.MinBodyRate, DefaultMinBodyRate)
	cfg.BodyIdle = cmp.Or(cfg.BodyIdle, DefaultBodyIdle)
	cfg.MaxPendingPerAddr = cmp.Or(cfg.MaxPendingPerAddr, DefaultMaxPendingPerAddr)
	cfg.MaxConnsPerAddr = cmp.Or(cfg.MaxConnsPerAddr, DefaultMaxConnsPerAddr)
	cfg.APIRateLimit = cmp.Or(cfg.APIRateLimit, ratelimit.DefaultLimit)
	limits, err := ratelimit.New(cfg.APIRateLimit, ratelimit.Options{})
	if err != nil {
		return nil, fmt.Errorf("API rate limit: %w", err)
	}
	svc, db, err := OpenRegistry(ctx, cfg)
	if err != nil {
		return nil, err
	}
	svc.Log = cfg.Logger
	s := &Server{cfg: cfg, log: cfg.Logger, db: db, Service: svc, limits: limits, conns: newConnLimits(cfg.MaxPendingPerAddr, cfg.MaxConnsPerAddr)}
	if _, err := os.Stat(cfg.SigningKeyPath()); errors.Is(err, fs.ErrNotExist) {
		if has, _ := db.HasDevices(ctx); has {
			s.log.Warn("the signing key file is missing and a new one is made: device tokens issued before no longer verify, so devices must get new ones",
				"file", cfg.SigningKeyPath())
		}
	}
	if s.signing, err = devtoken.LoadOrCreateSigningKeys(cfg.SigningKeyPath(), cfg.SigningAlg); err != nil {
		db.Close()
		return nil, err
	}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		db.Close()
		return nil, err
	}
	handler, err := s.handler()
	if err != nil {
		s.ln.Close()
		db.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       s.conns.connContext,
		ConnState:         s.conns.connState,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// URL returns the address the server listens on, as an http URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// PublicURL returns the address clients use: --public-url, or http:// and --addr (the address
// actually bound when --addr asks for any free port).
func (s *Server) PublicURL() string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	if _, port, err := net.SplitHostPort(s.cfg.Addr); err == nil && port != "0" {
		return "http://" + s.cfg.Addr
	}
	return s.URL()
}

// Serve answers requests until Shutdown.
func (s *Server) Serve() error {
	s.log.Info("devreg serving", "addr", s.ln.Addr().String(), "public_url", s.PublicURL(), "data", s.cfg.DataDir,
		"api_rate_limit", s.cfg.APIRateLimit)
	if err := s.http.Serve(s.conns.listen(s.ln)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests, waits for those in flight (until ctx ends) and closes the
// database.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.Service.Close() // writes what brokers' logins left to record
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Server) handler() (http.Handler, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)

	mux := http.NewServeMux()
	api, err := httpapi.New(s.Service, s.log)
	if err != nil {
		return nil, err
	}
	api.LimitKeys(s.limits)
	api.Register(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.db.Ping(ctx); err != nil {
			s.log.Error("health check failed", "err", err)
			http.Error(w, "database unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	devices := deviceauth.New(s.Service, s.signing, s.PublicURL(), s.cfg.TokenLifetime, s.log)
	devices.LimitKeys(s.limits)
	devices.Register(mux)
	brokers := brokerapi.New(s.Service, s.signing, s.log, brokerapi.Config{Issuer: s.PublicURL(), Metrics: reg})
	brokers.LimitKeys(s.limits)
	brokers.Register(mux)
	ui, err := console.New(s.Service, s.log, console.Config{SecureCookies: strings.HasPrefix(s.PublicURL(), "https://")})
	if err != nil {
		return nil, err
	}
	ui.Register(mux)
	return s.middleware(mux, m), nil
}
