// Package semanifest reads a chip vendor's signed manifest of secure elements — Microchip's
// Trust&GO manifest, a JSON array of JWS objects, one per chip — checks each entry's
// signature against the manifest signer certificate the caller trusts, and yields each chip's
// unique ID and device certificate, so that a device type can register every part it names.
//
// The format, as Microchip's own tools and AWS's thingpress read it: every element of the array is a
// JWS in flattened JSON serialization (RFC 7515 §7.2.2),
//
//	{"payload": b64url, "protected": b64url, "header": {"uniqueId": "0123…01"}, "signature": b64url}
//
// whose protected header is {"alg": "ES256", "kid": b64url(signer's subject key identifier),
// "x5t#S256": b64url(SHA-256 of the signer certificate's DER)} and whose payload is a JSON object
// with the chip's "uniqueId" (its 9-byte serial number in lower-case hex) and a "publicKeySet" JWK
// set whose key for slot 0 carries the device certificate and its signer CA in "x5c". The signature
// is ES256 over ASCII(protected) "." ASCII(payload), as R||S of 32 bytes each. The unprotected
// "header" is not signed, so its uniqueId is only checked against the signed one.
package semanifest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"

	"devreg"
)

// ContentType is the media type a registration request names to send a Microchip manifest. We found
// none registered or documented (Microchip ships manifests as .json files); this one follows
// RFC 6838's vendor tree and ends in +json because the body is JSON.
const ContentType = "application/vnd.microchip.manifest+json"

// Limits bound what one manifest may cost. A zero field takes its default.
type Limits struct {
	MaxBytes      int64 // the whole manifest; default 1 GiB (a 100,000-part manifest is about 390 MB)
	MaxEntries    int   // elements of the array; default 1,000,000
	MaxEntryBytes int64 // one element, and the blanks before it; default 64 KiB (a real one is about 3.9 KB)
	MaxDepth      int   // nesting of an element and of its payload; default 16 (a real one nests 5 deep)
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = 1 << 30
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1_000_000
	}
	if l.MaxEntryBytes <= 0 {
		l.MaxEntryBytes = 64 << 10
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 16
	}
	return l
}

// Entry is one secure element of a manifest. An entry whose Problem is not empty was refused and
// carries what could be read of it (its DeviceID, when the payload named one).
type Entry struct {
	Index       int    // 0-based position in the manifest's array
	Offset      int64  // byte offset in the manifest where the element, or the comma before it, starts
	DeviceID    string // the signed payload's uniqueId: the chip's serial number in hex
	PartNumber  string // e.g. "ATECC608C-TNGTLSU-B"
	Certificate *x509.Certificate
	Chain       []*x509.Certificate // the rest of the x5c: the CA that signed Certificate, and on
	Problem     string
}

// Reader yields the entries of a manifest one at a time, so that a manifest of a million parts is
// never held in memory; it remembers only the unique IDs it has seen, to refuse a repeated one.
type Reader struct {
	dec     *json.Decoder
	in      *boundedReader
	lim     Limits
	signer  signer
	index   int // of the next entry
	cur     int // of the entry being read, for the errors that end a manifest
	started bool
	done    bool
	seen    map[string]int
}

// signer is what an entry's protected header must name and its signature must verify with.
type signer struct {
	key     *ecdsa.PublicKey
	x5tS256 string // base64url of SHA-256 of the certificate's DER
	kid     string // base64url of its subject key identifier; "" when it has none
}

// NewReader returns a Reader of the manifest in r whose entries must be signed by signer, the
// manifest signer certificate the caller trusts (Microchip publishes its "Manifest Signer" ones).
// The signer is trusted as given: its validity window is not checked, because a manifest stays a
// true record of the parts sold after the certificate that signed it has expired.
func NewReader(r io.Reader, signerCert *x509.Certificate, lim Limits) (*Reader, error) {
	if signerCert == nil {
		return nil, devreg.Errorf(devreg.EINVALID, "a manifest signer certificate is required to check a manifest")
	}
	key, ok := signerCert.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, devreg.Errorf(devreg.EINVALID, "manifest signer certificate %q does not hold an ECDSA P-256 key; manifests are signed with ES256",
			signerCert.Subject.String())
	}
	sum := sha256.Sum256(signerCert.Raw)
	s := signer{key: key, x5tS256: base64.RawURLEncoding.EncodeToString(sum[:])}
	if len(signerCert.SubjectKeyId) > 0 {
		s.kid = base64.RawURLEncoding.EncodeToString(signerCert.SubjectKeyId)
	}
	lim = lim.withDefaults()
	in := &boundedReader{r: r, total: lim.MaxBytes, limit: lim.MaxEntryBytes}
	dec := json.NewDecoder(in)
	return &Reader{dec: dec, in: in, lim: lim, signer: s, seen: map[string]int{}}, nil
}

