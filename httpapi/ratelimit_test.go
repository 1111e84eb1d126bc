package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg/internal/pgtest"
	"devreg/server"
)

// limitEnv is a real server with a small --api-rate-limit and a key of each scope, made by a
// setup key so that every test key starts with a full bucket.
type limitEnv struct {
	url                           string
	admin, register, read, broker string
	limit                         int
	interval                      time.Duration // between two tokens
	setup                         string
	client                        *http.Client
}

func newLimitEnv(t *testing.T, database string, limit int) *limitEnv {
	t.Helper()
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Database: database, APIRateLimit: limit, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	e := &limitEnv{url: srv.URL(), limit: limit, interval: time.Minute / time.Duration(limit), client: &http.Client{}}
	if _, e.setup, err = srv.Service.NewAccount(ctx, "Acme", "owner@acme.test", "correct horse"); err != nil {
		t.Fatal(err)
	}
	for scope, dst := range map[string]*string{"admin": &e.admin, "register": &e.register, "read": &e.read, "broker": &e.broker} {
		a := e.do(t, e.setup, "POST", "/api/v1/apikeys", `{"name": "test `+scope+`", "scope": "`+scope+`"}`)
		var out struct{ Key string }
		if a.status != http.StatusCreated || json.Unmarshal([]byte(a.body), &out) != nil || out.Key == "" {
			t.Fatalf("create %s key = %d %s", scope, a.status, a.body)
		}
		*dst = out.Key
	}
	return e
}

// answer is what a test looks at in a response.
type answer struct {
	status                              int
	limit, remaining, reset, retryAfter string
	code                                string // the error body's code
	body                                string
}

func (e *limitEnv) do(t *testing.T, key, method, path, body string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Error(err) // also from goroutines
		return answer{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(b, &eb)
	return answer{
		status: resp.StatusCode, limit: resp.Header.Get("RateLimit-Limit"), remaining: resp.Header.Get("RateLimit-Remaining"),
		reset: resp.Header.Get("RateLimit-Reset"), retryAfter: resp.Header.Get("Retry-After"), code: eb.Error.Code, body: string(b),
	}
}

// headers is the part of an answer the RateLimit-* fields make up.
type headers struct{ Status, Limit, Remaining string }

func headersOf(a answer) headers {
	return headers{strconv.Itoa(a.status), a.limit, a.remaining}
}

// TestRateLimitHeaders checks that every answer to an admin, register or read key carries the
// RateLimit-* fields, successes and errors after authentication alike; that requests without a
// valid key neither carry them nor count; and that broker keys are never limited.
func TestRateLimitHeaders(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newLimitEnv(t, database, 10) // a token every 6 s
		limit := "10"
		steps := []struct {
			name               string
			key                string
			method, path, body string
			want               headers
		}{
			{"200/admin-first", e.admin, "GET", "/api/v1/devicetypes", "", headers{"200", limit, "9"}},
			{"201/admin", e.admin, "POST", "/api/v1/devicetypes", `{"name": "Thermostat"}`, headers{"201", limit, "8"}},
			{"404/admin-unknown-device", e.admin, "GET", "/api/v1/devices/nope", "", headers{"404", limit, "7"}},
			{"400/admin-bad-json", e.admin, "POST", "/api/v1/devicetypes", `{"name":`, headers{"400", limit, "6"}},
			{"409/admin-duplicate-name", e.admin, "POST", "/api/v1/devicetypes", `{"name": "Thermostat"}`, headers{"409", limit, "5"}},
			{"422/admin-invalid", e.admin, "POST", "/api/v1/devicetypes", `{"name": ""}`, headers{"422", limit, "4"}},
			{"403/read-key-writes", e.read, "POST", "/api/v1/devicetypes", `{"name": "Other"}`, headers{"403", limit, "9"}},
			{"403/register-key-manages-keys", e.register, "GET", "/api/v1/apikeys", "", headers{"403", limit, "9"}},
			{"401/no-key", "", "GET", "/api/v1/devicetypes", "", headers{"401", "", ""}},
			{"401/wrong-key", "drk_wrong", "GET", "/api/v1/devicetypes", "", headers{"401", "", ""}},
			{"401/wrong-key-again", "drk_wrong", "GET", "/api/v1/devicetypes", "", headers{"401", "", ""}},
			{"200/admin-not-charged-for-bad-keys", e.admin, "GET", "/api/v1/devicetypes", "", headers{"200", limit, "3"}},
			{"404/no-such-call-is-not-a-key-answer", e.admin, "GET", "/api/v1/nothing", "", headers{"404", "", ""}},
			{"200/admin-not-charged-for-unknown-calls", e.admin, "GET", "/api/v1/devicetypes", "", headers{"200", limit, "2"}},
		}
		for _, s := range steps {
			a := e.do(t, s.key, s.method, s.path, s.body)
			if diff := cmp.Diff(s.want, headersOf(a)); diff != "" {
				t.Errorf("%s (-want +got):\n%s\n%s", s.name, diff, a.body)
			}
			if s.want.Limit != "" {
				// The bucket is full again after (limit − remaining) tokens of 6 s each.
				if want := (10 - mustAtoi(t, a.remaining)) * 6; mustAtoi(t, a.reset) != want {
					t.Errorf("%s: RateLimit-Reset %s, want %d", s.name, a.reset, want)
				}
			} else if a.reset != "" {
				t.Errorf("%s: RateLimit-Reset %q on an answer to no key", s.name, a.reset)
			}
		}

		t.Run("broker-keys-are-not-limited", func(t *testing.T) {
			for i := range 3 * 10 {
				for _, a := range []answer{
					e.do(t, e.broker, "GET", "/api/v1/devicetypes", ""),
					e.do(t, e.broker, "POST", "/broker/v1/emqx/authn", `{"username": "d1", "password": "secretfordevice1", "clientid": "d1"}`),
				} {
					if a.status == http.StatusTooManyRequests || a.limit != "" || a.remaining != "" || a.reset != "" {
						t.Fatalf("broker request %d = %d with RateLimit-Limit %q, -Remaining %q, -Reset %q; want never limited, no fields",
							i, a.status, a.limit, a.remaining, a.reset)
					}
				}
			}
		})
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a whole number", s)
	}
	return n
}

