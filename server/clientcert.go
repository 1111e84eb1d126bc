package server

import (
	"crypto/sha256"
	"crypto/x509"
	"devreg/devcert"
	"encoding/hex"
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
//   - Envoy's X-Forwarded-Client-Cert: one element (the trusted proxy sets it, replacing any
//     the client sent), a list of key=value pairs separated by ";"; its Chain (leaf first) or
//     else its Cert is taken, and its leaf must be the certificate the element's Hash names.
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
	// Put the line breaks back that a proxy turned into spaces, then read it as any chain given to
	// devreg is read (devcert: at most MaxChain certificates, each passing its checks).
	var canonical strings.Builder
	for n := 1; ; n++ {
		s = strings.TrimSpace(s)
		if s == "" {
			break
		}
		if !strings.HasPrefix(s, pemBegin) {
			return nil, fmt.Errorf("certificate %d: want %s, found %.20q", n, pemBegin, s)
		}
		s = s[len(pemBegin):]
		end := strings.Index(s, pemEnd)
		if end < 0 {
			return nil, fmt.Errorf("certificate %d: no %s", n, pemEnd)
		}
		canonical.WriteString(pemBegin + "\n" + strings.Join(strings.Fields(s[:end]), "") + "\n" + pemEnd + "\n")
		s = s[end+len(pemEnd):]
	}
	if canonical.Len() == 0 {
		return nil, errors.New("no certificate")
	}
	return devcert.ParsePEMChain(canonical.String())
}

// parseXFCC reads Envoy's X-Forwarded-Client-Cert header
// (https://www.envoyproxy.io/docs/envoy/latest/configuration/http/http_conn_man/headers#x-forwarded-client-cert):
// a value holding ",", ";" or "=" is double-quoted, with \" for a quote inside it.
func parseXFCC(v string) ([]*x509.Certificate, error) {
	elements, err := splitQuoted(v, ',')
	if err != nil {
		return nil, err
	}
	// Envoy writes URI= and DNS= values as the client's certificate has them, unquoted: a SAN
	// holding a "," makes the proxy's element look like two, the second all the client's
	// (",Hash=…;Cert=…" of any certificate it has seen). So the header must hold one element, the
	// one the proxy that terminated the client's TLS set (forward_client_cert_details:
	// SANITIZE_SET); several are refused, whoever appended them.
	if len(elements) != 1 {
		return nil, fmt.Errorf("X-Forwarded-Client-Cert holds %d elements; devreg takes one, set by the proxy that terminated the client's TLS (Envoy: forward_client_cert_details: SANITIZE_SET), and a \",\" in a certificate's SAN can make one look like two", len(elements))
	}
	pairs, err := splitQuoted(strings.TrimSpace(elements[0]), ';')
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
		// Envoy writes URI= and DNS= values unquoted, as the client's certificate has them, and
		// each DNS name (and, in newer versions, URI) as a pair of its own: a SAN reading
		// "urn:x;Hash=…;Chain=…" adds pairs. A key other than those twice is such an injection.
		k := strings.ToLower(key)
		if _, twice := fields[k]; twice && k != "uri" && k != "dns" {
			return nil, fmt.Errorf("X-Forwarded-Client-Cert: the element has %s twice; a value from the client's certificate added one", key)
		}
		fields[k] = value
	}
	raw, ok := fields["chain"]
	if !ok {
		if raw, ok = fields["cert"]; !ok {
			return nil, errors.New("X-Forwarded-Client-Cert: the element has neither Cert nor Chain (set forward_client_cert_details with cert: true in Envoy)")
		}
	}
	pemText, err := url.PathUnescape(raw)
	if err != nil {
		return nil, fmt.Errorf("X-Forwarded-Client-Cert: URL-escaped PEM: %w", err)
	}
	chain, err := parseLoosePEM(pemText)
	if err != nil {
		return nil, err
	}
	// Envoy always writes Hash, the SHA-256 of the certificate the client presented, before
	// anything the certificate says; a Cert or Chain pair that a SAN added names another one.
	hash, ok := fields["hash"]
	if !ok {
		return nil, errors.New("X-Forwarded-Client-Cert: the element has no Hash of the client's certificate")
	}
	if fp := sha256.Sum256(chain[0].Raw); !strings.EqualFold(hash, hex.EncodeToString(fp[:])) {
		return nil, errors.New("X-Forwarded-Client-Cert: the certificate is not the one the element's Hash names; a value from the client's certificate added it")
	}
	return chain, nil
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
