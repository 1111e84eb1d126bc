package client_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"devreg/client"
	"devreg/server"
)

// TestRetries uses up a key's rate limit and checks which requests the client sends again after
// Retry-After, and that the rest come back as a 429 *Error that says when to try again.
func TestRetries(t *testing.T) {
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), APIRateLimit: 60, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	_, key, err := srv.Service.NewAccount(ctx, "Acme", "owner@acme.test", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(srv.URL(), key)
	name := "Lock"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	// useUp takes every token of the key's bucket (60, one back every second).
	useUp := func(t *testing.T) {
		t.Helper()
		for {
			_, err := c.ListDeviceTypes(ctx)
			if _, limited := client.RateLimited(err); limited {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	t.Run("no-retries/429-says-when", func(t *testing.T) {
		useUp(t)
		_, err := c.ListDeviceTypes(ctx)
		wait, limited := client.RateLimited(err)
		if !limited || wait != time.Second || !client.IsCode(err, "rate_limited") {
			t.Errorf("ListDeviceTypes over the limit = %v (wait %s); want 429 rate_limited with Retry-After 1 s", err, wait)
		}
	})

	retrying := *c
	var waits []time.Duration
	retrying.Retries = client.Retries{Max: 3, Notify: func(wait time.Duration, retry int, refusal *client.Error) {
		waits = append(waits, wait)
		if retry != len(waits) || refusal.Status != 429 {
			t.Errorf("Notify(%s, %d, %v)", wait, retry, refusal)
		}
	}}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := retrying.ListDeviceTypes(ctx); return err }},
		{"json-body", func() error {
			_, err := retrying.Register(ctx, dt.ID, []client.Credential{{DeviceID: "d1", Secret: "secretfordevice1"}}, client.RegisterOptions{})
			return err
		}},
		{"csv-from-a-string", func() error {
			_, err := retrying.RegisterCSV(ctx, dt.ID, strings.NewReader("d2, secretfordevice2"), client.RegisterOptions{})
			return err
		}},
	} {
		t.Run("retried/"+tc.name, func(t *testing.T) {
			useUp(t)
			waits = nil
			if err := tc.call(); err != nil {
				t.Fatalf("with retries = %v", err)
			}
			if len(waits) != 1 || waits[0] != time.Second {
				t.Errorf("waits %v, want one of 1 s", waits)
			}
		})
	}

	t.Run("not-retried/streamed-body", func(t *testing.T) {
		useUp(t)
		waits = nil
		body := io.MultiReader(strings.NewReader("d3, secretfordevice3")) // cannot be read twice
		_, err := retrying.RegisterCSV(ctx, dt.ID, body, client.RegisterOptions{})
		if _, limited := client.RateLimited(err); !limited || len(waits) != 0 {
			t.Errorf("a streamed body = %v after waits %v; want the 429 at once, for the caller to send again", err, waits)
		}
	})

	t.Run("not-retried/wait-too-long", func(t *testing.T) {
		useUp(t)
		waits = nil
		short := retrying
		short.Retries.MaxWait = 500 * time.Millisecond
		if _, err := short.ListDeviceTypes(ctx); !client.IsCode(err, "rate_limited") || len(waits) != 0 {
			t.Errorf("Retry-After beyond MaxWait = %v after waits %v; want the 429 at once", err, waits)
		}
	})

	t.Run("gives-up-after-max", func(t *testing.T) {
		// A server that is always over the limit, as the real one answers then: keeping the real
		// bucket empty while the client waits is a race with its refill on a busy machine.
		var sent atomic.Int32
		limited := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sent.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error": {"code": "rate_limited", "message": "too many requests for this API key; try again in 1 s"}}`)
		}))
		defer limited.Close()
		waits = nil
		once := client.New(limited.URL, key)
		once.Retries = retrying.Retries
		once.Retries.Max = 1
		if _, err := once.ListDeviceTypes(ctx); !client.IsCode(err, "rate_limited") || len(waits) != 1 || sent.Load() != 2 {
			t.Errorf("still limited after one retry = %v after waits %v, %d requests; want the 429 after 2", err, waits, sent.Load())
		}
	})

	t.Run("context-ends-the-wait", func(t *testing.T) {
		useUp(t)
		waits = nil
		ctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if _, err := retrying.ListDeviceTypes(ctx); err != context.DeadlineExceeded {
			t.Errorf("a wait beyond the context = %v, want context.DeadlineExceeded", err)
		}
	})
}
