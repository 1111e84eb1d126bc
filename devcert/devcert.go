// Package devcert reads and checks the X.509 certificates devices and their makers bring: a
// device's certificate, a factory CA given to a device type, a chain sent by a TLS proxy. It holds
// no state and touches no database, so every surface (API, registration, token endpoint, brokers)
// refuses the same certificates with the same words.
package devcert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits. A device certificate is well under 2 KiB and an RSA-4096 CA under 3 KiB; 16 KiB leaves
// room for long subjects while a 1 MB "certificate" is refused before it is decoded.
const (
	MaxPEMSize       = 16 << 10              // one certificate in PEM
	MaxChain         = 10                    // certificates in one chain
	MaxChainPEMSize  = MaxChain * MaxPEMSize // a whole chain in PEM
	MaxIntermediates = 4                     // intermediates between a device and its type's CA
	MinRSABits       = 2048
	MaxRSABits       = 8192 // larger keys only cost verification time
)

// Error codes, short and stable, for logs and for clients that want to tell refusals apart.
const (
	CodeTooLarge          = "too_large"
	CodeNotPEM            = "not_pem"
	CodeWrongBlock        = "wrong_block_type"
	CodeSeveral           = "several_certificates"
	CodeTooMany           = "too_many_certificates"
	CodeTrailingData      = "trailing_data"
	CodeMalformed         = "malformed_certificate"
	CodeBadName           = "bad_name"
	CodeWeakKey           = "weak_key"
	CodeUnsupportedKey    = "unsupported_key"
	CodeCriticalExtension = "unknown_critical_extension"
	CodeExpired           = "expired"
	CodeNotYetValid       = "not_yet_valid"
	CodeKeyUsage          = "wrong_key_usage"
	CodeUnknownAuthority  = "unknown_authority"
	CodeChainTooLong      = "chain_too_long"
	CodeNotCA             = "not_a_ca"
	CodeNoID              = "no_device_id"
	CodeSeveralIDs        = "several_device_ids"
	CodeBadIDField        = "bad_id_field"
	CodeBadFingerprint    = "bad_fingerprint"
)

// Error is a refused certificate: Code says which rule it broke, Message says it in words a user
// can act on (the HTTP layer shows it in a 422, naming the entry). Err is the cause from
// crypto/x509 where there is one, for the log.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }

