package registry

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"devreg/devtoken"
)

// issueToken signs a device token for the credential credID of a device, as the token endpoint
// does, with keys that s verifies (made for the test on first use).
func issueToken(t *testing.T, s *Service, accountID, deviceID, credID string) string {
	t.Helper()
	if s.TokenKeys == nil {
		keys, err := devtoken.LoadOrCreateSigningKeys(filepath.Join(t.TempDir(), "signing.keys"), devtoken.EdDSA)
		if err != nil {
			t.Fatal(err)
		}
		s.TokenKeys, s.TokenIssuer = keys, "https://devreg.test"
	}
	now := s.Now()
	tok, err := devtoken.Sign(s.TokenKeys.Current(), devtoken.Claims{Issuer: s.TokenIssuer, Subject: deviceID, AccountID: accountID,
		IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "jti-of-the-test", Cred: credID})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenActive is token introspection by the caller of ctx: whether a token issued for the
// credential credID of a device is active.
func tokenActive(t *testing.T, s *Service, ctx context.Context, accountID, deviceID, credID string) (bool, error) {
	t.Helper()
	dev, err := s.VerifyDeviceToken(ctx, issueToken(t, s, accountID, deviceID, credID))
	if errors.Is(err, ErrInvalidToken) || errors.Is(err, ErrTokenRevoked) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.DeviceActive(ctx, dev)
}
