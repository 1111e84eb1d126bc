package webhook

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The test vector Standard Webhooks publishes with its reference libraries
// (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go,
// TestWebhookSign; the other languages' tests use the same one). Matching it
// byte for byte is what lets a customer verify our deliveries with any of them.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorMsgID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorUnix      = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignReproducesThePublishedVector(t *testing.T) {
	got, err := Sign(vectorSecret, vectorMsgID, time.Unix(vectorUnix, 0), []byte(vectorBody))
	if err != nil {
		t.Fatal(err)
	}
	if got != vectorSignature {
		t.Fatalf("Sign = %s, the published vector says %s", got, vectorSignature)
	}
	// Sub-second parts of the time are not part of the signed timestamp.
	got, err = Sign(vectorSecret, vectorMsgID, time.Unix(vectorUnix, 999_999_999), []byte(vectorBody))
	if err != nil || got != vectorSignature {
		t.Fatalf("Sign with nanoseconds = %s, %v; want %s", got, err, vectorSignature)
	}
}

func TestVerifyAcceptsThePublishedVector(t *testing.T) {
	h := http.Header{}
	h.Set("webhook-id", vectorMsgID)
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", vectorSignature)
	now := time.Unix(vectorUnix+60, 0)
	if err := Verify(vectorSecret, h, []byte(vectorBody), now, 5*time.Minute); err != nil {
		t.Fatalf("Verify refused the published vector: %v", err)
	}
}

func TestSetHeaders(t *testing.T) {
	h := http.Header{}
	if err := SetHeaders(h, vectorSecret, vectorMsgID, time.Unix(vectorUnix, 0), []byte(vectorBody)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"webhook-id":        vectorMsgID,
		"webhook-timestamp": "1614265330",
		"webhook-signature": vectorSignature,
		"Content-Type":      "application/json",
	}
	for name, value := range want {
		if got := h.Get(name); got != value {
			t.Errorf("header %s = %q, want %q", name, got, value)
		}
	}
}

func TestSecrets(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("two new secrets are both %s", a)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(a, "whsec_"))
	if !strings.HasPrefix(a, "whsec_") || err != nil || len(key) != 32 {
		t.Fatalf("NewSecret = %q: want whsec_ and the base64 of 32 bytes (decoded %d bytes, %v)", a, len(key), err)
	}
	if _, err := Sign(a, "msg_1", time.Now(), nil); err != nil {
		t.Fatalf("Sign refuses a secret from NewSecret: %v", err)
	}

	key = bytes.Repeat([]byte{0xfb}, 24)
	if got, want := SecretFromKey(key), "whsec_"+base64.StdEncoding.EncodeToString(key); got != want {
		t.Fatalf("SecretFromKey = %s, want %s", got, want)
	}
}

func TestSignRefusesBadSecretsAndIDs(t *testing.T) {
	cases := []struct {
		name, secret, msgID, wantErr string
	}{
		{"no prefix", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", "does not start with whsec_"},
		{"other scheme", "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_1", "does not start with whsec_"},
		{"not base64", "whsec_not*base64!", "msg_1", "standard base64"},
		{"url-safe base64", "whsec_" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 24)), "msg_1", "standard base64"},
		{"too short", SecretFromKey(make([]byte, 23)), "msg_1", "23-byte key"},
		{"too long", SecretFromKey(make([]byte, 65)), "msg_1", "65-byte key"},
		{"empty id", vectorSecret, "", "id is empty"},
		{"dot in id", vectorSecret, "msg.1", "without spaces or dots"},
		{"newline in id", vectorSecret, "msg_1\r\nX-Evil: 1", "without spaces or dots"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sig, err := Sign(c.secret, c.msgID, time.Unix(vectorUnix, 0), []byte(vectorBody))
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Sign = %q, %v; want an error saying %q", sig, err, c.wantErr)
			}
			if strings.Contains(err.Error(), "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") {
				t.Fatalf("the error repeats the secret: %v", err)
			}
			if err := SetHeaders(http.Header{}, c.secret, c.msgID, time.Unix(vectorUnix, 0), []byte(vectorBody)); err == nil {
				t.Fatal("SetHeaders accepted what Sign refuses")
			}
		})
	}
	for _, n := range []int{24, 64} {
		if _, err := Sign(SecretFromKey(make([]byte, n)), "msg_1", time.Now(), nil); err != nil {
			t.Errorf("Sign refuses a %d-byte key: %v", n, err)
		}
	}
}

