package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"devreg"
	"devreg/internal/ratelimit"
	"devreg/server"
)

// serverFlags adds the flags that say where the data lives, shared by serve and accounts.
func (m *Main) serverFlags(fs *flag.FlagSet, cfg *server.Config) {
	fs.StringVar(&cfg.DataDir, "data", m.env("DEVREG_DATA", "./devreg-data"), "`DIR` of the embedded database and the server keys, created on first start (env DEVREG_DATA)")
	fs.StringVar(&cfg.Database, "database", m.env("DEVREG_DATABASE", ""), "database `URL`; empty for the embedded SQLite database in the data directory, postgres://... for PostgreSQL (env DEVREG_DATABASE)")
	cfg.SecretKeyFile = m.Getenv("DEVREG_SECRET_KEY_FILE")
	cfg.SigningKeyFile = m.Getenv("DEVREG_SIGNING_KEY_FILE")
}

func (m *Main) serve(ctx context.Context, args []string) error {
	var cfg server.Config
	fs := m.flagSet("serve", "serve [flags]\n\n"+
		"Runs the service (Operations API, console, docs, device and broker endpoints) until SIGINT or\n"+
		"SIGTERM. Every flag also comes from its DEVREG_ variable or from --config FILE; the command\n"+
		"line overrides the variables, which override the file.\n\n"+
		"Example:\n  devreg serve --addr 0.0.0.0:8080 --public-url https://devreg.example.com --metrics-listen 10.0.0.5:9090")
	fs.StringVar(&cfg.Addr, "addr", m.env("DEVREG_ADDR", "localhost:8080"), "`host:port` to listen on (env DEVREG_ADDR)")
	m.serverFlags(fs, &cfg)
	fs.StringVar(&cfg.PublicURL, "public-url", m.env("DEVREG_PUBLIC_URL", ""), "the `URL` clients use, for links and the token issuer; default http:// + --addr (env DEVREG_PUBLIC_URL)")
	maxBody := fs.String("max-body", m.env("DEVREG_MAX_BODY", "1GiB"), "largest request body; larger ones get 413 (env DEVREG_MAX_BODY)")
	fs.StringVar(&cfg.SigningAlg, "signing-alg", m.env("DEVREG_SIGNING_ALG", "EdDSA"), "device token signatures: EdDSA or ES256 (for brokers that verify tokens against the JWKS and take only ES256) (env DEVREG_SIGNING_ALG)")
	lifetime := fs.String("token-lifetime", m.env("DEVREG_TOKEN_LIFETIME", "1h"), "how long device tokens are valid (env DEVREG_TOKEN_LIFETIME)")
	rateLimit := fs.String("api-rate-limit", m.env("DEVREG_API_RATE_LIMIT", strconv.Itoa(ratelimit.DefaultLimit)),
		"`N` requests a minute that each admin, register or read API key may make, counted by each server on its own; beyond it 429 (at least 1; broker keys are not limited) (env DEVREG_API_RATE_LIMIT)")
	proxies := fs.String("trusted-proxy", m.env("DEVREG_TRUSTED_PROXY", ""), "reverse `proxies` (addresses or CIDR prefixes, comma-separated) whose X-Forwarded-For names the client's address in the audit log (env DEVREG_TRUSTED_PROXY)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-listen", m.env("DEVREG_METRICS_LISTEN", ""), "`host:port` to serve /metrics on, apart from --addr, which then serves no /metrics; empty (the default) serves it on --addr (env DEVREG_METRICS_LISTEN)")
	debugAddr := fs.String("debug-listen", m.env("DEVREG_DEBUG_LISTEN", ""), "`host:port` to serve the runtime profiles (net/http/pprof) on, apart from --addr; empty (the default) for none. Keep it on loopback (env DEVREG_DEBUG_LISTEN)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", m.env("DEVREG_TLS_CERT", ""), "serve HTTPS with the certificate (and its chain) in this PEM `FILE`, read again on SIGHUP and when it changes (env DEVREG_TLS_CERT)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", m.env("DEVREG_TLS_KEY", ""), "the private key of --tls-cert, a PEM `FILE` (env DEVREG_TLS_KEY)")
	acmeDomains := fs.String("tls-acme", m.env("DEVREG_TLS_ACME", ""), "serve HTTPS with certificates got and renewed by ACME (Let's Encrypt) for these `domains`, comma-separated; the CA must reach --addr on port 443 (env DEVREG_TLS_ACME)")
	fs.StringVar(&cfg.TLSACMEDir, "tls-acme-dir", m.env("DEVREG_TLS_ACME_DIR", ""), "`DIR` that keeps the ACME account key and certificates across restarts (env DEVREG_TLS_ACME_DIR)")
	fs.StringVar(&cfg.ClientCertHeader, "tls-client-cert-header", m.env("DEVREG_TLS_CLIENT_CERT_HEADER", ""), "request header `NAME` in which a --trusted-proxy that terminates TLS passes the client's certificate (nginx $ssl_client_escaped_cert, Envoy X-Forwarded-Client-Cert); ignored from other peers (env DEVREG_TLS_CLIENT_CERT_HEADER)")
	allowPrivateEnv, envErr := strconv.ParseBool(m.env("DEVREG_WEBHOOK_ALLOW_PRIVATE", "false"))
	fs.BoolVar(&cfg.WebhookAllowPrivate, "webhook-allow-private", allowPrivateEnv, "let webhooks reach loopback, private and link-local addresses (a receiver on the same host or network); refused by default, so that a webhook cannot probe the server's network (env DEVREG_WEBHOOK_ALLOW_PRIVATE)")
	retention := fs.String("events-retention", m.env("DEVREG_EVENTS_RETENTION", "7 days"), "how long events are kept once every webhook of their account has delivered them, such as \"7 days\" or 72h; the audit log keeps its entries regardless (env DEVREG_EVENTS_RETENTION)")
	fs.StringVar(&cfg.EventsNATS, "events-nats", m.env("DEVREG_EVENTS_NATS", ""), "publish every event to this NATS server with JetStream (nats://host:4222), on subject devreg.<account_id>.<event type> with the event ID as Nats-Msg-Id; devreg makes stream DEVREG_EVENTS unless a stream takes devreg.> already (env DEVREG_EVENTS_NATS)")
	fs.String("config", "", "a YAML `FILE` of settings named as these flags (addr: ..., public-url: ...); the command line and DEVREG_ variables override it (env DEVREG_CONFIG)")
	args, err := m.applyConfigFile(fs, args)
	if err != nil {
		return err
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, d := range strings.Split(*acmeDomains, ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.TLSACMEDomains = append(cfg.TLSACMEDomains, d)
		}
	}
	if err := cfg.CheckTLS(); err != nil {
		return usageError{err.Error()}
	}
	if err := checkPublicURL(cfg.Addr, cfg.PublicURL); err != nil {
		return err
	}
	if cfg.TrustedProxies, err = server.ParseTrustedProxies(*proxies); err != nil {
		return usageError{err.Error()}
	}
	if cfg.ClientCertHeader != "" && len(cfg.TrustedProxies) == 0 {
		return usageError{"--tls-client-cert-header needs --trusted-proxy: the header is believed only from the proxies named there, and without one it would be ignored on every request"}
	}
	if cfg.MaxBody, err = parseSize(*maxBody); err != nil {
		return usageError{"--max-body: " + err.Error()}
	}
	if cfg.TokenLifetime, err = time.ParseDuration(*lifetime); err != nil || cfg.TokenLifetime < time.Minute {
		return usageError{"--token-lifetime: want a duration of at least 1m, such as 1h or 30m"}
	}
	// 0 is refused rather than read as "no limit": one mistyped variable must not remove the
	// limit from every key, and the contract promises the RateLimit-* fields on every answer.
	if cfg.APIRateLimit, err = strconv.Atoi(strings.TrimSpace(*rateLimit)); err != nil || cfg.APIRateLimit < 1 || cfg.APIRateLimit > ratelimit.MaxLimit {
		return usageError{fmt.Sprintf("--api-rate-limit: want a whole number of requests a minute per API key from 1 to %d, not %q "+
			"(the limit cannot be turned off; for keys used only on a trusted network, give a large number)", ratelimit.MaxLimit, *rateLimit)}
	}
	if envErr != nil {
		return usageError{"DEVREG_WEBHOOK_ALLOW_PRIVATE: want true or false, not " + strconv.Quote(m.env("DEVREG_WEBHOOK_ALLOW_PRIVATE", ""))}
	}
	if cfg.EventsRetention, err = devreg.ParseDuration(*retention); err != nil || cfg.EventsRetention < time.Hour {
		return usageError{"--events-retention: want a duration of at least an hour, such as \"7 days\" or 72h, not " + strconv.Quote(*retention)}
	}
	if cfg.SigningAlg != "EdDSA" && cfg.SigningAlg != "ES256" {
		return usageError{"--signing-alg: want EdDSA or ES256"}
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(m.Stderr, nil))

	if *debugAddr != "" {
		dbg, err := server.ListenDebug(*debugAddr, cfg.Logger)
		if err != nil {
			return fmt.Errorf("--debug-listen: %w", err)
		}
		defer dbg.Close()
		fmt.Fprintf(m.Stderr, "devreg profiles: %s\n", dbg.URL())
	}
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			srv.ReloadTLS() // logs what it did; a failure keeps the certificate in use
		}
	}()
	fmt.Fprintf(m.Stderr, "devreg is serving on %s (console: %s/, API docs: %s/docs)\n", srv.URL(), srv.PublicURL(), srv.PublicURL())
	if u := srv.MetricsURL(); u != "" {
		fmt.Fprintf(m.Stderr, "devreg metrics: %s\n", u)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// checkPublicURL refuses a public URL that clients could not use: it is the device tokens'
// issuer, the base of the JWKS URI and of the console's links. Without --public-url it is
// http:// + --addr, which for an address without a host (":8080", "0.0.0.0:8080", "[::]:8080")
// names no server ("http://:8080"); guessing one from the machine's name would make the issuer
// depend on how the machine happens to be named, so devreg asks instead.
func checkPublicURL(addr, publicURL string) error {
	if publicURL == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil // listening says what is wrong with it
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return usageError{fmt.Sprintf("--addr %s names no host, so the default public URL (http://%s) is no address clients could use, "+
				"and device tokens would carry it as their issuer; set --public-url (env DEVREG_PUBLIC_URL) to the address clients use, "+
				"such as --public-url https://devreg.example.com", addr, addr)}
		}
		return nil
	}
	u, err := url.Parse(publicURL)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Hostname() != "" && u.User == nil && u.RawQuery == "" && u.Fragment == "" {
		port, perr := strconv.Atoi(u.Port())
		validPort := u.Port() == "" || perr == nil && port > 0 && port <= 65535
		if ip := net.ParseIP(u.Hostname()); validPort && (ip == nil || !ip.IsUnspecified()) {
			return nil
		}
	}
	return usageError{fmt.Sprintf("--public-url %q is not an address clients could use; give the scheme and host they reach the server at, "+
		"such as https://devreg.example.com (a path is allowed, a query is not)", publicURL)}
}