// TestRateLimit429 uses up one key's bucket: the next request gets 429 with the contract's error
// body and Retry-After, while the account's other keys go on.
func TestRateLimit429(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newLimitEnv(t, database, 5) // a token every 12 s
		for i := range 5 {
			if a := e.do(t, e.register, "GET", "/api/v1/devices", ""); a.status != http.StatusOK || a.remaining != strconv.Itoa(4-i) {
				t.Fatalf("request %d = %d, remaining %q: %s", i+1, a.status, a.remaining, a.body)
			}
		}
		for _, req := range []struct{ method, path, body string }{
			{"GET", "/api/v1/devices", ""},
			{"PUT", "/api/v1/devicetypes/dt_nope/device_ids", `{"devices": [{"device_id": "d1", "secret": "secretfordevice1"}]}`},
			{"DELETE", "/api/v1/apikeys/key_nope", ""}, // refused for the limit before the scope is looked at
		} {
			a := e.do(t, e.register, req.method, req.path, req.body)
			wait, err := strconv.Atoi(a.retryAfter)
			if a.status != http.StatusTooManyRequests || a.code != "rate_limited" || err != nil || wait < 1 || wait > 12 {
				t.Errorf("%s %s over the limit = %d, code %q, Retry-After %q; want 429 rate_limited and 1 to 12 s: %s",
					req.method, req.path, a.status, a.code, a.retryAfter, a.body)
			}
			if a.limit != "5" || a.remaining != "0" || mustAtoi(t, a.reset) < 50 || mustAtoi(t, a.reset) > 60 {
				t.Errorf("429: RateLimit-Limit %q, -Remaining %q, -Reset %q; want 5, 0 and about 60", a.limit, a.remaining, a.reset)
			}
			if !strings.Contains(a.body, "5 requests a minute") {
				t.Errorf("429 body does not say the limit: %s", a.body)
			}
		}
		for name, key := range map[string]string{"admin": e.admin, "read": e.read} {
			if a := e.do(t, key, "GET", "/api/v1/devices", ""); a.status != http.StatusOK || a.remaining != "4" {
				t.Errorf("%s key while the register key is limited = %d, remaining %q; want its own full bucket", name, a.status, a.remaining)
			}
		}
	})
}

// TestRateLimitParallel sends 50 requests of one key at once against a limit of 20: exactly 20
// get through, each seeing a different RateLimit-Remaining, and 30 get 429. The key is looked up
// in the database for each, so this runs on both.
func TestRateLimitParallel(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		const limit, requests = 20, 50
		e := newLimitEnv(t, database, limit) // a token every 3 s
		e.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: requests}}
		start := make(chan struct{})
		answers := make([]answer, requests)
		var wg sync.WaitGroup
		for i := range requests {
			wg.Go(func() {
				<-start
				answers[i] = e.do(t, e.read, "GET", "/api/v1/devicetypes", "")
			})
		}
		began := time.Now()
		close(start)
		wg.Wait()
		elapsed := time.Since(began)

		var remaining []int
		refused := 0
		for _, a := range answers {
			switch a.status {
			case http.StatusOK:
				remaining = append(remaining, mustAtoi(t, a.remaining))
			case http.StatusTooManyRequests:
				refused++
				if a.code != "rate_limited" || a.retryAfter == "" || a.remaining != "0" {
					t.Errorf("429 with code %q, Retry-After %q, remaining %q", a.code, a.retryAfter, a.remaining)
				}
			default:
				t.Errorf("answer %d: %s", a.status, a.body)
			}
		}
		// Tokens come back every 3 s; a slower run may see one more for each 3 s it took.
		extra := int(elapsed / e.interval)
		if len(remaining) < limit || len(remaining) > limit+extra || len(remaining)+refused != requests {
			t.Fatalf("%d allowed, %d refused in %s; want %d allowed", len(remaining), refused, elapsed, limit)
		}
		if extra == 0 {
			slices.Sort(remaining)
			want := make([]int, limit)
			for i := range want {
				want[i] = i
			}
			if diff := cmp.Diff(want, remaining); diff != "" {
				t.Errorf("RateLimit-Remaining of the allowed requests (-want +got):\n%s", diff)
			}
		}
	})
}
