// Package server wires devreg together: it opens the store and the server keys, mounts the
// Operations API, the docs, /healthz and /metrics on one mux behind the common middleware
// (request IDs, access log, panic recovery, body limit), and runs and stops the HTTP server.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
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
	"sync"
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
	"devreg/internal/authn"
	domain "devreg/internal/metrics"
	"devreg/internal/ratelimit"
	"devreg/natsevents"
	"devreg/registry"
	"devreg/store"
	"devreg/webhook"
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

	// HTTPS served by devreg itself: a certificate and key in PEM files (read again on
	// ReloadTLS and when they change), or certificates got by ACME for TLSACMEDomains, kept
	// in TLSACMEDir. Neither: plain HTTP, for a server behind a TLS proxy.
	TLSCertFile, TLSKeyFile string
	TLSACMEDomains          []string
	TLSACMEDir              string
	TLSReloadEvery          time.Duration // how often the files are checked; 0 for DefaultTLSReloadEvery
	// ClientCertHeader names the header in which a trusted proxy that terminated TLS passes the
	// client's certificate; "" for none. From any other peer the header is ignored.
	ClientCertHeader string
	// MetricsAddr, when set, is the host:port /metrics is served on, on a listener of its own,
	// and the public listener serves no /metrics. "" serves it on Addr.
	MetricsAddr string
	// HeaderTimeout bounds the TLS handshake and the request headers together; 0 for
	// DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// WebhookAllowPrivate lets webhooks reach loopback, private and link-local addresses.
	WebhookAllowPrivate bool
	// EventsRetention is how long delivered events are kept; 0 for DefaultEventsRetention.
	EventsRetention time.Duration
	// EventsNATS, when set, is the URL of a NATS server with JetStream that every event is
	// published to (subject devreg.<account_id>.<type>).
	EventsNATS string
}

// DefaultEventsRetention is how long events are kept once delivered.
const DefaultEventsRetention = 7 * 24 * time.Hour

