package credential

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"strings"
	"testing"
)

func sealTestKeyring(t *testing.T) *Keyring {
	t.Helper()
	r, err := NewKeyring(Key{ID: "k_old", Secret: bytes.Repeat([]byte{1}, 32)}, Key{ID: "k_new", Secret: bytes.Repeat([]byte{2}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSealOpen: a group key sealed under the current server key opens with the same row's
// context, also after the key file gained a newer key, and under nothing else.
func TestSealOpen(t *testing.T) {
	r := sealTestKeyring(t)
	groupKey, _ := NewGroupKey()
	ad := SealContext("acc_1", "grp_1", "gk_1")
	old, _ := r.Lookup("k_old")
	sealed := Seal(old, groupKey, ad)
	if len(sealed) != len(groupKey)+SealOverhead {
		t.Errorf("sealed %d bytes into %d; want %d", len(groupKey), len(sealed), len(groupKey)+SealOverhead)
	}
	if bytes.Contains(sealed, groupKey) {
		t.Fatal("the sealed form contains the group key in clear")
	}

	t.Run("round-trip-after-rotation", func(t *testing.T) {
		got, err := r.Open("k_old", sealed, ad)
		if err != nil || !bytes.Equal(got, groupKey) {
			t.Errorf("Open = %x, %v; want the group key", got, err)
		}
	})
	t.Run("round-trip-current-key", func(t *testing.T) {
		s := Seal(r.Current(), groupKey, ad)
		if got, err := r.Open(r.Current().ID, s, ad); err != nil || !bytes.Equal(got, groupKey) {
			t.Errorf("Open = %x, %v; want the group key", got, err)
		}
	})
	t.Run("twice-differs", func(t *testing.T) {
		if again := Seal(old, groupKey, ad); bytes.Equal(again, sealed) || bytes.Equal(again[:12], sealed[:12]) {
			t.Error("sealing the same key twice gave the same ciphertext or nonce")
		}
	})
	for _, tt := range []struct {
		name, keyID string
		sealed, ad  []byte
		want        string
	}{
		{"other-account", "k_old", sealed, SealContext("acc_2", "grp_1", "gk_1"), "does not open"},
		{"other-group", "k_old", sealed, SealContext("acc_1", "grp_2", "gk_1"), "does not open"},
		{"other-group-key", "k_old", sealed, SealContext("acc_1", "grp_1", "gk_2"), "does not open"},
		{"shifted-context", "k_old", sealed, SealContext("acc_1g", "rp_1", "gk_1"), "does not open"},
		{"no-context", "k_old", sealed, nil, "does not open"},
		{"other-server-key", "k_new", sealed, ad, "does not open"},
		{"unknown-server-key", "k_gone", sealed, ad, `server key "k_gone", which the secret key file does not hold`},
		{"truncated", "k_old", sealed[:len(sealed)-1], ad, "does not open"},
		{"too-short", "k_old", sealed[:10], ad, "too short"},
		{"empty", "k_old", nil, ad, "too short"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Open(tt.keyID, tt.sealed, tt.ad)
			if err == nil || got != nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %x, %v; want an error saying %q", got, err, tt.want)
			}
		})
	}
	t.Run("any-byte-tampered", func(t *testing.T) {
		for i := range sealed {
			bad := bytes.Clone(sealed)
			bad[i] ^= 0x01
			if got, err := r.Open("k_old", bad, ad); err == nil {
				t.Fatalf("byte %d flipped: Open = %x, nil; want an error", i, got)
			}
		}
	})
}

// TestSealContextIsUnambiguous: two different rows never give the same additional data, however
// their IDs split.
func TestSealContextIsUnambiguous(t *testing.T) {
	pairs := [][2][]string{
		{{"ab", "c"}, {"a", "bc"}},
		{{"a", ""}, {"a"}},
		{{"", "a"}, {"a", ""}},
	}
	for _, p := range pairs {
		if bytes.Equal(SealContext(p[0]...), SealContext(p[1]...)) {
			t.Errorf("SealContext(%q) = SealContext(%q)", p[0], p[1])
		}
	}
}

// TestSealFormat pins the format at rest, which outlives this code: a 12-byte nonce, then
// AES-256-GCM under HKDF-SHA256(server key, no salt, info "devreg enrollment group key v1"), so a
// stored group key can be recovered from its description alone.
func TestSealFormat(t *testing.T) {
	k := Key{ID: "k_1", Secret: bytes.Repeat([]byte{7}, 32)}
	ad := SealContext("acc_1", "grp_1", "gk_1")
	sealed := Seal(k, []byte("group key bytes"), ad)
	aesKey, err := hkdf.Key(sha256.New, k.Secret, nil, "devreg enrollment group key v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(aesKey)
	gcm, _ := cipher.NewGCM(block)
	got, err := gcm.Open(nil, sealed[:12], sealed[12:], ad)
	if err != nil || string(got) != "group key bytes" {
		t.Errorf("opening by the documented format = %q, %v", got, err)
	}
	raw, _ := aes.NewCipher(k.Secret)
	rawGCM, _ := cipher.NewGCM(raw)
	if _, err := rawGCM.Open(nil, sealed[:12], sealed[12:], ad); err == nil {
		t.Error("the server key itself opens the sealed data; the sealing key must be derived from it")
	}
}
