// Package devtoken makes and checks device tokens: JWTs signed with the server's signing keys
// (Ed25519), the key file they live in, and the JWKS that publishes them. The device endpoints
// issue tokens; the broker endpoints and introspection accept them.
package devtoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"

	"devreg/credential"
)

// SigningKey is one Ed25519 key for device tokens.
type SigningKey struct {
	ID  string
	Key ed25519.PrivateKey
}

// SigningKeys holds the token signing keys: the last signs new tokens; all of them verify tokens
// and are published in the JWKS, so tokens signed before a rotation stay valid until they expire.
type SigningKeys struct {
	keys []SigningKey
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

// LoadOrCreateSigningKeys reads the signing key file at path, creating it with one new key
// (mode 0600) when it does not exist. Each line is "ID:base64url-seed" (an Ed25519 seed of 32
// bytes), oldest first; to rotate, append a line: the last key signs.
func LoadOrCreateSigningKeys(path string) (*SigningKeys, error) {
	lines, err := credential.LoadOrCreateKeyFile(path, "signing key file",
		"# devreg device-token signing keys (Ed25519): ID:base64url-seed, oldest first; the last one signs.\n"+
			"# Every server must have the same file. Keep it secret.\n", NewKeyLine)
	if err != nil {
		return nil, err
	}
	keys := make([]SigningKey, len(lines))
	for i, l := range lines {
		if len(l.Key) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key file %s: key %s is not a 32-byte Ed25519 seed", path, l.ID)
		}
		keys[i] = SigningKey{ID: l.ID, Key: ed25519.NewKeyFromSeed(l.Key)}
	}
	return NewSigningKeys(keys...)
}

// NewKeyLine returns a line for the signing key file holding a new key.
func NewKeyLine() string {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		panic(err)
	}
	return credential.RandomID("sig", 8) + ":" + base64.RawURLEncoding.EncodeToString(seed)
}
