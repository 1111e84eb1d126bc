package devtoken

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
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
	// Cred names the registration of the device the token was issued for (its batch ID), so that
	// a token ends when the device is deleted and registered again or replaced.
	Cred string `json:"cred,omitempty"`
}

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// Sign returns a compact JWS (a JWT) of claims signed with key, EdDSA.
func Sign(key SigningKey, c Claims) (string, error) {
	h, err := json.Marshal(header{Alg: "EdDSA", Typ: "JWT", Kid: key.ID})
	if err != nil {
		return "", err
	}
	p, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	signing := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p)
	sig := ed25519.Sign(key.Key, []byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

var errInvalidToken = errors.New("invalid token")

// Verify checks a token's signature against keys and its expiry and issuer, and returns its claims.
func (k *SigningKeys) Verify(token, issuer string, now time.Time) (Claims, error) {
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
	if err := json.Unmarshal(hb, &h); err != nil || h.Alg != "EdDSA" {
		return c, errInvalidToken
	}
	key, ok := k.Lookup(h.Kid)
	if !ok || !ed25519.Verify(key.Key.Public().(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
		return c, errInvalidToken
	}
	if err := json.Unmarshal(pb, &c); err != nil {
		return c, errInvalidToken
	}
	if c.Issuer != issuer || c.Subject == "" || c.AccountID == "" || now.Unix() >= c.Expires {
		return c, errInvalidToken
	}
	return c, nil
}

// JWKS returns the public keys as a JSON Web Key Set (RFC 7517, OKP keys of RFC 8037).
func (k *SigningKeys) JWKS() map[string]any {
	keys := []map[string]string{}
	for _, key := range k.keys {
		keys = append(keys, map[string]string{
			"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": key.ID,
			"x": base64.RawURLEncoding.EncodeToString(key.Key.Public().(ed25519.PublicKey)),
		})
	}
	return map[string]any{"keys": keys}
}
