package credential

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// GroupKeySize is the length of an enrollment group's key.
const GroupKeySize = 32

// DeriveSecret is the secret of device deviceID of an enrollment group with key groupKey, as
// Azure DPS derives a device key from a group enrollment's key: base64(HMAC-SHA256(groupKey,
// deviceID)).
func DeriveSecret(groupKey []byte, deviceID string) string {
	mac := hmac.New(sha256.New, groupKey)
	mac.Write([]byte(deviceID))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// NewGroupKey makes a random group key and its base64 form, as the API shows it once.
func NewGroupKey() (raw []byte, encoded string) {
	raw = make([]byte, GroupKeySize)
	rand.Read(raw)
	return raw, base64.StdEncoding.EncodeToString(raw)
}

// ParseGroupKey reads a group key in the form the API showed it (standard base64 of 32 bytes;
// spaces and line breaks around it are ignored). Its errors never hold the key.
func ParseGroupKey(s string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("group key is not standard base64")
	}
	if len(raw) != GroupKeySize {
		return nil, fmt.Errorf("group key is %d bytes, not %d", len(raw), GroupKeySize)
	}
	return raw, nil
}
