package deviceauth

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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
// (mode 0600) when it does not exist. The file holds one key a line, "ID:base64url-seed" (an
// Ed25519 seed of 32 bytes), oldest first; to rotate, append a line: the last key signs.
func LoadOrCreateSigningKeys(path string) (*SigningKeys, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createKeyFile(path); err != nil {
			return nil, err
		}
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read signing key file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key file %s is readable by others (mode %v); run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	var keys []SigningKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		id, enc, ok := strings.Cut(text, ":")
		seed, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
		if !ok || id == "" || err != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("signing key file %s, line %d: want ID:base64url-seed of 32 bytes", path, line)
		}
		keys = append(keys, SigningKey{ID: id, Key: ed25519.NewKeyFromSeed(seed)})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("signing key file %s holds no key", path)
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

func createKeyFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create signing key file: %w", err)
	}
	_, err = f.WriteString("# devreg device-token signing keys (Ed25519): ID:base64url-seed, oldest first; the last one signs.\n" +
		"# Every server must have the same file. Keep it secret.\n" + NewKeyLine() + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
