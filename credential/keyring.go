package credential

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// HashSize is the length of a secret hash.
const HashSize = sha256.Size

// Key is one server key for hashing secrets.
type Key struct {
	ID     string
	Secret []byte
}

// Keyring holds the server keys for secret hashing. The last key is the current one: new hashes use
// it. Older keys remain so that hashes made under them can still be checked, and moved on.
type Keyring struct {
	keys []Key
}

// NewKeyring returns a keyring of the given keys, the last one current.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring has no keys")
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if k.ID == "" || strings.ContainsAny(k.ID, ": \t") || seen[k.ID] {
			return nil, fmt.Errorf("key ID %q is empty, repeated or contains ':' or spaces", k.ID)
		}
		if len(k.Secret) < 32 {
			return nil, fmt.Errorf("key %q has %d bytes; at least 32 are needed", k.ID, len(k.Secret))
		}
		seen[k.ID] = true
	}
	return &Keyring{keys: keys}, nil
}

// Current returns the key new hashes are made with.
func (r *Keyring) Current() Key { return r.keys[len(r.keys)-1] }

// Keys returns every key, oldest first.
func (r *Keyring) Keys() []Key { return r.keys }

// Lookup returns the key with the given ID.
func (r *Keyring) Lookup(id string) (Key, bool) {
	for _, k := range r.keys {
		if k.ID == id {
			return k, true
		}
	}
	return Key{}, false
}

// Hash returns the keyed hash of a device secret under key k. The account ID and device ID are part
// of the input, length-prefixed, so a hash cannot be moved to another row and equal secrets do not show.
func Hash(k Key, accountID, deviceID, secret string) []byte {
	return NewHasher(k).Append(nil, accountID, deviceID, secret)
}

// Verify reports, in constant time, whether secret matches hash made under the key keyID.
func (r *Keyring) Verify(keyID string, hash []byte, accountID, deviceID, secret string) bool {
	k, ok := r.Lookup(keyID)
	if !ok {
		k = r.Current() // same work for an unknown key, and no match
		hash = nil
	}
	return subtle.ConstantTimeCompare(Hash(k, accountID, deviceID, secret), hash) == 1
}

// LoadOrCreateKeyring reads the key file at path, creating it with one new random key (mode 0600)
// when it does not exist. The file holds one key a line, "ID:base64url-key", oldest first; lines
// that are empty or start with '#' are ignored. To rotate, append a line: the last key is current.
func LoadOrCreateKeyring(path string) (*Keyring, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := writeNewKeyFile(path); err != nil {
			return nil, err
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret key file %s is readable by others (mode %v); run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	var keys []Key
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		id, enc, ok := strings.Cut(text, ":")
		secret, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
		if !ok || err != nil {
			return nil, fmt.Errorf("secret key file %s, line %d: want ID:base64url-key", path, line)
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	r, err := NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return r, nil
}

// NewKeyLine returns a line for the key file holding a new random key.
func NewKeyLine() string {
	return RandomID("k", 8) + ":" + base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

func writeNewKeyFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // another process made it first
	}
	if err != nil {
		return fmt.Errorf("create secret key file: %w", err)
	}
	content := "# devreg secret-hashing keys: ID:base64url-key, oldest first; the last one is current.\n" +
		"# Back this file up apart from the database and keep it secret: without it no device can authenticate.\n" +
		NewKeyLine() + "\n"
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}

// Hasher makes keyed hashes of device secrets under one key, reusing its state between hashes,
// which a registration of a million devices notices. A Hasher is not safe for concurrent use.
type Hasher struct {
	mac hash.Hash
	n   [4]byte
}

// NewHasher returns a Hasher for key k.
func NewHasher(k Key) *Hasher { return &Hasher{mac: hmac.New(sha256.New, k.Secret)} }

// Append appends the hash that Hash would return to dst.
func (h *Hasher) Append(dst []byte, accountID, deviceID, secret string) []byte {
	h.mac.Reset()
	for _, s := range []string{accountID, deviceID} {
		binary.BigEndian.PutUint32(h.n[:], uint32(len(s)))
		h.mac.Write(h.n[:])
		io.WriteString(h.mac, s)
	}
	io.WriteString(h.mac, secret)
	return h.mac.Sum(dst)
}