// DefaultHeaderTimeout is how long a connection may take from its first byte (the TLS handshake
// included) to the end of a request's headers.
const DefaultHeaderTimeout = 10 * time.Second

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
	cfg       Config
	signing   *devtoken.SigningKeys
	log       *slog.Logger
	db        *store.DB
	Service   *registry.Service
	http      *http.Server
	ln        net.Listener
	tls       *tls.Config // nil for plain HTTP
	certs     *certFiles  // with --tls-cert: the files and the certificate in use
	stop      context.CancelFunc
	conns     *connLimits
	headerLog rateLog            // the client certificate header from a peer that is no trusted proxy
	metrics   *metricsServer     // with MetricsAddr: the listener /metrics is served on
	limits    *ratelimit.Limiter // API keys' requests, shared by the Operations API and introspection
	// nats publishes the events with --events-nats; nil without.
	nats *natsevents.Publisher
	// startEvents starts the delivery of events and their retention (once, when Serve starts);
	// stopEvents ends them, and events waits for them.
	startEvents sync.Once
	stopEvents  context.CancelFunc
	events      sync.WaitGroup
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
	cfg.HeaderTimeout = cmp.Or(cfg.HeaderTimeout, DefaultHeaderTimeout)
	cfg.TLSReloadEvery = cmp.Or(cfg.TLSReloadEvery, DefaultTLSReloadEvery)
	if err := cfg.CheckTLS(); err != nil {
		return nil, err
	}
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
	svc.WebhookGuard = webhook.Guard{AllowPrivate: cfg.WebhookAllowPrivate}
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
	if s.tls, err = s.tlsConfig(); err != nil {
		db.Close()
		return nil, err
	}
	if s.ln, err = net.Listen("tcp", cfg.Addr); err != nil {
		db.Close()
		return nil, err
	}
	// Device tokens are issued as the public URL, which may name the port just bound.
	svc.TokenKeys, svc.TokenIssuer, svc.PublicURL = s.signing, s.PublicURL(), s.PublicURL()
	handler, err := s.handler()
	if err != nil {
		if s.metrics != nil {
			s.metrics.close()
		}
		s.ln.Close()
		db.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler: handler,
		// net/http gives the TLS handshake the same limit (the least of its read timeouts), so a
		// handshake that stalls holds its connection slot no longer than headers that stall.
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       s.conns.connContext,
		ConnState:         s.conns.connState,
		ErrorLog:          newErrorLog(cfg.Logger.Handler()),
		TLSConfig:         s.tls,
	}
	// HTTP/1.1 only, over TLS too: the limits on slow clients count connections sending
	// headers, and one HTTP/2 connection could carry a hundred stalled requests.
	s.http.Protocols = new(http.Protocols)
	s.http.Protocols.SetHTTP1(true)
	if s.certs != nil {
		watchCtx, stop := context.WithCancel(context.Background())
		s.stop = stop
		go s.certs.watch(watchCtx, cfg.TLSReloadEvery)
	}
	if cfg.EventsNATS != "" {
		if s.nats, err = natsevents.Dial(cfg.EventsNATS); err != nil {
			s.ln.Close()
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// runEvents starts the delivery of events to webhooks and NATS and their retention, until
// Shutdown. Serve starts it, not Open: what is set on Service between the two (a test's clock)
// is set before these goroutines read it.
func (s *Server) runEvents() {
	retention := cmp.Or(s.cfg.EventsRetention, DefaultEventsRetention)
	nats := s.nats
	ctx, stop := context.WithCancel(context.Background())
	s.stopEvents = stop
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s:%d:%s", host, os.Getpid(), credential.RandomID("srv", 8))
	s.events.Add(2)
	go func() { defer s.events.Done(); s.Service.DeliverEvents(ctx, owner) }()
	go func() { defer s.events.Done(); s.Service.PruneEvents(ctx, retention) }()
	if nats != nil {
		s.events.Add(1)
		go func() {
			defer s.events.Done()
			defer nats.Close()
			s.Service.PublishEvents(ctx, "nats", owner, nats)
		}()
	}
}

// URL returns the address the server listens on, as an http or (serving TLS) https URL.
func (s *Server) URL() string { return s.scheme() + "://" + s.ln.Addr().String() }

func (s *Server) scheme() string {
	if s.tls != nil {
		return "https"
	}
	return "http"
}

// PublicURL returns the address clients use: --public-url, or http:// (https:// when serving
// TLS) and --addr (the address
// actually bound when --addr asks for any free port).
func (s *Server) PublicURL() string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	if _, port, err := net.SplitHostPort(s.cfg.Addr); err == nil && port != "0" {
		return s.scheme() + "://" + s.cfg.Addr
	}
	return s.URL()
}

// Serve answers requests until Shutdown, and delivers events meanwhile.
func (s *Server) Serve() error {
	s.startEvents.Do(s.runEvents)
	s.log.Info("devreg serving", "addr", s.ln.Addr().String(), "public_url", s.PublicURL(), "data", s.cfg.DataDir,
		"api_rate_limit", s.cfg.APIRateLimit, "tls", s.tls != nil)
	var err error
	if s.tls != nil {
		// The TLS layer goes over the limited listener, so TLS connections count against the
		// per-address limits from their first byte, handshake included.
		err = s.http.ServeTLS(s.conns.listen(s.ln), "", "")
	} else {
		err = s.http.Serve(s.conns.listen(s.ln))
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops accepting requests, waits for those in flight (until ctx ends) and closes the
// database.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.startEvents.Do(func() {}) // not started: not to be started now
	if s.stopEvents != nil {
		s.stopEvents()
	}
	s.events.Wait() // deliveries under way record their tries first
	if s.nats != nil && s.stopEvents == nil {
		s.nats.Close()
	}
	if s.metrics != nil {
		s.metrics.close()
	}
	if s.stop != nil {
		s.stop()
	}
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
	s.Service.Metrics = domain.New(reg, domain.Sources{DB: s.db, LastSeenBacklog: s.Service.LastSeenBacklog, AuditEntries: s.db.AuditEntryCount})
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	mux := http.NewServeMux()
	api, err := httpapi.New(s.Service, s.log)
	if err != nil {
		return nil, err
	}
	// One authentication step for every surface, and one limiter for the API keys' requests.
	auth := authn.New(s.Service, s.limits)
	api.AuthenticateWith(auth)
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
	mux.Handle("GET /readyz", &readiness{s: s})
	if s.cfg.MetricsAddr == "" {
		mux.Handle("GET /metrics", metricsHandler)
	} else {
		ms, err := listenMetrics(s.cfg.MetricsAddr, metricsHandler, s.log)
		if err != nil {
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		s.metrics = ms
	}
	devices := deviceauth.New(s.Service, s.signing, s.PublicURL(), s.cfg.TokenLifetime, s.log)
	devices.AuthenticateWith(auth)
	devices.Register(mux)
	brokers := brokerapi.New(s.Service, s.log, brokerapi.Config{Metrics: reg})
	brokers.AuthenticateWith(auth)
	brokers.Register(mux)
	ui, err := console.New(s.Service, s.log, console.Config{SecureCookies: s.tls != nil || strings.HasPrefix(s.PublicURL(), "https://")})
	if err != nil {
		return nil, err
	}
	ui.Register(mux)
	return s.middleware(mux, m), nil
}
