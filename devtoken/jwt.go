package devtoken

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// Claims are what a device token says.
type Claims struct {
	Issuer       string `json:"iss"`
	Subject      string `json:"sub"` // the device ID
	AccountID    string `json:"account_id"`
	DeviceTypeID string `json:"device_type_id"`
	Audience     string `json:"aud,omitempty"`
	IssuedAt     int64  `json:"iat"`
	Expires      int64  `json:"exp"`
	ID           string `json:"jti"`
	// Cred is the ID of the device's credential the token was issued for, so that a token ends
	// when that credential is disabled, deleted or expired (and when the device is registered
	// again, which replaces its credentials).
	Cred string `json:"cred,omitempty"`
	// Cnf binds the token to the certificate the device authenticated with (RFC 8705 §3.1);
	// nil for a token issued for a secret.
	Cnf *Confirmation `json:"cnf,omitempty"`
}

// Confirmation is a token's confirmation claim (RFC 7800): the certificate it is bound to.
type Confirmation struct {
	// X5tS256 is the certificate's SHA-256 thumbprint, base64url without padding, of its DER
	// encoding (RFC 8705 §3.1; devcert.X5tS256).
	X5tS256 string `json:"x5t#S256"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// Sign returns a compact JWS (a JWT) of claims signed with key, EdDSA or ES256 as the key is.
func Sign(key SigningKey, c Claims) (string, error) {
	h, err := json.Marshal(header{Alg: key.Alg, Typ: "JWT", Kid: key.ID})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	var sig []byte
	switch k := key.Key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(signing))
	case *ecdsa.PrivateKey:
		// JWS (RFC 7518 §3.4) wants R and S as two 32-byte big-endian numbers, not ASN.1.
		digest := sha256.Sum256([]byte(signing))
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			return "", err
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	default:
		return "", fmt.Errorf("signing key %s: unknown kind %T", key.ID, key.Key)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

var errInvalidToken = errors.New("invalid token")

// Verify checks a token's signature against keys and its expiry and issuer, and returns its claims.
// A token whose signature verified is remembered (verifiedTokens): presented again, as a device
// does at each broker login and check-in, it costs a SHA-256 instead of a signature check.
func (k *SigningKeys) Verify(token, issuer string, now time.Time) (Claims, error) {
	sum := sha256.Sum256([]byte(token))
	c, ok := k.verified.get(sum)
	if !ok {
		var err error
		if c, err = k.verifySignature(token); err != nil {
			return c, err
		}
		k.verified.put(sum, c)
	}
	if c.Issuer != issuer || c.Subject == "" || c.AccountID == "" || now.Unix() >= c.Expires {
		return Claims{}, errInvalidToken
	}
	return c, nil
}

// verifySignature checks a token's signature against keys and returns its claims.
func (k *SigningKeys) verifySignature(token string) (Claims, error) {
	var c Claims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, errInvalidToken
	}
	hb, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	pb, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return c, errInvalidToken
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return c, errInvalidToken
	}
	// The key decides the algorithm; a header that names another is refused.
	key, ok := k.Lookup(h.Kid)
	if !ok || h.Alg != key.Alg || !verify(key, []byte(parts[0]+"."+parts[1]), sig) {
		return c, errInvalidToken
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return Claims{}, errInvalidToken
	}
	return c, nil
}

// maxVerifiedTokens bounds the tokens remembered: past it, verifiedTokens starts afresh.
const maxVerifiedTokens = 10_000

// verifiedTokens are the claims of tokens whose signature verified, by the SHA-256 of the whole
// token. Only a token signed by one of the keys gets in, and the keys never change while the
// process runs, so an entry stays true; expiry and issuer are checked at every use.
type verifiedTokens struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]Claims
}

func (v *verifiedTokens) get(sum [sha256.Size]byte) (Claims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[sum]
	return c, ok
}

func (v *verifiedTokens) put(sum [sha256.Size]byte, c Claims) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxVerifiedTokens {
		v.m = map[[sha256.Size]byte]Claims{}
	}
	v.m[sum] = c
}

func verify(key SigningKey, signed, sig []byte) bool {
	switch pub := key.Key.Public().(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(pub, signed, sig)
	case *ecdsa.PublicKey:
		if len(sig) != 64 {
			return false
		}
		digest := sha256.Sum256(signed)
		return ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	default:
		return false
	}
}

// JWKS returns the public keys as a JSON Web Key Set (RFC 7517): OKP keys of RFC 8037 for
// Ed25519, EC keys for P-256.
func (k *SigningKeys) JWKS() map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	keys := []map[string]string{}
	for _, key := range k.keys {
		switch pub := key.Key.Public().(type) {
		case ed25519.PublicKey:
			keys = append(keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": EdDSA, "kid": key.ID, "x": b64(pub)})
		case *ecdsa.PublicKey:
			point, err := pub.Bytes() // 0x04, X, Y
			if err != nil || len(point) != 65 {
				continue
			}
			keys = append(keys, map[string]string{"kty": "EC", "crv": "P-256", "use": "sig", "alg": ES256, "kid": key.ID, "x": b64(point[1:33]), "y": b64(point[33:])})
		}
	}
	return map[string]any{"keys": keys}
}
