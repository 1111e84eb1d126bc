package registry

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"devreg"
	"devreg/devtoken"
	"devreg/internal/pgtest"
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

// TestVerifyDeviceToken: the one check of a device token lets in the device it was issued to,
// with its type and claims, and refuses a token that is not one (expired, another issuer, a
// forged signature) apart from one that is no longer honoured (the device disabled).
func TestVerifyDeviceToken(t *testing.T) { pgtest.Each(t, testVerifyDeviceToken) }

func testVerifyDeviceToken(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	ctx := context.Background()
	cred := e.wantLogin(t, s1, "factory secret")
	tok := issueToken(t, e.svc, e.acc, "d1", cred)
	dev, err := e.svc.VerifyDeviceToken(ctx, tok)
	if err != nil || dev.DeviceID != "d1" || dev.AccountID != e.acc || dev.DeviceTypeID != e.dt.ID || dev.CredentialID != cred || dev.Token == nil || dev.Token.Subject != "d1" {
		t.Fatalf("a fresh token: %+v, %v", dev, err)
	}
	issuer := e.svc.TokenIssuer
	e.svc.TokenIssuer = "https://other.example"
	if _, err := e.svc.VerifyDeviceToken(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a token of another issuer: %v, want ErrInvalidToken", err)
	}
	e.svc.TokenIssuer = issuer
	if _, err := e.svc.VerifyDeviceToken(ctx, tok[:len(tok)-4]+"AAAA"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("a token with another signature: %v, want ErrInvalidToken", err)
	}
	for _, tc := range []struct {
		name string
		tok  string
	}{{"empty", ""}, {"garbage", "not.a.token"}} {
		if _, err := e.svc.VerifyDeviceToken(ctx, tc.tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: %v, want ErrInvalidToken", tc.name, err)
		}
	}
	if _, err := e.svc.SetDeviceStatus(e.admin, "d1", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.VerifyDeviceToken(ctx, tok); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("the token of a disabled device: %v, want ErrTokenRevoked", err)
	}
	if err := e.svc.CheckIn(ctx, AuthenticatedDevice{AccountID: e.acc, DeviceID: "d1", DeviceTypeID: e.dt.ID, CredentialID: cred}, nil, nil); !errors.Is(err, ErrTokenRevoked) {
		t.Errorf("a check-in of a device that presented no token: %v, want ErrTokenRevoked", err)
	}
	if _, err := e.svc.SetDeviceStatus(e.admin, "d1", devreg.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	e.advance(time.Hour)
	if _, err := e.svc.VerifyDeviceToken(ctx, tok); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("an expired token: %v, want ErrInvalidToken", err)
	}
}