// Parse reads the whole manifest in r and returns its entries when every one is good. Otherwise it
// returns a *devreg.Error: EINVALIDROWS listing every bad entry by position, or, for a manifest
// that cannot be read to its end (not JSON, too large), the one reason.
func Parse(r io.Reader, signerCert *x509.Certificate, lim Limits) ([]Entry, error) {
	mr, err := NewReader(r, signerCert, lim)
	if err != nil {
		return nil, err
	}
	var entries []Entry
	var problems devreg.ProblemList
	for {
		e, err := mr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if e.Problem != "" {
			problems.Add(devreg.Problem{Index: e.Index, DeviceID: e.DeviceID, Message: e.Problem})
			continue
		}
		entries = append(entries, e)
	}
	if problems.Count > 0 {
		return nil, problems.Error(devreg.EINVALIDROWS, fmt.Sprintf("%d of %d manifest entries are refused, so the manifest is refused whole", problems.Count, mr.index))
	}
	if len(entries) == 0 {
		return nil, devreg.Errorf(devreg.EINVALID, "the manifest is an empty array")
	}
	return entries, nil
}

// Next returns the next entry, io.EOF after the last one, or an error that ends the manifest: not a
// JSON array, an element or the whole over its limit, data after the array.
func (r *Reader) Next() (Entry, error) {
	if r.done {
		return Entry{}, io.EOF
	}
	if !r.started {
		r.started = true
		tok, err := r.dec.Token()
		if err != nil {
			return Entry{}, r.fatal(err)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return Entry{}, devreg.Errorf(devreg.EBADREQUEST, "the manifest is not a JSON array of signed secure elements")
		}
	}
	r.cur = r.index
	r.in.allow(r.dec.InputOffset(), r.lim.MaxEntryBytes)
	if !r.dec.More() {
		return Entry{}, r.end()
	}
	if r.index == r.lim.MaxEntries {
		return Entry{}, devreg.Errorf(devreg.ETOOLARGE, "the manifest has more than %d entries; split it", r.lim.MaxEntries)
	}
	e := Entry{Index: r.index, Offset: r.dec.InputOffset()}
	r.index++
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		return Entry{}, r.fatal(err)
	}
	e.Problem = r.read(raw, &e)
	if e.Problem == "" && e.DeviceID != "" {
		if first, dup := r.seen[e.DeviceID]; dup {
			e.Problem = fmt.Sprintf("uniqueId %s is also the uniqueId of entry %d", devreg.ProblemList{}.Clip(e.DeviceID), first)
		} else {
			r.seen[e.DeviceID] = e.Index
		}
	}
	if e.Problem != "" {
		e.Certificate, e.Chain = nil, nil
	}
	return e, nil
}

// end reads the closing bracket and checks nothing follows it.
func (r *Reader) end() error {
	if _, err := r.dec.Token(); err != nil {
		return r.fatal(err)
	}
	r.done = true
	if _, err := r.dec.Token(); err != io.EOF {
		if err != nil {
			return r.fatal(err)
		}
		return devreg.Errorf(devreg.EBADREQUEST, "the manifest has data after its closing bracket, at byte offset %d", r.dec.InputOffset())
	}
	return io.EOF
}

// fatal words an error that stops the reading of a manifest.
func (r *Reader) fatal(err error) error {
	var syn *json.SyntaxError
	var de *devreg.Error
	switch {
	case errors.As(err, &de):
		return de
	case errors.Is(err, errEntryTooLong):
		return devreg.Errorf(devreg.EBADREQUEST, "the manifest is refused: entry %d, near byte offset %d, is longer than %d KiB (a real one is about 4 KiB)",
			r.cur, r.in.from, r.lim.MaxEntryBytes>>10)
	case errors.Is(err, errTooLarge):
		return devreg.Errorf(devreg.ETOOLARGE, "the manifest is larger than %d MiB", r.lim.MaxBytes>>20)
	case errors.As(err, &syn):
		return devreg.Errorf(devreg.EBADREQUEST, "the manifest is not valid JSON: %s at byte offset %d (entry %d)", syn.Error(), syn.Offset, r.cur)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return devreg.Errorf(devreg.EBADREQUEST, "the manifest ends before its closing bracket (entry %d is cut short or missing); was it truncated?", r.cur)
	default:
		return &devreg.Error{Code: devreg.EBADREQUEST, Message: "the manifest could not be read", Err: err}
	}
}

