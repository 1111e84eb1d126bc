package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// sealInfo names the purpose of the key Seal derives from a server key, so that it is never the
// key that hashes secrets.
const sealInfo = "devreg enrollment group key v1"

// Seal encrypts plaintext with AES-256-GCM under a key derived from server key k (HKDF-SHA-256),
// bound to additionalData, which the caller must give Open again: the enrollment groups bind
// the account, group and key IDs, so that a sealed key cannot be moved to another group. The
// random nonce comes first.
func Seal(k Key, plaintext, additionalData []byte) []byte {
	aead := sealer(k)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plaintext, additionalData)
}

// Open decrypts what Seal sealed under the server key keyID of the keyring, which may be an
// older key than the current one.
func (r *Keyring) Open(keyID string, sealed, additionalData []byte) ([]byte, error) {
	k, ok := r.Lookup(keyID)
	if !ok {
		return nil, fmt.Errorf("sealed with server key %q, which the secret key file no longer holds", keyID)
	}
	aead := sealer(k)
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealed value is too short")
	}
	out, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], additionalData)
	if err != nil {
		return nil, fmt.Errorf("sealed value does not open with server key %q: altered, or moved from elsewhere", keyID)
	}
	return out, nil
}

func sealer(k Key) cipher.AEAD {
	key, err := hkdf.Key(sha256.New, k.Secret, nil, sealInfo, 32)
	if err != nil {
		panic(err) // 32 bytes of SHA-256 output cannot fail
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}
