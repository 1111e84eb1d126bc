package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// sealInfo separates the sealing key from every other use of a server key: the same key file
// entry also makes the secret hashes, and an HMAC key must not double as an encryption key.
const sealInfo = "devreg enrollment group key v1"

// SealOverhead is how many bytes Seal adds to its plaintext: a 12-byte nonce before the
// ciphertext and a 16-byte tag after it.
const SealOverhead = 12 + 16

// Seal encrypts plaintext (an enrollment group key) under the server key k, so that it is never
// on disk in clear: AES-256-GCM with a key derived from k.Secret by HKDF-SHA256, and a random
// 12-byte nonce put before the ciphertext. Store k.ID beside the result; Keyring.Open needs it,
// and finds the key by it after the key file has been rotated.
//
// additionalData is not encrypted but must be given again to Open, unchanged. Make it name the
// row the sealed key belongs to, with SealContext(accountID, groupID, groupKeyID): then a sealed
// key copied into another account's or another group's row does not open there.
func Seal(k Key, plaintext, additionalData []byte) []byte {
	// 96-bit random nonces: a server key seals far fewer than the 2^32 messages GCM allows.
	return sealer(k).Seal(nil, nil, plaintext, additionalData)
}

// Open decrypts what Seal sealed under the server key keyID with the same additionalData. It fails
// when the key file no longer holds that key, and when the sealed bytes or the additional data
// were changed in any way.
func (r *Keyring) Open(keyID string, sealed, additionalData []byte) ([]byte, error) {
	k, ok := r.Lookup(keyID)
	if !ok {
		return nil, fmt.Errorf("the data was sealed with server key %q, which the secret key file does not hold", keyID)
	}
	if len(sealed) < SealOverhead {
		return nil, fmt.Errorf("sealed data of %d bytes is too short (at least %d)", len(sealed), SealOverhead)
	}
	plaintext, err := sealer(k).Open(nil, nil, sealed, additionalData)
	if err != nil {
		return nil, fmt.Errorf("sealed data does not open under server key %q: it was changed, or belongs to another row", keyID)
	}
	return plaintext, nil
}

// SealContext returns additional data for Seal and Open naming the row a sealed value belongs to:
// each part length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
func SealContext(parts ...string) []byte {
	var b []byte
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

func sealer(k Key) cipher.AEAD {
	key, err := hkdf.Key(sha256.New, k.Secret, nil, sealInfo, 32)
	if err != nil {
		panic(err) // only for a length beyond 255*32 bytes
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // only for a key that is not 16, 24 or 32 bytes
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		panic(err)
	}
	return aead
}