// signedSE is one element of the array: a JWS in flattened JSON serialization.
type signedSE struct {
	Protected *string `json:"protected"`
	Payload   *string `json:"payload"`
	Signature *string `json:"signature"`
	Header    struct {
		UniqueID string `json:"uniqueId"`
	} `json:"header"`
	Signatures json.RawMessage `json:"signatures"`
}

type protectedHeader struct {
	Alg     string          `json:"alg"`
	Kid     *string         `json:"kid"`
	X5tS256 *string         `json:"x5t#S256"`
	Crit    json.RawMessage `json:"crit"`
}

type sePayload struct {
	UniqueID     string `json:"uniqueId"`
	PartNumber   string `json:"partNumber"`
	PublicKeySet struct {
		Keys []jwk `json:"keys"`
	} `json:"publicKeySet"`
}

type jwk struct {
	Kid string   `json:"kid"`
	Kty string   `json:"kty"`
	Crv string   `json:"crv"`
	X   string   `json:"x"`
	Y   string   `json:"y"`
	X5c []string `json:"x5c"`
}

// read checks one element and fills e; it returns why the element is refused, or "".
func (r *Reader) read(raw []byte, e *Entry) string {
	if depth(raw) > r.lim.MaxDepth {
		return fmt.Sprintf("malformed entry: nested more than %d deep", r.lim.MaxDepth)
	}
	var se signedSE
	if err := json.Unmarshal(raw, &se); err != nil {
		return "malformed JWS: " + jsonProblem(err, "a JSON object with protected, payload and signature")
	}
	e.DeviceID = se.Header.UniqueID
	if se.Signatures != nil {
		return "malformed JWS: general serialization with \"signatures\" is not a Microchip manifest entry, which has one signature in flattened form"
	}
	if se.Protected == nil || se.Payload == nil || se.Signature == nil {
		return "malformed JWS: protected, payload and signature are each required"
	}
	if p := r.verify(*se.Protected, *se.Payload, *se.Signature); p != "" {
		return p
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(*se.Payload)
	if err != nil {
		return "malformed JWS: payload is not base64url"
	}
	if depth(payload) > r.lim.MaxDepth {
		return fmt.Sprintf("malformed payload: nested more than %d deep", r.lim.MaxDepth)
	}
	var p sePayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return "malformed payload: " + jsonProblem(err, "a JSON object")
	}
	if p.UniqueID == "" {
		return "payload has no uniqueId"
	}
	if se.Header.UniqueID != "" && se.Header.UniqueID != p.UniqueID {
		return fmt.Sprintf("the unsigned header's uniqueId %s differs from the signed payload's %s",
			devreg.ProblemList{}.Clip(se.Header.UniqueID), devreg.ProblemList{}.Clip(p.UniqueID))
	}
	e.DeviceID, e.PartNumber = p.UniqueID, p.PartNumber
	return readCertificate(p.PublicKeySet.Keys, e)
}

