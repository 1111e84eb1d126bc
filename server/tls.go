package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// DefaultTLSReloadEvery is how often the certificate files are read again to see whether they
// changed. Reading two small files every few seconds costs nothing, and a renewal tool that
// writes the files needs no hook to tell devreg.
const DefaultTLSReloadEvery = 5 * time.Second

// CheckTLS refuses a TLS configuration that cannot work: a certificate without its key, both
// files and ACME at once, ACME without a directory for its account and certificates.
func (c Config) CheckTLS() error {
	files := c.TLSCertFile != "" || c.TLSKeyFile != ""
	switch {
	case files && (c.TLSCertFile == "" || c.TLSKeyFile == ""):
		return errors.New("--tls-cert and --tls-key go together: give both files, the certificate (with its chain) and its private key, in PEM")
	case files && len(c.TLSACMEDomains) > 0:
		return errors.New("--tls-acme and --tls-cert/--tls-key exclude each other: either devreg gets its certificate by ACME, or it reads yours from files")
	case len(c.TLSACMEDomains) > 0 && c.TLSACMEDir == "":
		return errors.New("--tls-acme needs --tls-acme-dir, a directory kept across restarts for the ACME account key and the certificates (without it every start asks the CA again, and the CA's rate limits stop it)")
	case len(c.TLSACMEDomains) == 0 && c.TLSACMEDir != "":
		return errors.New("--tls-acme-dir is set but --tls-acme names no domain")
	}
	for _, d := range c.TLSACMEDomains {
		if d == "" || strings.ContainsAny(d, "/: \t*") {
			return fmt.Errorf("--tls-acme: %q is not a domain name; give the names clients reach devreg at, separated by commas, such as devreg.example.com", d)
		}
	}
	return nil
}

// tlsEnabled says whether the server answers over TLS itself.
func (c Config) tlsEnabled() bool { return c.TLSCertFile != "" || len(c.TLSACMEDomains) > 0 }

// tlsConfig returns the server's TLS configuration, or nil for plain HTTP. Client certificates
// are asked for, not required and not verified here: devreg verifies them itself, per device
// type, and a client without one (a browser, an API client) must still get in. crypto/tls does
// check that the client holds the key of the certificate it presents.
func (s *Server) tlsConfig() (*tls.Config, error) {
	if !s.cfg.tlsEnabled() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	if s.cfg.TLSCertFile != "" {
		s.certs = &certFiles{certFile: s.cfg.TLSCertFile, keyFile: s.cfg.TLSKeyFile, log: s.log}
		if _, err := s.certs.load(); err != nil {
			return nil, err
		}
		cfg.GetCertificate = s.certs.getCertificate
		return cfg, nil
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(s.cfg.TLSACMEDir),
		HostPolicy: autocert.HostWhitelist(s.cfg.TLSACMEDomains...),
	}
	cfg.GetCertificate = m.GetCertificate
	cfg.NextProtos = []string{acme.ALPNProto} // the TLS-ALPN-01 challenge on this listener
	return cfg, nil
}

// ReloadTLS reads the certificate files again now (devreg serve calls it on SIGHUP). A pair
// that does not load keeps the certificate in use and is returned as the error. Without
// --tls-cert it does nothing: ACME renews by itself.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return nil
	}
	changed, err := s.certs.load()
	if err != nil {
		s.log.Error("TLS certificate not reloaded; the one loaded before stays in use", "trigger", "SIGHUP", "err", err)
		return err
	}
	s.log.Info("TLS certificate reloaded", "trigger", "SIGHUP", "changed", changed, "not_after", s.certs.current().Leaf.NotAfter)
	return nil
}

// certFiles serves the certificate of a PEM certificate file and key file, and loads them again
// when asked. A handshake takes whatever certificate is current when it starts; connections
// already open keep theirs, so a reload drops nothing.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // one load at a time; guards sum and lastErr
	sum     [sha256.Size]byte
	lastErr string
}

// load reads both files and, when their content changed, makes them the current certificate.
// A pair that fails (a key that does not match, a file half written by a renewal) changes
// nothing.
func (c *certFiles) load() (changed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("--tls-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("--tls-key: %w", err)
	}
	sum := sha256.Sum256(append(append(certPEM, 0), keyPEM...))
	if c.cert.Load() != nil && bytes.Equal(sum[:], c.sum[:]) {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("--tls-cert %s with --tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	c.sum = sum
	c.cert.Store(&pair)
	return true, nil
}

func (c *certFiles) current() *tls.Certificate { return c.cert.Load() }

func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// watch loads the files every interval until ctx ends. A failure is logged once until it
// changes or the files load again, not every few seconds.
func (c *certFiles) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := c.load()
		c.mu.Lock()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		repeated := msg == c.lastErr
		c.lastErr = msg
		c.mu.Unlock()
		switch {
		case err != nil && !repeated:
			c.log.Error("TLS certificate files changed but do not load; the certificate loaded before stays in use", "trigger", "file change", "err", err)
		case changed:
			c.log.Info("TLS certificate reloaded", "trigger", "file change", "not_after", c.current().Leaf.NotAfter)
		}
	}
}
