package deviceauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg/client"
	"devreg/internal/pgtest"
	"devreg/server"
)

// TestIntrospectionRateLimit checks that introspection counts against the key's bucket, the one
// its Operations API calls use, and answers with the RateLimit-* fields and, beyond the limit,
// 429 with Retry-After; a broker key is not counted.
func TestIntrospectionRateLimit(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		ctx := context.Background()
		srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Database: database, APIRateLimit: 3, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve()
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		acct, setupKey, err := srv.Service.NewAccount(ctx, "Acme", "ops@acme.test", "correct horse")
		if err != nil {
			t.Fatal(err)
		}
		// The setup spreads over two admin keys: each may make only 3 requests a minute.
		setup := client.New(srv.URL(), setupKey)
		admin, err := setup.CreateAPIKey(ctx, "setup", "admin")
		if err != nil {
			t.Fatal(err)
		}
		read, err := setup.CreateAPIKey(ctx, "service", "read")
		if err != nil {
			t.Fatal(err)
		}
		broker, err := setup.CreateAPIKey(ctx, "broker", "broker")
		if err != nil {
			t.Fatal(err)
		}
		setup = client.New(srv.URL(), admin.Key)
		name := "Thermostat"
		dt, err := setup.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := setup.Register(ctx, dt.ID, []client.Credential{{DeviceID: "device1", Secret: "secretfordevice1"}}, client.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
		tok, err := client.DeviceToken(ctx, http.DefaultClient, srv.URL(), acct.ID, "device1", "secretfordevice1", "")
		if err != nil {
			t.Fatal(err)
		}

		type answer struct {
			Status                       int
			Limit, Remaining, RetryAfter string
			Active                       any
		}
		introspect := func(key string) answer {
			req, _ := http.NewRequest("POST", srv.URL()+"/device/v1/introspect", strings.NewReader(url.Values{"token": {tok.AccessToken}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var out map[string]any
			json.NewDecoder(resp.Body).Decode(&out)
			return answer{resp.StatusCode, resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"), resp.Header.Get("Retry-After"), out["active"]}
		}
		steps := []struct {
			name string
			key  string
			want answer
		}{
			{"200/first", read.Key, answer{200, "3", "2", "", true}},
			{"200/second", read.Key, answer{200, "3", "1", "", true}},
			{"403/broker-not-counted", broker.Key, answer{Status: 403}},
			{"200/third", read.Key, answer{200, "3", "0", "", true}},
			{"429/fourth", read.Key, answer{429, "3", "0", "20", nil}},
			{"403/broker-still-not-limited", broker.Key, answer{Status: 403}},
		}
		for _, s := range steps {
			if diff := cmp.Diff(s.want, introspect(s.key)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", s.name, diff)
			}
		}
		// The same bucket as the key's calls of the Operations API.
		_, err = client.New(srv.URL(), read.Key).ListDeviceTypes(ctx)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests || ce.Code != "rate_limited" ||
			ce.RetryAfter < 19*time.Second || ce.RetryAfter > 20*time.Second {
			t.Errorf("an API call after the introspections used up the bucket = %v, want 429 rate_limited with Retry-After about 20 s (a token every 20 s)", err)
		}
	})
}
