package devtoken

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// verifyWithJWKS checks token the way another service would: with a JOSE library and the
// published key set.
func verifyWithJWKS(t *testing.T, keys *SigningKeys, token string) (alg string, claims map[string]any) {
	t.Helper()
	b, _ := json.Marshal(keys.JWKS())
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	sig, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	h := sig.Signatures[0].Header
	found := set.Key(h.KeyID)
	if len(found) != 1 {
		t.Fatalf("JWKS has %d keys with kid %q", len(found), h.KeyID)
	}
	payload, err := sig.Verify(found[0].Key)
	if err != nil {
		t.Fatalf("token does not verify with the published key: %v", err)
	}
	json.Unmarshal(payload, &claims)
	return h.Algorithm, claims
}

// TestSigningAlgorithms signs with Ed25519, then switches the key file to P-256: the new key is
// appended, both are published, tokens of each verify with a JOSE library, and tokens signed
// before the switch still verify here.
func TestSigningAlgorithms(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.keys")
	now := time.Unix(1_800_000_000, 0)
	claims := Claims{Issuer: "https://devreg.example", Subject: "d1", AccountID: "acc_1", DeviceTypeID: "dt_1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "j1", Cred: "bat_1"}

	ed, err := LoadOrCreateSigningKeys(path, EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	old, err := Sign(ed.Current(), claims)
	if err != nil {
		t.Fatal(err)
	}
	if alg, c := verifyWithJWKS(t, ed, old); alg != "EdDSA" || c["sub"] != "d1" || c["cred"] != "bat_1" {
		t.Errorf("EdDSA token: alg %s, claims %v", alg, c)
	}

	es, err := LoadOrCreateSigningKeys(path, ES256)
	if err != nil {
		t.Fatal(err)
	}
	if len(es.keys) != 2 || es.Current().Alg != ES256 {
		t.Fatalf("after switching to ES256 the file holds %d keys, the current one %s; want 2, ES256", len(es.keys), es.Current().Alg)
	}
	again, err := LoadOrCreateSigningKeys(path, ES256)
	if err != nil || len(again.keys) != 2 {
		t.Fatalf("loading with ES256 again added a key: %d keys, %v", len(again.keys), err)
	}
	if jwks := es.JWKS()["keys"].([]map[string]string); len(jwks) != 2 || jwks[0]["kty"] != "OKP" || jwks[1]["kty"] != "EC" {
		t.Errorf("JWKS after the switch: %v", jwks)
	}
	tok, err := Sign(es.Current(), claims)
	if err != nil {
		t.Fatal(err)
	}
	if alg, c := verifyWithJWKS(t, es, tok); alg != "ES256" || c["account_id"] != "acc_1" {
		t.Errorf("ES256 token: alg %s, claims %v", alg, c)
	}
	for _, token := range []string{old, tok} {
		if c, err := es.Verify(token, claims.Issuer, now); err != nil || c.Subject != "d1" {
			t.Errorf("Verify(%s…) = %v, %v", token[:20], c, err)
		}
	}
	if _, err := es.Verify(tok, claims.Issuer, now.Add(2*time.Hour)); err == nil {
		t.Error("an expired token verifies")
	}

	// A header that names another algorithm than the key's is refused (no algorithm confusion).
	parts := strings.Split(tok, ".")
	hdr, _ := json.Marshal(header{Alg: EdDSA, Typ: "JWT", Kid: es.Current().ID})
	forged := b64(hdr) + "." + parts[1] + "." + parts[2]
	if _, err := es.Verify(forged, claims.Issuer, now); err == nil {
		t.Error("a token whose header names EdDSA for a P-256 key verifies")
	}
	b, _ := os.ReadFile(path)
	if strings.Count(string(b), "\nsig") != 2 {
		t.Errorf("key file:\n%s", b)
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestVerifyRemembersOnlyWhatItChecked: once a token has verified, the same token verifies
// again, but no token that differs from it by a byte (a payload changed under the same
// signature), and the remembered token still expires and still names one issuer. Another key
// set remembers nothing of this one's.
func TestVerifyRemembersOnlyWhatItChecked(t *testing.T) {
	dir := t.TempDir()
	keys, err := LoadOrCreateSigningKeys(filepath.Join(dir, "a.keys"), EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	claims := Claims{Issuer: "https://devreg.example", Subject: "d1", AccountID: "acc_1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), ID: "j1"}
	tok, err := Sign(keys.Current(), claims)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if c, err := keys.Verify(tok, claims.Issuer, now); err != nil || c.Subject != "d1" {
			t.Fatalf("Verify = %+v, %v", c, err)
		}
	}
	parts := strings.Split(tok, ".")
	other := claims
	other.Subject = "d2"
	payload, _ := json.Marshal(other)
	if _, err := keys.Verify(parts[0]+"."+b64(payload)+"."+parts[2], claims.Issuer, now); err == nil {
		t.Error("a token with another payload under a remembered token's signature verifies")
	}
	if _, err := keys.Verify(tok, "https://other.example", now); err == nil {
		t.Error("a remembered token verifies for another issuer")
	}
	if _, err := keys.Verify(tok, claims.Issuer, now.Add(time.Hour)); err == nil {
		t.Error("a remembered token verifies at its expiry")
	}
	stranger, err := LoadOrCreateSigningKeys(filepath.Join(dir, "b.keys"), EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.Verify(tok, claims.Issuer, now); err == nil {
		t.Error("another key set verifies a token this one remembers")
	}
}
