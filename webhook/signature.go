// Package webhook delivers devreg's events to customers' HTTP endpoints safely.
//
// Deliveries are signed as Standard Webhooks (https://www.standardwebhooks.com/)
// describes, so a customer can check them with any of that project's receiver
// libraries, and they go out through a Guard that keeps customer-chosen URLs
// from reaching the service's own machine or private network (SSRF).
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The headers Standard Webhooks defines. http.Header canonicalizes them
// (Webhook-Id and so on); header names are case-insensitive on the wire.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// secretPrefix marks a symmetric (HMAC-SHA256) Standard Webhooks secret.
const secretPrefix = "whsec_"

// The specification asks for at least 24 random bytes (192 bits) and at most 512 bits.
const (
	minKeyLen = 24
	maxKeyLen = 64
)

// NewSecret returns a fresh secret in the Standard Webhooks form: "whsec_"
// followed by the standard base64 encoding of 32 random bytes.
func NewSecret() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("cannot make a webhook secret: %w", err)
	}
	return SecretFromKey(key), nil
}

// SecretFromKey writes key as a Standard Webhooks secret, for callers that
// derive their keys themselves. Sign and Verify accept only keys of 24 to 64 bytes.
func SecretFromKey(key []byte) string {
	return secretPrefix + base64.StdEncoding.EncodeToString(key)
}

// parseSecret returns the HMAC key a secret carries. Its errors never repeat
// the secret, since they may end up in logs.
func parseSecret(secret string) ([]byte, error) {
	encoded, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return nil, fmt.Errorf("webhook secret does not start with %s", secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, fmt.Errorf("webhook secret is not %s followed by standard base64: %v", secretPrefix, err)
	}
	if len(key) < minKeyLen || len(key) > maxKeyLen {
		return nil, fmt.Errorf("webhook secret holds a %d-byte key; Standard Webhooks wants %d to %d bytes", len(key), minKeyLen, maxKeyLen)
	}
	return key, nil
}

// checkMsgID refuses message ids that would make the signed content
// ambiguous (the specification forbids "." in them) or that cannot travel in
// an HTTP header.
func checkMsgID(msgID string) error {
	if msgID == "" {
		return fmt.Errorf("webhook message id is empty")
	}
	for _, c := range []byte(msgID) {
		if c <= ' ' || c >= 0x7f || c == '.' {
			return fmt.Errorf("webhook message id %q holds %q; only printable ASCII without spaces or dots is allowed", msgID, c)
		}
	}
	return nil
}

// mac computes HMAC-SHA256 over "msg_id.timestamp.body", the content the
// specification signs.
func mac(key []byte, msgID string, unix int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msgID))
	h.Write([]byte("."))
	h.Write([]byte(strconv.FormatInt(unix, 10)))
	h.Write([]byte("."))
	h.Write(body)
	return h.Sum(nil)
}

// Sign returns the webhook-signature value for one delivery attempt:
// "v1," followed by the base64 HMAC-SHA256 of msgID, the timestamp in whole
// Unix seconds and the body, joined by dots.
func Sign(secret, msgID string, timestamp time.Time, body []byte) (string, error) {
	key, err := parseSecret(secret)
	if err != nil {
		return "", err
	}
	if err := checkMsgID(msgID); err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, msgID, timestamp.Unix(), body)), nil
}

// SetHeaders signs body and sets the three Standard Webhooks headers on h,
// along with Content-Type application/json. A retried delivery keeps its
// msgID and is signed again with the time of the new attempt.
func SetHeaders(h http.Header, secret, msgID string, timestamp time.Time, body []byte) error {
	sig, err := Sign(secret, msgID, timestamp, body)
	if err != nil {
		return err
	}
	h.Set(HeaderID, msgID)
	h.Set(HeaderTimestamp, strconv.FormatInt(timestamp.Unix(), 10))
	h.Set(HeaderSignature, sig)
	h.Set("Content-Type", "application/json")
	return nil
}

// Verify does what a receiver does with a delivery: it requires the three
// headers, refuses a timestamp more than tolerance away from now in either
// direction (so a captured delivery cannot be replayed later), and accepts
// the body if any v1 signature in the space-separated webhook-signature
// header matches, comparing in constant time.
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := parseSecret(secret)
	if err != nil {
		return err
	}
	msgID, stamp, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for _, hdr := range []struct{ name, value string }{{HeaderID, msgID}, {HeaderTimestamp, stamp}, {HeaderSignature, sigs}} {
		if hdr.value == "" {
			return fmt.Errorf("the %s header is missing", hdr.name)
		}
	}
	unix, err := strconv.ParseInt(stamp, 10, 64)
	if err != nil {
		return fmt.Errorf("the %s header %q is not a whole number of Unix seconds", HeaderTimestamp, stamp)
	}
	switch age := now.Sub(time.Unix(unix, 0)); {
	case age > tolerance:
		return fmt.Errorf("the %s header %d is %s in the past, beyond the %s tolerance (a late or replayed delivery)", HeaderTimestamp, unix, age, tolerance)
	case -age > tolerance:
		return fmt.Errorf("the %s header %d is %s in the future, beyond the %s tolerance", HeaderTimestamp, unix, -age, tolerance)
	}
	want := mac(key, msgID, unix, body)
	tried := 0
	for _, sig := range strings.Fields(sigs) {
		encoded, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			// Other schemes (v1a is ed25519) may sit beside ours; they are not ours to check.
			continue
		}
		tried++
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	if tried == 0 {
		return fmt.Errorf("the %s header holds no v1 signature", HeaderSignature)
	}
	return fmt.Errorf("none of the %d v1 signatures in the %s header matches: the secret is wrong or the id, timestamp or body was altered", tried, HeaderSignature)
}
