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

// LoadOrCreateKeyring reads the secret-hashing key file at path, creating it with one new
// random key (mode 0600) when it does not exist. To rotate, append a line: the last key is current.
func LoadOrCreateKeyring(path string) (*Keyring, error) {
	lines, err := LoadOrCreateKeyFile(path, "secret key file",
		"# devreg secret-hashing keys: ID:base64url-key, oldest first; the last one is current.\n"+
			"# Back this file up apart from the database and keep it secret: without it no device can authenticate.\n", NewKeyLine)
	if err != nil {
		return nil, err
	}
	keys := make([]Key, len(lines))
	for i, l := range lines {
		keys[i] = Key{ID: l.ID, Secret: l.Key}
	}
	r, err := NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("secret key file %s: %w", path, err)
	}
	return r, nil
}

// NewKeyLine returns a line for the secret key file holding a new random key.
func NewKeyLine() string {
	return RandomID("k", 8) + ":" + base64.RawURLEncoding.EncodeToString(randomBytes(32))
}

// KeyFileLine is one key of a key file.
type KeyFileLine struct {
	ID  string
	Key []byte
}

// LoadOrCreateKeyFile reads a file of server keys, one a line as "ID:base64url-key", oldest
// first; empty lines and lines starting with '#' are ignored. A missing file is created (mode
// 0600, its directory 0700) with header and one line from newLine. A file that others may read is
// refused. what names the file in errors.
func LoadOrCreateKeyFile(path, what, header string, newLine func() string) ([]KeyFileLine, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKeyFile(path, header+newLine()+"\n"); err != nil {
			return nil, fmt.Errorf("create %s: %w", what, err)
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is readable by others (mode %v); run: chmod 600 %s", what, path, fi.Mode().Perm(), path)
	}
	var keys []KeyFileLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		id, enc, ok := strings.Cut(text, ":")
		key, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
		if !ok || id == "" || err != nil {
			return nil, fmt.Errorf("%s %s, line %d: want ID:base64url-key", what, path, line)
		}
		keys = append(keys, KeyFileLine{ID: id, Key: key})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s %s holds no key", what, path)
	}
	return keys, nil
}

func createKeyFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // another process made it first
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
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
