package credential

import (
	"crypto/sha256"
	"strings"
)

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// RandomString returns n characters drawn uniformly from letters and digits by crypto/rand.
func RandomString(n int) string {
	var sb strings.Builder
	sb.Grow(n)
	for sb.Len() < n {
		for _, b := range randomBytes(n) {
			if b < 248 && sb.Len() < n { // 248 = 4*62: no modulo bias
				sb.WriteByte(alphabet[int(b)%62])
			}
		}
	}
	return sb.String()
}

// RandomID returns an opaque identifier: a prefix, '_' and n random letters and digits.
func RandomID(prefix string, n int) string {
	return prefix + "_" + RandomString(n)
}

// NewAPIKey returns a new random API key and the hash devreg stores of it. The key has 190 bits of
// entropy, so a fast unsalted hash is enough to make the stored form useless to a thief.
func NewAPIKey() (key string, hash []byte) {
	key = "drk_" + RandomString(32)
	return key, HashAPIKey(key)
}

// HashAPIKey returns the stored form of an API key.
func HashAPIKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}
