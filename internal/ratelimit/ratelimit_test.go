package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
)

// clock is a test clock.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	c.set(time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC))
	return c
}

func (c *clock) now() time.Time          { return *c.t.Load() }
func (c *clock) set(t time.Time)         { c.t.Store(&t) }
func (c *clock) advance(d time.Duration) { c.set(c.now().Add(d)) }

func newLimiter(t *testing.T, perMinute int, opts Options) (*Limiter, *clock) {
	t.Helper()
	c := newClock()
	opts.Now = c.now
	l, err := New(perMinute, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

func TestTake(t *testing.T) {
	l, c := newLimiter(t, 60, Options{}) // a token a second
	for i := range 60 {
		got := l.Take("k")
		want := Decision{Allowed: true, Limit: 60, Remaining: 59 - i, Reset: time.Duration(i+1) * time.Second}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("request %d (-want +got):\n%s", i+1, diff)
		}
	}
	steps := []struct {
		name    string
		advance time.Duration
		want    Decision
	}{
		{"refused/empty", 0, Decision{Limit: 60, Reset: time.Minute, RetryAfter: time.Second}},
		{"refused/part-of-a-token", 400 * time.Millisecond, Decision{Limit: 60, Reset: time.Minute - 400*time.Millisecond, RetryAfter: 600 * time.Millisecond}},
		{"allowed/one-token-back", 600 * time.Millisecond, Decision{Allowed: true, Limit: 60, Remaining: 0, Reset: time.Minute}},
		{"refused/again", 0, Decision{Limit: 60, Reset: time.Minute, RetryAfter: time.Second}},
		{"allowed/ten-seconds-later", 10 * time.Second, Decision{Allowed: true, Limit: 60, Remaining: 9, Reset: 51 * time.Second}},
		{"allowed/after-a-minute-full", time.Hour, Decision{Allowed: true, Limit: 60, Remaining: 59, Reset: time.Second}},
	}
	for _, s := range steps {
		c.advance(s.advance)
		if diff := cmp.Diff(s.want, l.Take("k")); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
}

// TestRefillIsEven checks that a key sending as fast as it may gets exactly the limit a minute,
// spread evenly, and never a burst beyond the bucket.
func TestRefillIsEven(t *testing.T) {
	l, c := newLimiter(t, 1200, Options{})
	allowed := 0
	for range 1200 + 100 { // the full bucket, then 100 more that must wait
		if l.Take("k").Allowed {
			allowed++
		}
	}
	if allowed != 1200 {
		t.Fatalf("a full bucket allowed %d at once, want 1200", allowed)
	}
	allowed = 0
	for range 10 * 60 * 20 { // ten minutes in steps of 50 ms, trying twice each step
		c.advance(50 * time.Millisecond)
		for range 2 {
			if l.Take("k").Allowed {
				allowed++
			}
		}
	}
	if allowed != 12000 {
		t.Errorf("ten minutes of steady sending allowed %d, want 12000 (1200 a minute)", allowed)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	l, _ := newLimiter(t, 3, Options{})
	for range 3 {
		l.Take("a")
	}
	if l.Take("a").Allowed {
		t.Fatal("a: fourth request allowed")
	}
	if d := l.Take("b"); !d.Allowed || d.Remaining != 2 {
		t.Errorf("b after a used its bucket = %+v, want allowed with 2 remaining", d)
	}
}

func TestUnevenLimit(t *testing.T) {
	l, c := newLimiter(t, 7, Options{}) // a minute is not 7 times a whole number of nanoseconds
	for range 7 {
		if !l.Take("k").Allowed {
			t.Fatal("refused within the bucket")
		}
	}
	d := l.Take("k")
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Minute/7 {
		t.Fatalf("eighth = %+v", d)
	}
	c.advance(d.RetryAfter)
	if d := l.Take("k"); !d.Allowed || d.Remaining != 0 {
		t.Errorf("after RetryAfter = %+v, want allowed", d)
	}
}

// TestMemoryIsBounded checks that full buckets cost nothing and that many busy keys cannot grow
// the buckets beyond the bound.
func TestMemoryIsBounded(t *testing.T) {
	t.Run("idle-keys-are-dropped", func(t *testing.T) {
		l, c := newLimiter(t, 60, Options{})
		for i := range 1000 {
			l.Take(fmt.Sprint("key-", i))
		}
		if n := l.Len(); n != 1000 {
			t.Fatalf("%d buckets, want 1000", n)
		}
		c.advance(2 * time.Minute) // all full again
		l.Take("busy")
		if n := l.Len(); n != 1 {
			t.Errorf("%d buckets after every other key's bucket filled up, want 1", n)
		}
	})
	t.Run("busy-keys-beyond-the-bound", func(t *testing.T) {
		l, c := newLimiter(t, 60, Options{MaxBuckets: 100})
		for i := range 10_000 {
			c.advance(time.Millisecond)
			if d := l.Take(fmt.Sprint("key-", i)); !d.Allowed {
				t.Fatalf("key-%d refused: %+v", i, d)
			}
			if n := l.Len(); n > 100 {
				t.Fatalf("%d buckets after %d keys, bound 100", n, i+1)
			}
		}
		// The most recent keys are kept: their buckets are furthest from full.
		for range 59 {
			l.Take("key-9999")
		}
		if l.Take("key-9999").Allowed {
			t.Error("the newest key's bucket was dropped")
		}
	})
}

// TestParallel takes from one bucket in many goroutines: exactly the bucket's tokens are given.
func TestParallel(t *testing.T) {
	l, _ := newLimiter(t, 500, Options{})
	var allowed atomic.Int64
	seen := make([]atomic.Bool, 500)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 100 {
				if d := l.Take("k"); d.Allowed {
					allowed.Add(1)
					if seen[d.Remaining].Swap(true) {
						t.Errorf("remaining %d given twice", d.Remaining)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 500 {
		t.Errorf("%d allowed, want 500", n)
	}
}

func TestNew(t *testing.T) {
	for _, n := range []int{0, -1, MaxLimit + 1} {
		if _, err := New(n, Options{}); err == nil {
			t.Errorf("New(%d) = nil error", n)
		}
	}
	for _, n := range []int{1, DefaultLimit, MaxLimit} {
		if _, err := New(n, Options{}); err != nil {
			t.Errorf("New(%d) = %v", n, err)
		}
	}
}

func TestAdmit(t *testing.T) {
	l, c := newLimiter(t, 2, Options{}) // a token every 30 s
	key := func(scope devreg.Scope, id string) devreg.Caller {
		return devreg.Caller{AccountID: "acc_1", Scope: scope, KeyID: id}
	}
	type answer struct {
		Err                       string
		Limit, Remaining, Reset   string
		RetryAfterSeconds, Status int
	}
	admit := func(l *Limiter, caller devreg.Caller) answer {
		h := http.Header{}
		err := l.Admit(h, caller)
		a := answer{Limit: h.Get("RateLimit-Limit"), Remaining: h.Get("RateLimit-Remaining"), Reset: h.Get("RateLimit-Reset"), Err: devreg.ErrorCode(err)}
		if d, ok := devreg.RetryAfter(err); ok {
			a.RetryAfterSeconds = devreg.RetryAfterSeconds(d)
		}
		return a
	}
	steps := []struct {
		name    string
		caller  devreg.Caller
		advance time.Duration
		want    answer
	}{
		{"admin/first", key(devreg.ScopeAdmin, "key_a"), 0, answer{Limit: "2", Remaining: "1", Reset: "30"}},
		{"admin/second", key(devreg.ScopeAdmin, "key_a"), 0, answer{Limit: "2", Remaining: "0", Reset: "60"}},
		{"admin/refused", key(devreg.ScopeAdmin, "key_a"), 0, answer{Err: devreg.ERATELIMITED, Limit: "2", Remaining: "0", Reset: "60", RetryAfterSeconds: 30}},
		{"admin/refused-later", key(devreg.ScopeAdmin, "key_a"), 29500 * time.Millisecond, answer{Err: devreg.ERATELIMITED, Limit: "2", Remaining: "0", Reset: "31", RetryAfterSeconds: 1}},
		{"register/own-bucket", key(devreg.ScopeRegister, "key_r"), 0, answer{Limit: "2", Remaining: "1", Reset: "30"}},
		{"read/own-bucket", key(devreg.ScopeRead, "key_q"), 0, answer{Limit: "2", Remaining: "1", Reset: "30"}},
		{"broker/not-limited", key(devreg.ScopeBroker, "key_b"), 0, answer{}},
		{"broker/not-limited-again", key(devreg.ScopeBroker, "key_b"), 0, answer{}},
		{"broker/not-limited-thrice", key(devreg.ScopeBroker, "key_b"), 0, answer{}},
		{"admin/allowed-again", key(devreg.ScopeAdmin, "key_a"), 500 * time.Millisecond, answer{Limit: "2", Remaining: "0", Reset: "60"}},
	}
	for _, s := range steps {
		c.advance(s.advance)
		if diff := cmp.Diff(s.want, admit(l, s.caller)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
	if got := admit(nil, key(devreg.ScopeAdmin, "key_a")); got != (answer{}) {
		t.Errorf("a nil Limiter = %+v, want nothing counted", got)
	}
	h := http.Header{}
	err := l.Admit(h, key(devreg.ScopeAdmin, "key_a"))
	if status := devreg.Status(devreg.ErrorCode(err)); status != http.StatusTooManyRequests {
		t.Errorf("refusal status %d, want 429", status)
	}
	if msg := devreg.ErrorMessage(err); msg == "" || h.Get("Retry-After") != "" {
		t.Errorf("refusal message %q; Retry-After is the renderer's to set, from the error", msg)
	}
	if _, err := strconv.Atoi(h.Get("RateLimit-Reset")); err != nil {
		t.Errorf("RateLimit-Reset %q is not whole seconds", h.Get("RateLimit-Reset"))
	}
}