// Unwrap gives the crypto/x509 error behind e, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &devcert.Error{Code: c}) true for any refusal with code c.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Code returns the code of a devcert refusal, or "" for any other error.
func Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func refuse(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ParsePEM reads exactly one certificate: one PEM block of type CERTIFICATE, with nothing but
// whitespace around it, that passes Check.
func ParsePEM(s string) (*x509.Certificate, error) {
	if len(s) > MaxPEMSize {
		return nil, refuse(CodeTooLarge, "certificate is %d bytes; at most %d bytes (16 KiB) are accepted", len(s), MaxPEMSize)
	}
	certs, err := parseBlocks(s, 1)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParsePEMChain reads one to MaxChain certificates in PEM, the device's first, separated by
// nothing but whitespace; each must pass Check. A message about one names its position (1-based).
func ParsePEMChain(s string) ([]*x509.Certificate, error) {
	if len(s) > MaxChainPEMSize {
		return nil, refuse(CodeTooLarge, "certificate chain is %d bytes; at most %d bytes are accepted", len(s), MaxChainPEMSize)
	}
	return parseBlocks(s, MaxChain)
}

// parseBlocks reads up to max PEM certificates from s.
func parseBlocks(s string, max int) ([]*x509.Certificate, error) {
	rest := bytes.TrimSpace([]byte(s))
	if len(rest) == 0 {
		return nil, refuse(CodeNotPEM, "certificate is empty; expected a PEM block starting with -----BEGIN CERTIFICATE-----")
	}
	var certs []*x509.Certificate
	for len(rest) > 0 {
		n := len(certs) + 1
		where := ""
		if max > 1 {
			where = fmt.Sprintf("certificate %d of the chain: ", n)
		}
		// pem.Decode skips any text before a BEGIN line; we do not, so junk in front is refused too.
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			if n == 1 {
				return nil, refuse(CodeNotPEM, "certificate is not PEM; expected a block starting with -----BEGIN CERTIFICATE-----")
			}
			return nil, refuse(CodeTrailingData, "unexpected text after the certificate's END line; only whitespace may follow")
		}
		block, after := pem.Decode(rest)
		if block == nil {
			return nil, refuse(CodeNotPEM, "%scertificate is not valid PEM (no matching END line, or bad base64)", where)
		}
		if block.Type != "CERTIFICATE" {
			msg := fmt.Sprintf("%sPEM block is %q, not CERTIFICATE", where, block.Type)
			if strings.Contains(block.Type, "PRIVATE KEY") {
				msg += "; never send a private key"
			}
			return nil, refuse(CodeWrongBlock, "%s", msg)
		}
		if len(block.Headers) > 0 {
			return nil, refuse(CodeNotPEM, "%sPEM block has headers; a certificate block has none", where)
		}
		if n > max {
			if max == 1 {
				return nil, refuse(CodeSeveral, "several certificates where one is expected")
			}
			return nil, refuse(CodeTooMany, "more than %d certificates in the chain", max)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, &Error{Code: CodeMalformed, Message: fmt.Sprintf("%snot a valid X.509 certificate: %v", where, err), Err: err}
		}
		if err := Check(cert); err != nil {
			err.(*Error).Message = where + err.(*Error).Message
			return nil, err
		}
		certs = append(certs, cert)
		rest = bytes.TrimSpace(after)
	}
	return certs, nil
}

// Check refuses a parsed certificate that devreg does not take from anyone: a key that is weak or
// of an unsupported kind, a critical extension we do not understand, a control character in the
// subject's or issuer's names. ParsePEM and ParsePEMChain call it; call it on certificates that arrive
// parsed already (from a TLS handshake).
func Check(cert *x509.Certificate) error {
	switch k := cert.PublicKey.(type) {
	case *rsa.PublicKey:
		bits := k.N.BitLen()
		if bits < MinRSABits {
			return refuse(CodeWeakKey, "RSA key is %d bits; at least %d are required", bits, MinRSABits)
		}
		if bits > MaxRSABits {
			return refuse(CodeUnsupportedKey, "RSA key is %d bits; at most %d are supported", bits, MaxRSABits)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return refuse(CodeUnsupportedKey, "ECDSA curve %s is not supported; use P-256, P-384 or P-521", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return refuse(CodeUnsupportedKey, "%s keys are not supported; use ECDSA (P-256, P-384, P-521), Ed25519 or RSA of at least %d bits",
			keyKind(cert), MinRSABits)
	}
	if len(cert.UnhandledCriticalExtensions) > 0 {
		oids := make([]string, len(cert.UnhandledCriticalExtensions))
		for i, oid := range cert.UnhandledCriticalExtensions {
			oids[i] = oid.String()
		}
		return refuse(CodeCriticalExtension, "certificate has an unknown critical extension (%s)", strings.Join(oids, ", "))
	}
	for _, n := range []struct {
		what  string
		names []pkix.AttributeTypeAndValue
	}{{"subject", cert.Subject.Names}, {"issuer", cert.Issuer.Names}} {
		for _, atv := range n.names {
			s, ok := atv.Value.(string)
			if !ok {
				continue
			}
			what := n.what + " attribute " + atv.Type.String()
			if atv.Type.Equal(oidCommonName) {
				what = n.what + " common name"
			}
			if err := checkText(what, s); err != nil {
				return err
			}
		}
	}
	return nil
}

func keyKind(cert *x509.Certificate) string {
	if cert.PublicKeyAlgorithm == x509.UnknownPublicKeyAlgorithm {
		return "unknown"
	}
	return cert.PublicKeyAlgorithm.String()
}

// checkText refuses a name with a control character (a NUL lets "dev-1\x00.evil" pass for "dev-1"
// in C code downstream), an invisible formatting character (a right-to-left override or a
// zero-width space makes a name shown in the console or a log read as another), or invalid UTF-8.
func checkText(what, s string) error {
	if !utf8.ValidString(s) {
		return refuse(CodeBadName, "%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return refuse(CodeBadName, "%s contains a control character (%U)", what, r)
		}
		if unicode.Is(unicode.Cf, r) {
			return refuse(CodeBadName, "%s contains an invisible formatting character (%U), such as a text direction override", what, r)
		}
	}
	return nil
}

var oidCommonName = asn1.ObjectIdentifier{2, 5, 4, 3}

// commonNames lists every CN attribute of the subject; pkix.Name.CommonName keeps only the last.
func commonNames(cert *x509.Certificate) []string {
	var cns []string
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(oidCommonName) {
			s, _ := atv.Value.(string)
			cns = append(cns, s)
		}
	}
	return cns
}

// Fingerprint is the certificate's SHA-256 fingerprint: the hash of its DER encoding, as
// `openssl x509 -fingerprint -sha256` prints it and RFC 8705's x5t#S256 encodes it.
func Fingerprint(cert *x509.Certificate) [32]byte { return sha256.Sum256(cert.Raw) }

// FingerprintHex is Fingerprint in lowercase hex, 64 digits: the form devreg stores and shows.
func FingerprintHex(cert *x509.Certificate) string {
	fp := Fingerprint(cert)
	return hex.EncodeToString(fp[:])
}

// X5tS256 is the RFC 8705 §3.1 confirmation value: base64url, unpadded, of Fingerprint.
func X5tS256(cert *x509.Certificate) string {
	fp := Fingerprint(cert)
	return base64.RawURLEncoding.EncodeToString(fp[:])
}

// ParseFingerprint reads a SHA-256 fingerprint written as 64 hex digits, in either case, or as 32
// colon-separated pairs the way openssl prints it (AB:CD:…). Anything else is refused.
func ParseFingerprint(s string) ([32]byte, error) {
	var fp [32]byte
	h := s
	if strings.Contains(s, ":") {
		if len(s) != 32*3-1 {
			return fp, refuse(CodeBadFingerprint, "SHA-256 fingerprint with colons must be 32 pairs of hex digits (95 characters), not %d characters", len(s))
		}
		var b strings.Builder
		for i := 0; i < len(s); i += 3 {
			if i+2 < len(s) && s[i+2] != ':' {
				return fp, refuse(CodeBadFingerprint, "SHA-256 fingerprint: expected ':' at character %d", i+3)
			}
			b.WriteString(s[i : i+2])
		}
		h = b.String()
	} else if len(s) != 64 {
		return fp, refuse(CodeBadFingerprint, "SHA-256 fingerprint must be 64 hex digits, not %d characters", len(s))
	}
	if _, err := hex.Decode(fp[:], []byte(h)); err != nil {
		return fp, refuse(CodeBadFingerprint, "SHA-256 fingerprint has a character that is not a hex digit")
	}
	return fp, nil
}

// IDField says where a device type reads the device ID from in a device's certificate.
type IDField string

// The places a device ID may come from.
const (
	SubjectCN IDField = "subject_cn" // the subject's common name (the default)
	SANURI    IDField = "san_uri"    // the one URI subject alternative name
	SANDNS    IDField = "san_dns"    // the one DNS subject alternative name
)

// IDFields lists the valid values of IDField, the default first.
var IDFields = []IDField{SubjectCN, SANURI, SANDNS}

// ParseIDField reads an IDField; the empty string is the default, SubjectCN.
func ParseIDField(s string) (IDField, error) {
	switch f := IDField(s); f {
	case "":
		return SubjectCN, nil
	case SubjectCN, SANURI, SANDNS:
		return f, nil
	}
	return "", refuse(CodeBadIDField, "certificate ID field %q is not one of subject_cn, san_uri, san_dns", s)
}

// DeviceID reads the device ID from the certificate's field: there must be exactly one value
// there, free of control characters.
func DeviceID(cert *x509.Certificate, field IDField) (string, error) {
	var vals []string
	var what string
	switch field {
	case SubjectCN, "":
		vals, what = commonNames(cert), "subject common name"
	case SANURI:
		what = "URI subject alternative name"
		for _, u := range cert.URIs {
			vals = append(vals, u.String())
		}
	case SANDNS:
		vals, what = cert.DNSNames, "DNS subject alternative name"
	default:
		_, err := ParseIDField(string(field))
		return "", err
	}
	switch {
	case len(vals) == 0 || len(vals) == 1 && vals[0] == "":
		return "", refuse(CodeNoID, "certificate has no %s to read the device ID from", what)
	case len(vals) > 1:
		return "", refuse(CodeSeveralIDs, "certificate has %d values of %s; the device ID must be exactly one", len(vals), what)
	}
	if err := checkText(what, vals[0]); err != nil {
		return "", err
	}
	return vals[0], nil
}

// CheckClient refuses a certificate no device may log in with, whoever vouches for it or pins
// it: one Check refuses, a CA certificate, a key usage without digitalSignature (TLS client
// authentication signs the handshake), an extended key usage that names usages but not client
// authentication. A certificate without extended key usage counts as fit for any (RFC 5280
// §4.2.1.12), as crypto/x509 has it.
func CheckClient(cert *x509.Certificate) error {
	if err := Check(cert); err != nil {
		return err
	}
	if cert.IsCA {
		return refuse(CodeKeyUsage, "device certificate is a CA certificate")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return refuse(CodeKeyUsage, "device certificate's key usage does not allow digital signatures (needed for TLS client authentication)")
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		if !slices.ContainsFunc(cert.ExtKeyUsage, func(u x509.ExtKeyUsage) bool { return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny }) {
			return refuse(CodeKeyUsage, "device certificate's extended key usage does not allow TLS client authentication")
		}
	}
	return nil
}

// VerifyDevice checks that a device's certificate is valid at now, passes CheckClient
// and chains to one of cas, through at most MaxIntermediates of intermediates. The error's code
// tells expired, not yet valid, wrong key usage, unknown authority and a chain too long apart, for
// the log; a device is told only that it was refused.
func VerifyDevice(cert *x509.Certificate, intermediates, cas []*x509.Certificate, now time.Time) error {
	if len(intermediates) > MaxIntermediates {
		return refuse(CodeChainTooLong, "%d intermediate certificates; at most %d are accepted", len(intermediates), MaxIntermediates)
	}
	if err := validAt(cert, now, "device certificate"); err != nil {
		return err
	}
	if err := CheckClient(cert); err != nil {
		return err
	}
	if len(cas) == 0 {
		return refuse(CodeUnknownAuthority, "device type has no trusted CA")
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		// A certificate without extended key usage counts as fit for any (RFC 5280 §4.2.1.12);
		// crypto/x509 agrees, so only certificates that name other usages are refused.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, ca := range cas {
		opts.Roots.AddCert(ca)
	}
	for _, c := range intermediates {
		opts.Intermediates.AddCert(c)
	}
	chains, err := cert.Verify(opts)
	if err != nil {
		return verifyError(err)
	}
	// The bound on intermediates above bounds what may be offered; this bounds what was used.
	for _, ch := range chains {
		if len(ch) <= MaxIntermediates+2 {
			return nil
		}
	}
	return refuse(CodeChainTooLong, "certificate chain is longer than %d intermediates", MaxIntermediates)
}

func validAt(cert *x509.Certificate, now time.Time, what string) error {
	if now.Before(cert.NotBefore) {
		return refuse(CodeNotYetValid, "%s is not valid before %s", what, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return refuse(CodeExpired, "%s expired at %s", what, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// verifyError turns a crypto/x509 verification error into a refusal with a code.
func verifyError(err error) error {
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	var uce x509.UnhandledCriticalExtension
	switch {
	case errors.As(err, &inv):
		switch inv.Reason {
		case x509.Expired:
			return &Error{Code: CodeExpired, Message: "a certificate in the chain is expired or not yet valid: " + inv.Detail, Err: err}
		case x509.IncompatibleUsage:
			return &Error{Code: CodeKeyUsage, Message: "certificate chain does not allow TLS client authentication (extended key usage)", Err: err}
		case x509.TooManyIntermediates:
			return &Error{Code: CodeChainTooLong, Message: "certificate chain is too long", Err: err}
		case x509.NotAuthorizedToSign:
			return &Error{Code: CodeUnknownAuthority, Message: "a certificate in the chain is not a CA", Err: err}
		}
	case errors.As(err, &ua):
		return &Error{Code: CodeUnknownAuthority, Message: "certificate does not chain to a trusted CA of the device type", Err: err}
	case errors.As(err, &uce):
		return &Error{Code: CodeCriticalExtension, Message: "a certificate in the chain has an unknown critical extension", Err: err}
	}
	return &Error{Code: CodeUnknownAuthority, Message: "certificate chain does not verify: " + err.Error(), Err: err}
}

// ValidateCA checks a certificate given to a device type as trusted CA: Check's rules, a CA
// (basic constraints CA:TRUE, and key usage allowing certificate signing where key usage is set),
// valid at now.
func ValidateCA(cert *x509.Certificate, now time.Time) error {
	if err := Check(cert); err != nil {
		return err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return refuse(CodeNotCA, "certificate is not a CA certificate (basic constraints lack CA:TRUE)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return refuse(CodeNotCA, "CA certificate's key usage does not allow signing certificates (keyCertSign)")
	}
	return validAt(cert, now, "CA certificate")
}
