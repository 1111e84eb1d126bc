package registry

import (
	"sync"
	"time"
)

// What every broker request reads and a user rarely changes is kept in the server for at most
// hotTTL: API keys (every request with one: the broker's at each check), and for topic checks
// (brokers ask about every message) the device's type and status and the type's topic filters. A change made through this server
// forgets what it changes at once; one made through another server (on PostgreSQL) or the command
// line (on SQLite) is seen within hotTTL. Logins read the device every time: a disabled device or
// a revoked credential is refused at its next connection on every server.
//
// A time-to-live rather than notifications between servers (PostgreSQL's LISTEN/NOTIFY): it
// bounds how long a deleted key works whatever wrote the change and whether a notification was
// missed while a server reconnected, and at hotTTL it costs a read per key and type twice a
// second, not one per request.
const hotTTL = 500 * time.Millisecond

// hotCacheSize bounds a cache's entries: past it, the cache starts afresh.
const hotCacheSize = 10_000

// hotCache is a small map whose entries live hotTTL, measured by the monotonic clock (not the
// service's clock, which tests set).
type hotCache[K comparable, V any] struct {
	mu      sync.Mutex
	entries map[K]hotEntry[V]
	gen     uint64 // counts forgets: a value read before one is not kept
}

type hotEntry[V any] struct {
	v       V
	expires time.Time
}

// load returns the value kept under k if it is fresh, else what read returns, kept for hotTTL
// when read succeeds and keep (if not nil) accepts it, unless something was forgotten while read
// ran: the value read may be what this server has just changed or deleted.
func (c *hotCache[K, V]) load(k K, read func() (V, error), keep func(V) bool) (V, error) {
	c.mu.Lock()
	e, ok := c.entries[k]
	gen := c.gen
	c.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.v, nil
	}
	v, err := read()
	if err != nil || (keep != nil && !keep(v)) {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return v, nil
	}
	if c.entries == nil || len(c.entries) >= hotCacheSize {
		c.entries = map[K]hotEntry[V]{}
	}
	c.entries[k] = hotEntry[V]{v: v, expires: time.Now().Add(hotTTL)}
	return v, nil
}

// forget drops every entry whose value matches.
func (c *hotCache[K, V]) forget(match func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.entries {
		if match(e.v) {
			delete(c.entries, k)
		}
	}
}
