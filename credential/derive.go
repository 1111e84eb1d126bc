package credential

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// GroupKeySize is the length in bytes of an enrollment group key.
const GroupKeySize = 32

// NewGroupKey returns a new random enrollment group key and its standard base64 form, the one an
// admin is shown once and a factory line keeps in its key file.
func NewGroupKey() (raw []byte, encoded string) {
	raw = randomBytes(GroupKeySize)
	return raw, base64.StdEncoding.EncodeToString(raw)
}

// DeriveSecret returns the secret of the device deviceID in the enrollment group with key
// groupKey: standard base64 (with padding) of HMAC-SHA256 keyed with the group key over the device
// ID. It is Azure DPS's derived device key, so firmware written for DPS group enrollments computes
// the same secret. The result is 44 printable ASCII characters, a valid secret for any device type
// whose minimum length is at most 44.
func DeriveSecret(groupKey []byte, deviceID string) string {
	mac := hmac.New(sha256.New, groupKey)
	io.WriteString(mac, deviceID)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ParseGroupKey reads a group key in the form the API shows it: standard base64 of exactly 32
// bytes, with padding. Surrounding spaces and line breaks (a key file's last newline) are ignored.
// Its errors say what is wrong without repeating any of the key.
func ParseGroupKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	want := base64.StdEncoding.EncodedLen(GroupKeySize)
	if s == "" {
		return nil, errors.New("group key is empty")
	}
	// The standard decoder skips line breaks inside its input; a key is one unbroken word.
	if i := strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/' || r == '=')
	}); i >= 0 {
		hint := ""
		if s[i] == '-' || s[i] == '_' {
			hint = " (it looks like URL-safe base64; a group key uses + and /)"
		}
		return nil, fmt.Errorf("group key is not standard base64: character %d is not one of A-Z a-z 0-9 + / =%s", i+1, hint)
	}
	if len(s) == 2*GroupKeySize && strings.Trim(s, "0123456789abcdefABCDEF") == "" {
		return nil, fmt.Errorf("group key looks like hex (%d hex digits); devreg shows group keys in standard base64, %d characters ending in '='", len(s), want)
	}
	key, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		if len(s) == want-1 && !strings.HasSuffix(s, "=") {
			return nil, fmt.Errorf("group key is not standard base64: it has %d characters and no '=' at the end; a group key has %d, ending in '='", len(s), want)
		}
		return nil, fmt.Errorf("group key is not standard base64 (%d characters; a group key has %d, ending in '=')", len(s), want)
	}
	if len(key) != GroupKeySize {
		return nil, fmt.Errorf("group key holds %d bytes; a group key holds %d (%d base64 characters)", len(key), GroupKeySize, want)
	}
	return key, nil
}
