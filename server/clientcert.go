package server

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// maxClientCertHeader bounds the certificates a proxy may pass in the client certificate header:
// a device's chain is a few KiB; the server's header limit (maxHeaderBytes) bounds it as well.
const maxClientCertHeader = 64 << 10

// clientCertificates returns the certificate chain the client presented, leaf first, unverified:
// the one on devreg's own TLS connection, or else the one a trusted proxy names in the
// --tls-client-cert-header header. A certificate on the connection always wins, so a proxy's
// header cannot replace what the client proved on devreg's own handshake.
func (s *Server) clientCertificates(r *http.Request, requestID string) []*x509.Certificate {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return r.TLS.PeerCertificates
	}
	name := s.cfg.ClientCertHeader
	if name == "" {
		return nil
	}
	values := r.Header.Values(name)
	if len(values) == 0 {
		return nil
	}
	if !isTrusted(peerAddr(r), s.cfg.TrustedProxies) {
		// Anyone can send the header; from a peer that is no trusted proxy it is a client
		// claiming a certificate it never showed. Logged at most once a minute, so a client
		// that sends it on every request cannot fill the log.
		if s.headerLog.allow(time.Now()) {
			s.log.Warn("client certificate header ignored: the request does not come from a --trusted-proxy (further ones are not logged for a minute)",
				"header", name, "remote", r.RemoteAddr, "request_id", requestID)
		}
		return nil
	}
	chain, err := parseClientCertHeader(strings.Join(values, ","))
	if err != nil {
		s.log.Warn("client certificate header from a trusted proxy not understood; the request has no client certificate",
			"header", name, "remote", r.RemoteAddr, "request_id", requestID, "err", err)
		return nil
	}
	return chain
}

// rateLog lets a log record through at most once a minute.
type rateLog struct{ last atomic.Int64 }

func (l *rateLog) allow(now time.Time) bool {
	last := l.last.Load()
	return now.UnixNano()-last >= int64(time.Minute) && l.last.CompareAndSwap(last, now.UnixNano())
}

// parseClientCertHeader reads the certificates a proxy passes, in the forms proxies send:
//   - nginx's $ssl_client_escaped_cert: URL-escaped PEM ("-----BEGIN%20CERTIFICATE-----%0A…"),
//     which may hold the chain;
//   - PEM whose line breaks became spaces or tabs (headers hold no line breaks; nginx's old
//     $ssl_client_cert, Traefik and some load balancers send it so);
//   - Envoy's X-Forwarded-Client-Cert: elements separated by ",", each a list of key=value pairs
//     separated by ";". Each proxy appends its element, so the last is the one the nearest proxy,
//     the trusted one, added; its Chain (leaf first) or else its Cert is taken.
func parseClientCertHeader(v string) ([]*x509.Certificate, error) {
	if len(v) > maxClientCertHeader {
		return nil, fmt.Errorf("the header holds %d bytes, more than the %d a certificate chain may take", len(v), maxClientCertHeader)
	}
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, pemBegin):
		return parseLoosePEM(v)
	case strings.HasPrefix(v, "-----BEGIN%20"):
		pemText, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("URL-escaped PEM: %w", err)
		}
		return parseLoosePEM(pemText)
	}
	return parseXFCC(v)
}

const (
	pemBegin = "-----BEGIN CERTIFICATE-----"
	pemEnd   = "-----END CERTIFICATE-----"
)

// parseLoosePEM reads one or more PEM certificates whose base64 may be broken by any white
// space (or by none), and refuses anything else around them.
func parseLoosePEM(s string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	for {
		s = strings.TrimSpace(s)
		if s == "" {
			break
		}
		if !strings.HasPrefix(s, pemBegin) {
			return nil, fmt.Errorf("certificate %d: want %s, found %.20q", len(chain)+1, pemBegin, s)
		}
		s = s[len(pemBegin):]
		end := strings.Index(s, pemEnd)
		if end < 0 {
			return nil, fmt.Errorf("certificate %d: no %s", len(chain)+1, pemEnd)
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s[:end]), ""))
		if err != nil {
			return nil, fmt.Errorf("certificate %d: base64: %w", len(chain)+1, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(chain)+1, err)
		}
		chain = append(chain, cert)
		s = s[end+len(pemEnd):]
	}
	if len(chain) == 0 {
		return nil, errors.New("no certificate")
	}
	return chain, nil
}

// parseXFCC reads Envoy's X-Forwarded-Client-Cert header
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-client-cert):
// a value holding ",", ";" or "=" is double-quoted, with \" for a quote inside it.
func parseXFCC(v string) ([]*x509.Certificate, error) {
	elements, err := splitQuoted(v, ',')
	if err != nil {
		return nil, err
	}
	last := strings.TrimSpace(elements[len(elements)-1])
	pairs, err := splitQuoted(last, ';')
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, p := range pairs {
		key, value, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("X-Forwarded-Client-Cert: %.40q is no key=value pair", p)
		}
		if strings.HasPrefix(value, `"`) {
			if len(value) < 2 || !strings.HasSuffix(value, `"`) {
				return nil, fmt.Errorf("X-Forwarded-Client-Cert: the value of %s lacks its closing quote", key)
			}
			value = strings.ReplaceAll(value[1:len(value)-1], `\"`, `"`)
		}
		fields[strings.ToLower(key)] = value
	}
	raw, ok := fields["chain"]
	if !ok {
		if raw, ok = fields["cert"]; !ok {
			return nil, errors.New("X-Forwarded-Client-Cert: the nearest proxy's element has neither Cert nor Chain (set forward_client_cert_details with cert: true in Envoy)")
		}
	}
	pemText, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("X-Forwarded-Client-Cert: URL-escaped PEM: %w", err)
	}
	return parseLoosePEM(pemText)
}

// splitQuoted splits s at sep outside double quotes.
func splitQuoted(s string, sep byte) ([]string, error) {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if quoted {
		return nil, errors.New("X-Forwarded-Client-Cert: a quote is not closed")
	}
	return append(parts, s[start:]), nil
}
