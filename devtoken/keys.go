// Package devtoken makes and checks device tokens: JWTs signed with the server's signing keys
// (Ed25519), the key file they live in, and the JWKS that publishes them. The device endpoints
// issue tokens; the broker endpoints and introspection accept them.
package devtoken

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"devreg/credential"
)

// The signing algorithms: Ed25519 by default, P-256 for the brokers that verify tokens against a
// JWKS and take only ES256.
const (
	EdDSA = "EdDSA"
	ES256 = "ES256"
)

// SigningKey is one key for device tokens: an Ed25519 or a P-256 private key.
type SigningKey struct {
	ID  string
	Alg string        // EdDSA or ES256
	Key crypto.Signer // ed25519.PrivateKey or *ecdsa.PrivateKey
}

// SigningKeys holds the token signing keys: the last signs new tokens; all of them verify tokens
// and are published in the JWKS, so tokens signed before a rotation stay valid until they expire.
type SigningKeys struct {
	keys     []SigningKey
	verified verifiedTokens
}

// NewSigningKeys returns a key set of keys, the last one current.
func NewSigningKeys(keys ...SigningKey) (*SigningKeys, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing keys")
	}
	return &SigningKeys{keys: keys}, nil
}

// Current returns the key that signs new tokens.
func (k *SigningKeys) Current() SigningKey { return k.keys[len(k.keys)-1] }

// Lookup returns the key with the given ID.
func (k *SigningKeys) Lookup(id string) (SigningKey, bool) {
	for _, key := range k.keys {
		if key.ID == id {
			return key, true
		}
	}
	return SigningKey{}, false
}

// LoadOrCreateSigningKeys reads the signing key file at path, creating it (mode 0600) with one new
// key of alg when it does not exist. Each line is "ID:base64url-key", oldest first: a 32-byte
// Ed25519 seed, or a P-256 key in PKCS #8. The last key signs; to rotate, append a line. When the
// last key is not of alg, a new key of alg is appended, a rotation like any other: the JWKS
// lists every key of the file, so tokens signed before still verify.
func LoadOrCreateSigningKeys(path, alg string) (*SigningKeys, error) {
	if alg == "" {
		alg = EdDSA
	}
	if alg != EdDSA && alg != ES256 {
		return nil, fmt.Errorf("signing algorithm %q: want EdDSA or ES256", alg)
	}
	header := "# devreg device-token signing keys: ID:base64url-key (an Ed25519 seed or a PKCS #8 P-256 key), oldest first;\n" +
		"# the last one signs. Every server must have the same file. Keep it secret.\n"
	newLine := func() string { return NewKeyLine(alg) }
	lines, err := credential.LoadOrCreateKeyFile(path, "signing key file", header, newLine)
	if err != nil {
		return nil, err
	}
	keys := make([]SigningKey, len(lines))
	for i, l := range lines {
		if keys[i], err = parseKey(l.ID, l.Key); err != nil {
			return nil, fmt.Errorf("signing key file %s: %w", path, err)
		}
	}
	if keys[len(keys)-1].Alg != alg {
		line := newLine()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("add a %s key to the signing key file: %w", alg, err)
		}
		_, err = fmt.Fprintln(f, line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("add a %s key to the signing key file: %w", alg, err)
		}
		id, enc, _ := strings.Cut(line, ":")
		raw, _ := base64.RawURLEncoding.DecodeString(enc)
		k, err := parseKey(id, raw)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return NewSigningKeys(keys...)
}

// parseKey reads one key of the signing key file.
func parseKey(id string, raw []byte) (SigningKey, error) {
	if len(raw) == ed25519.SeedSize {
		return SigningKey{ID: id, Alg: EdDSA, Key: ed25519.NewKeyFromSeed(raw)}, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	if ec, ok := k.(*ecdsa.PrivateKey); err == nil && ok && ec.Curve == elliptic.P256() {
		return SigningKey{ID: id, Alg: ES256, Key: ec}, nil
	}
	return SigningKey{}, fmt.Errorf("key %s is neither a 32-byte Ed25519 seed nor a PKCS #8 P-256 key", id)
}

// NewKeyLine returns a line for the signing key file holding a new key for alg (EdDSA or ES256).
func NewKeyLine(alg string) string {
	var raw []byte
	if alg == ES256 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		if raw, err = x509.MarshalPKCS8PrivateKey(k); err != nil {
			panic(err)
		}
	} else {
		raw = make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(raw); err != nil {
			panic(err)
		}
	}
	return credential.RandomID("sig", 8) + ":" + base64.RawURLEncoding.EncodeToString(raw)
}
