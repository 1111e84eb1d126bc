package credential

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckDeviceID(t *testing.T) {
	tests := []struct{ id, want string }{
		{"device1", ""},
		{"AA:BB:CC:DD:EE:FF", ""},
		{"9.a_b-c:d", ""},
		{strings.Repeat("a", 128), ""},
		{"", "device ID is empty"},
		{strings.Repeat("a", 129), "device ID is 129 characters long; at most 128 are allowed"},
		{"dev 4", "device ID contains a space"},
		{"_dev", "device ID starts with '_'; it must start with a letter or digit"},
		{"dev/4", `device ID contains '/'; only A-Z a-z 0-9 . _ : - are allowed`},
		{"dév", `device ID contains the non-ASCII character 'é'; only A-Z a-z 0-9 . _ : - are allowed`},
		{"a\x00b", "device ID contains a control character (U+0000); only A-Z a-z 0-9 . _ : - are allowed"},
	}
	for _, tt := range tests {
		if got := CheckDeviceID(tt.id); got != tt.want {
			t.Errorf("CheckDeviceID(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func TestCheckSecret(t *testing.T) {
	tests := []struct {
		secret string
		min    int
		want   string
	}{
		{"12345678", 0, ""},
		{"with spaces and ~!@#", 0, ""},
		{strings.Repeat("s", 256), 0, ""},
		{"1234567", 0, "secret is 7 characters long; this device type needs at least 8"},
		{"1234567890", 16, "secret is 10 characters long; this device type needs at least 16"},
		{"", 0, "secret is empty"},
		{strings.Repeat("s", 257), 0, "secret is 257 characters long; at most 256 are allowed"},
		{"secret\twith tab", 0, "secret contains a tab; only printable ASCII characters are allowed"},
		{"sécret-long", 0, "secret contains the non-ASCII character 'é'; only printable ASCII characters are allowed"},
	}
	for _, tt := range tests {
		if got := CheckSecret(tt.secret, tt.min); got != tt.want {
			t.Errorf("CheckSecret(%q, %d) = %q, want %q", tt.secret, tt.min, got, tt.want)
		}
	}
}

func TestHashBindsAccountDeviceAndKey(t *testing.T) {
	k1 := Key{ID: "k1", Secret: bytes.Repeat([]byte{1}, 32)}
	k2 := Key{ID: "k2", Secret: bytes.Repeat([]byte{2}, 32)}
	base := Hash(k1, "acc", "dev", "secret")
	for name, other := range map[string][]byte{
		"other account":        Hash(k1, "acc2", "dev", "secret"),
		"other device":         Hash(k1, "acc", "dev2", "secret"),
		"other secret":         Hash(k1, "acc", "dev", "secret2"),
		"other key":            Hash(k2, "acc", "dev", "secret"),
		"shifted field bounds": Hash(k1, "ac", "cdev", "secret"),
	} {
		if bytes.Equal(base, other) {
			t.Errorf("hash equals the hash with %s", name)
		}
	}
	if !bytes.Equal(base, NewHasher(k1).Append(nil, "acc", "dev", "secret")) {
		t.Errorf("Hasher and Hash disagree")
	}
	ring, err := NewKeyring(k1, k2)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Current().ID != "k2" {
		t.Errorf("current key = %s, want the last one", ring.Current().ID)
	}
	if !ring.Verify("k1", base, "acc", "dev", "secret") || ring.Verify("k1", base, "acc", "dev", "wrong") || ring.Verify("k9", base, "acc", "dev", "secret") {
		t.Errorf("Verify accepts a wrong secret or key, or refuses the right one")
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "secret.keys")
	ring, err := LoadOrCreateKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	again, err := LoadOrCreateKeyring(path)
	if err != nil || again.Current().ID != ring.Current().ID || !bytes.Equal(again.Current().Secret, ring.Current().Secret) {
		t.Fatalf("reloaded key differs")
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	line := NewKeyLine()
	f.WriteString(line + "\n")
	f.Close()
	rotated, err := LoadOrCreateKeyring(path)
	if err != nil || len(rotated.Keys()) != 2 || rotated.Current().ID != strings.Split(line, ":")[0] {
		t.Fatalf("after appending a key: %v keys, current %s, err %v", len(rotated.Keys()), rotated.Current().ID, err)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadOrCreateKeyring(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file accepted: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("not a key\n"), 0o600)
	if _, err := LoadOrCreateKeyring(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("malformed key file: err = %v, want it to name the line", err)
	}
}

func TestPasswordAndRandom(t *testing.T) {
	h := HashPassword("correct horse")
	if !strings.HasPrefix(h, "$argon2id$") || !CheckPassword(h, "correct horse") || CheckPassword(h, "correct horsE") {
		t.Errorf("password hash %q does not check as it should", h)
	}
	if HashPassword("correct horse") == h {
		t.Errorf("two hashes of one password are equal: no salt")
	}
	s := RandomString(1000)
	if len(s) != 1000 || strings.Trim(s, alphabet) != "" {
		t.Errorf("RandomString gave %q", s[:20])
	}
	k1, h1 := NewAPIKey()
	k2, _ := NewAPIKey()
	if k1 == k2 || !bytes.Equal(h1, HashAPIKey(k1)) || strings.Contains(string(h1), k1) {
		t.Errorf("API keys repeat or their hash does not match")
	}
}
