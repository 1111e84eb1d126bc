package deviceauth_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devreg/credential"
	"devreg/deviceauth"
	"devreg/devtoken"
	"devreg/registry"
	"devreg/store"
)

// TestDatabaseFailureIsAServerError makes the database fail under the device endpoints: the
// answer is a 500 server_error that is logged, not a 401 that blames the caller's credentials.
func TestDatabaseFailureIsAServerError(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "devreg.db"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := credential.LoadOrCreateKeyring(filepath.Join(dir, "secret.keys"))
	if err != nil {
		t.Fatal(err)
	}
	signing, err := devtoken.LoadOrCreateSigningKeys(filepath.Join(dir, "signing.keys"), devtoken.EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	svc := registry.New(db, keys)
	acc, apiKey, err := svc.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	mux := http.NewServeMux()
	deviceauth.New(svc, signing, "http://devreg.test", time.Hour, slog.New(slog.NewTextHandler(&logs, nil))).Register(mux)
	db.Close()

	for _, tc := range []struct {
		name string
		req  *http.Request
	}{
		{"introspect", func() *http.Request {
			r := httptest.NewRequest("POST", "/device/v1/introspect", strings.NewReader("token=x.y.z"))
			r.Header.Set("Authorization", "Bearer "+apiKey)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}()},
		{"token", func() *http.Request {
			r := httptest.NewRequest("POST", "/device/v1/token", strings.NewReader("grant_type=client_credentials&account_id="+acc.ID+"&client_id=d1&client_secret=secretfordevice1"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, tc.req)
			if rec.Code != 500 || !strings.Contains(rec.Body.String(), `"server_error"`) {
				t.Errorf("with the database down: %d %s; want 500 server_error", rec.Code, rec.Body)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "closed") {
				t.Errorf("the database failure was not logged: %q", logs.String())
			}
		})
	}
}
