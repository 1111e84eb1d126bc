package credential

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"devreg/internal/dpstest"
)

// TestDeriveSecretAzureExample: the example Azure's documentation prints for a group enrollment
// derives the same secret here, so firmware written for DPS works unchanged.
func TestDeriveSecretAzureExample(t *testing.T) {
	key, err := base64.StdEncoding.DecodeString(dpstest.DocGroupKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := DeriveSecret(key, dpstest.DocRegistrationID); got != dpstest.DocDerivedKey {
		t.Errorf("DeriveSecret(Azure's example) = %q, want %q", got, dpstest.DocDerivedKey)
	}
	if got := dpstest.OpenSSL(t, dpstest.DocGroupKey, dpstest.DocRegistrationID); got != dpstest.DocDerivedKey {
		t.Errorf("Azure's openssl pipeline on its own example = %q, want %q", got, dpstest.DocDerivedKey)
	}
}

// TestDeriveSecretMatchesOpenSSL compares DeriveSecret with Azure's documented openssl pipeline
// for group keys of devreg's size and device IDs at the edges of what devreg accepts.
func TestDeriveSecretMatchesOpenSSL(t *testing.T) {
	ids := []string{
		"a", "0", "device1", "T1-00A1B2C3D4E5", "AA:BB:CC:DD:EE:FF", "9.a_b-c:d", "x-", "Z...",
		strings.Repeat("a", 128), "A" + strings.Repeat("._:-", 31) + "9Zz",
	}
	for range 3 {
		raw, encoded := NewGroupKey()
		for _, id := range ids {
			if p := CheckDeviceID(id); p != "" {
				t.Fatalf("test ID %q is not a valid device ID: %s", id, p)
			}
			got := DeriveSecret(raw, id)
			if want := dpstest.OpenSSL(t, encoded, id); got != want {
				t.Errorf("DeriveSecret(key, %q) = %q; openssl gives %q", id, got, want)
			}
			if p := CheckSecret(got, 44); p != "" || len(got) != 44 {
				t.Errorf("derived secret %q is not a valid 44-character secret: %s", got, p)
			}
		}
	}
}

func TestDeriveSecretSeparatesDevicesAndKeys(t *testing.T) {
	k1, _ := NewGroupKey()
	k2, _ := NewGroupKey()
	if bytes.Equal(k1, k2) || len(k1) != GroupKeySize {
		t.Fatalf("NewGroupKey gave %d bytes, or the same key twice", len(k1))
	}
	seen := map[string]string{}
	for _, c := range []struct {
		key  []byte
		name string
		id   string
	}{{k1, "k1", "dev1"}, {k1, "k1", "dev2"}, {k2, "k2", "dev1"}, {k1, "k1", "Dev1"}} {
		s := DeriveSecret(c.key, c.id)
		if prev, ok := seen[s]; ok {
			t.Errorf("%s/%s derives the same secret as %s", c.name, c.id, prev)
		}
		seen[s] = c.name + "/" + c.id
	}
}

func TestNewGroupKeyRoundTrip(t *testing.T) {
	raw, encoded := NewGroupKey()
	for _, s := range []string{encoded, encoded + "\n", "  " + encoded + "\r\n", "\t" + encoded} {
		got, err := ParseGroupKey(s)
		if err != nil || !bytes.Equal(got, raw) {
			t.Errorf("ParseGroupKey(%q) = %x, %v; want %x", s, got, err, raw)
		}
	}
	if len(encoded) != 44 || !strings.HasSuffix(encoded, "=") {
		t.Errorf("encoded group key %q: want 44 characters of padded standard base64", encoded)
	}
}

func TestParseGroupKeyRefusals(t *testing.T) {
	raw, encoded := NewGroupKey()
	std := base64.StdEncoding.EncodeToString
	urlSafe := base64.URLEncoding.EncodeToString(append(bytes.Repeat([]byte{0xfb}, 31), 0xff)) // has - and _
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "group key is empty"},
		{"blank", " \n", "group key is empty"},
		{"16-bytes", std(raw[:16]), "group key holds 16 bytes; a group key holds 32 (44 base64 characters)"},
		{"64-bytes", std(append(raw, raw...)), "group key holds 64 bytes; a group key holds 32"},
		{"url-safe", urlSafe, "it looks like URL-safe base64; a group key uses + and /"},
		{"no-padding", strings.TrimRight(encoded, "="), "it has 43 characters and no '=' at the end; a group key has 44"},
		{"inner-newline", encoded[:20] + "\n" + encoded[20:], "character 21 is not one of A-Z a-z 0-9 + / ="},
		{"hex", strings.Repeat("ab", 32), "group key looks like hex (64 hex digits); devreg shows group keys in standard base64, 44 characters ending in '='"},
		{"padding-inside", encoded[:10] + "=" + encoded[11:], "group key is not standard base64 (44 characters; a group key has 44, ending in '=')"},
		{"not-canonical", encoded[:42] + "B=", "group key is not standard base64"},
		{"two-keys", encoded + " " + encoded, "is not one of"},
		{"json", `{"group_key": "` + encoded + `"}`, "character 1 is not one of"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := ParseGroupKey(tt.in)
			if err == nil || key != nil {
				t.Fatalf("ParseGroupKey(%q) = %x, nil; want an error", tt.in, key)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to say %q", err, tt.want)
			}
			if tt.in != "" && len(strings.TrimSpace(tt.in)) >= 8 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)[:8]) {
				t.Errorf("error %q repeats the key", err)
			}
		})
	}
}
