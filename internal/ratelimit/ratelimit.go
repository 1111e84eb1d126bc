// Package ratelimit limits how fast each API key may call devreg: a token bucket per key that
// holds a minute's worth of requests and refills evenly. Each server keeps its buckets in its own
// memory, so with several servers each counts on its own.
package ratelimit

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"devreg"
)

// DefaultLimit is how many requests a minute an API key may make unless configured otherwise.
const DefaultLimit = 1200

// MaxLimit is the highest limit: a token every 60 ns, below which a bucket could not refill evenly.
const MaxLimit = 1_000_000_000

// DefaultMaxBuckets bounds the buckets kept at once: about 100 bytes each.
const DefaultMaxBuckets = 100_000

// sweepEvery is how often buckets that have filled up again are dropped.
const sweepEvery = time.Minute

// Options are a Limiter's settings besides the limit; the zero value gives the defaults.
type Options struct {
	// MaxBuckets bounds the buckets kept at once; 0 for DefaultMaxBuckets.
	MaxBuckets int
	// Now is the clock; nil for time.Now.
	Now func() time.Time
}

// Limiter is a token bucket per key: each holds up to limit tokens, a request takes one, and
// one more comes back every minute/limit. It is safe for concurrent use.
//
// A bucket is kept as the time it will be full again (the generic cell rate algorithm), and a
// full bucket is the same as none, so only keys used within the last minute take memory. When
// more than MaxBuckets keys are busy at once, the buckets nearest to full are dropped, which
// refills them early: a key can then get a few requests more, but memory stays bounded.
type Limiter struct {
	limit      int
	interval   time.Duration // between two tokens
	capacity   time.Duration // how far a bucket's full time may lie ahead: limit × interval
	maxBuckets int
	now        func() time.Time

	mu        sync.Mutex
	full      map[string]time.Time // when each key's bucket is full again
	lastSweep time.Time
}

// New returns a limiter that lets each key make perMinute requests a minute.
func New(perMinute int, opts Options) (*Limiter, error) {
	if perMinute < 1 || perMinute > MaxLimit {
		return nil, fmt.Errorf("rate limit %d: want 1 to %d requests a minute", perMinute, MaxLimit)
	}
	if opts.MaxBuckets <= 0 {
		opts.MaxBuckets = DefaultMaxBuckets
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	interval := time.Minute / time.Duration(perMinute)
	return &Limiter{
		limit: perMinute, interval: interval, capacity: interval * time.Duration(perMinute),
		maxBuckets: opts.MaxBuckets, now: opts.Now, full: make(map[string]time.Time),
	}, nil
}

// Decision is the outcome of one request.
type Decision struct {
	Allowed   bool
	Limit     int // the bucket's size: requests a minute
	Remaining int // requests that may follow at once
	// Reset is how long until the bucket is full again, so that Limit requests may follow at once.
	Reset time.Duration
	// RetryAfter, for a refused request, is how long until one request is allowed again.
	RetryAfter time.Duration
}

// Take counts a request of key: it takes a token from key's bucket if there is one.
func (l *Limiter) Take(key string) Decision {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	full, kept := l.full[key]
	if !kept || full.Before(now) {
		full = now
	}
	ahead := full.Sub(now) // the tokens missing, as time: (limit − tokens) × interval
	if ahead+l.interval > l.capacity {
		return Decision{Limit: l.limit, Reset: ahead, RetryAfter: ahead + l.interval - l.capacity}
	}
	if !kept && len(l.full) >= l.maxBuckets {
		l.evict(now)
	}
	ahead += l.interval
	l.full[key] = now.Add(ahead)
	return Decision{Allowed: true, Limit: l.limit, Remaining: int((l.capacity - ahead) / l.interval), Reset: ahead}
}

// Len returns how many buckets are kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.full)
}

// sweep drops the buckets that are full again.
func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	for key, full := range l.full {
		if !full.After(now) {
			delete(l.full, key)
		}
	}
}

// evict makes room for new buckets: it drops the full ones and, if too many keys are busy, those
// nearest to full, down to seven eighths of the bound, so that this happens once in many requests.
func (l *Limiter) evict(now time.Time) {
	l.sweep(now)
	keep := l.maxBuckets - max(1, l.maxBuckets/8)
	if len(l.full) <= keep {
		return
	}
	type bucket struct {
		key  string
		full time.Time
	}
	buckets := make([]bucket, 0, len(l.full))
	for key, full := range l.full {
		buckets = append(buckets, bucket{key, full})
	}
	slices.SortFunc(buckets, func(a, b bucket) int { return a.full.Compare(b.full) })
	for _, b := range buckets[:len(buckets)-keep] {
		delete(l.full, b.key)
	}
}

// Limited reports whether requests of keys with scope s are counted. Broker keys are not: a
// broker's reconnect storm must not be refused.
func Limited(s devreg.Scope) bool {
	return s == devreg.ScopeAdmin || s == devreg.ScopeRegister || s == devreg.ScopeRead
}

// Admit counts a request of caller c, an authenticated API key, and sets the RateLimit-Limit,
// RateLimit-Remaining and RateLimit-Reset fields of h, so that every answer to the key carries
// them. Beyond the limit it returns an ERATELIMITED error whose RetryAfter says when one request
// is allowed again. Keys whose scope is not Limited pass uncounted and get no fields; so does
// everything when l is nil.
//
// RateLimit-Reset is the seconds, rounded up, until the bucket is full again: the draft "RateLimit
// header fields for HTTP" defines it as the time until the quota resets, and for a token bucket
// that is when all of RateLimit-Limit is available again. A refused client that wants a single
// request goes by Retry-After, which is shorter.
func (l *Limiter) Admit(h http.Header, c devreg.Caller) error {
	if l == nil || !Limited(c.Scope) {
		return nil
	}
	d := l.Take(c.KeyID)
	h.Set("RateLimit-Limit", strconv.Itoa(d.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(d.Remaining))
	h.Set("RateLimit-Reset", strconv.Itoa(ceilSeconds(d.Reset)))
	if d.Allowed {
		return nil
	}
	return &devreg.Error{
		Code: devreg.ERATELIMITED, RetryAfter: d.RetryAfter,
		Message: fmt.Sprintf("this API key may make %d requests a minute and has used them up; retry in %d s",
			d.Limit, devreg.RetryAfterSeconds(d.RetryAfter)),
	}
}

// ceilSeconds returns d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}