// verify checks the protected header names the signer and the ES256 signature is the signer's.
func (r *Reader) verify(protected, payload, signature string) string {
	hb, err := base64.RawURLEncoding.Strict().DecodeString(protected)
	if err != nil {
		return "malformed JWS: protected header is not base64url"
	}
	var h protectedHeader
	if depth(hb) > r.lim.MaxDepth {
		return "malformed JWS: protected header nested too deep"
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return "malformed JWS: protected header: " + jsonProblem(err, "a JSON object")
	}
	if h.Alg != "ES256" {
		return fmt.Sprintf("malformed JWS: alg %q is not ES256, the algorithm of Microchip's manifest signers", devreg.ProblemList{}.Clip(h.Alg))
	}
	if h.Crit != nil {
		return "malformed JWS: its protected header has critical extensions (crit), which this reader does not implement"
	}
	if h.X5tS256 != nil && *h.X5tS256 != r.signer.x5tS256 {
		return fmt.Sprintf("unknown signer: signed by the certificate with x5t#S256 %s, not by the given signer certificate (%s)",
			devreg.ProblemList{}.Clip(*h.X5tS256), r.signer.x5tS256)
	}
	if h.Kid != nil && r.signer.kid != "" && *h.Kid != r.signer.kid {
		return fmt.Sprintf("unknown signer: signed by the key with kid %s, not by the given signer certificate's (%s)",
			devreg.ProblemList{}.Clip(*h.Kid), r.signer.kid)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(signature)
	if err != nil || len(sig) != 64 {
		return "malformed JWS: signature is not 64 bytes of base64url (ES256 R||S)"
	}
	digest := sha256.Sum256([]byte(protected + "." + payload))
	rr, ss := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(r.signer.key, digest[:], rr, ss) {
		return "bad signature: the entry is not signed by the given manifest signer, or was changed after signing"
	}
	return ""
}

// readCertificate takes the device certificate from the first key of the set that carries an x5c
// (on Trust&GO parts, slot 0's): x5c[0] is the device's, the rest its chain.
func readCertificate(keys []jwk, e *Entry) string {
	for _, k := range keys {
		if len(k.X5c) == 0 {
			continue
		}
		certs := make([]*x509.Certificate, len(k.X5c))
		for i, b64 := range k.X5c {
			der, err := base64.StdEncoding.Strict().DecodeString(b64)
			if err != nil {
				return fmt.Sprintf("key %s: x5c[%d] is not base64", devreg.ProblemList{}.Clip(k.Kid), i)
			}
			if certs[i], err = x509.ParseCertificate(der); err != nil {
				return fmt.Sprintf("key %s: x5c[%d] is not an X.509 certificate: %v", devreg.ProblemList{}.Clip(k.Kid), i, err)
			}
		}
		if p := sameKey(k, certs[0]); p != "" {
			return p
		}
		e.Certificate, e.Chain = certs[0], certs[1:]
		return ""
	}
	return "no certificate: no key of the entry's publicKeySet carries an x5c (a TrustMANAGER manifest lists public keys only; register those parts by secret or by certificate)"
}

// sameKey checks the certificate certifies the key the JWK names, when the JWK gives one.
func sameKey(k jwk, cert *x509.Certificate) string {
	if k.Kty != "EC" || k.X == "" || k.Y == "" {
		return ""
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	x, errX := base64.RawURLEncoding.DecodeString(k.X)
	y, errY := base64.RawURLEncoding.DecodeString(k.Y)
	if !ok || errX != nil || errY != nil || pub.Curve != elliptic.P256() || k.Crv != "P-256" {
		return fmt.Sprintf("key %s: its certificate's key is not the EC P-256 key the entry names", devreg.ProblemList{}.Clip(k.Kid))
	}
	point, err := pub.Bytes() // 0x04 || X || Y, each 32 bytes
	if err != nil || !bytes.Equal(point, append(append([]byte{4}, x...), y...)) {
		return fmt.Sprintf("key %s: its certificate certifies another public key than the entry names", devreg.ProblemList{}.Clip(k.Kid))
	}
	return ""
}

// jsonProblem words an unmarshalling error without echoing the input.
func jsonProblem(err error, want string) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("%s is a JSON %s, not what the format has there", te.Field, te.Value)
		}
		return fmt.Sprintf("a JSON %s, not %s", te.Value, want)
	}
	return "not JSON (" + want + " was expected)"
}

// depth returns how deeply the JSON value in b nests objects and arrays.
func depth(b []byte) int {
	d, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			d++
			deepest = max(deepest, d)
		case c == '}' || c == ']':
			d--
		}
	}
	return deepest
}

var (
	errEntryTooLong = errors.New("manifest entry over its limit")
	errTooLarge     = errors.New("manifest over its limit")
)

// boundedReader hands the JSON decoder no more than the limits allow, so that neither one element
// nor the whole manifest can make the decoder buffer more: the decoder holds what it was given.
type boundedReader struct {
	r     io.Reader
	read  int64 // bytes handed out so far
	total int64 // the whole manifest may be this long
	from  int64 // where the element being read starts
	limit int64 // read may not pass this offset while that element is read
}

// allow lets the decoder read up to n bytes past offset from, where the next element starts.
func (b *boundedReader) allow(from, n int64) { b.from, b.limit = from, from+n }

func (b *boundedReader) Read(p []byte) (int, error) {
	room := min(b.limit, b.total+1) - b.read
	if room <= 0 {
		if b.read > b.total {
			return 0, errTooLarge
		}
		return 0, errEntryTooLong
	}
	if int64(len(p)) > room {
		p = p[:room]
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.read > b.total {
		return n, errTooLarge
	}
	return n, err
}