func TestVerify(t *testing.T) {
	const tolerance = 5 * time.Minute
	now := time.Unix(1_750_000_000, 0)
	body := []byte(`{"type":"device.created","data":{"id":"d1"}}`)
	otherSecret := SecretFromKey(bytes.Repeat([]byte{7}, 32))
	signed := func(secret string, at time.Time) http.Header {
		h := http.Header{}
		if err := SetHeaders(h, secret, "msg_42", at, body); err != nil {
			t.Fatal(err)
		}
		return h
	}
	sigOf := func(secret string) string { return signed(secret, now).Get("webhook-signature") }

	cases := []struct {
		name    string
		header  http.Header
		body    []byte
		wantErr string // "" means accepted
	}{
		{"genuine", signed(vectorSecret, now), body, ""},
		{"just inside the past tolerance", signed(vectorSecret, now.Add(-tolerance)), body, ""},
		{"just inside the future tolerance", signed(vectorSecret, now.Add(tolerance)), body, ""},
		{"tampered body", signed(vectorSecret, now), append(bytes.Clone(body), ' '), "none of the 1 v1 signatures"},
		{"wrong secret", signed(otherSecret, now), body, "none of the 1 v1 signatures"},
		{"replayed after the tolerance", signed(vectorSecret, now.Add(-tolerance-time.Second)), body, "in the past"},
		{"from the future", signed(vectorSecret, now.Add(tolerance+time.Second)), body, "in the future"},
		{"rotated secrets, one matches", withHeader(signed(vectorSecret, now), "webhook-signature",
			"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,aGVsbG8= "+sigOf(vectorSecret)+" "+sigOf(otherSecret)), body, ""},
		{"several, none matches", withHeader(signed(vectorSecret, now), "webhook-signature",
			"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "+sigOf(otherSecret)+" v1,%%%"), body, "none of the 3 v1 signatures"},
		{"the right MAC under another scheme", withHeader(signed(vectorSecret, now), "webhook-signature",
			"v2,"+strings.TrimPrefix(sigOf(vectorSecret), "v1,")), body, "no v1 signature"},
		{"altered id", withHeader(signed(vectorSecret, now), "webhook-id", "msg_43"), body, "none of the 1"},
		{"missing id", withHeader(signed(vectorSecret, now), "webhook-id", ""), body, "webhook-id header is missing"},
		{"missing timestamp", withHeader(signed(vectorSecret, now), "webhook-timestamp", ""), body, "webhook-timestamp header is missing"},
		{"missing signature", withHeader(signed(vectorSecret, now), "webhook-signature", ""), body, "webhook-signature header is missing"},
		{"timestamp not a number", withHeader(signed(vectorSecret, now), "webhook-timestamp", "2025-06-15T12:00:00Z"), body, "not a whole number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Verify(vectorSecret, c.header, c.body, now, tolerance)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("Verify refused: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("Verify = %v; want an error saying %q", err, c.wantErr)
			}
		})
	}
	if err := Verify("whsec_short", signed(vectorSecret, now), body, now, tolerance); err == nil {
		t.Fatal("Verify accepted an invalid secret")
	}
}

// withHeader returns h with name set to value, or removed if value is empty.
func withHeader(h http.Header, name, value string) http.Header {
	if value == "" {
		h.Del(name)
	} else {
		h.Set(name, value)
	}
	return h
}
