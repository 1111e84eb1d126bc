package registry

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// touchCounter is a store that counts the writes of API keys' last use.
type touchCounter struct {
	Store
	touches atomic.Int32
}

func (c *touchCounter) TouchAPIKey(ctx context.Context, id string, t time.Time, ip string) error {
	c.touches.Add(1)
	return c.Store.TouchAPIKey(ctx, id, t, ip)
}

// TestKeyStampedOncePerMinute: a broker key that a cluster of brokers uses from four addresses,
// hundreds of times within a minute, has its row written once (the first use), not whenever the
// address changes; once the minute has passed, the key's latest use, with its address, is
// written without waiting for another call; a further use within the next minute writes nothing,
// and the server forgets a key that has gone quiet.
func TestKeyStampedOncePerMinute(t *testing.T) { pgtest.Each(t, testKeyStampedOncePerMinute) }

func testKeyStampedOncePerMinute(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	counter := &touchCounter{Store: e.svc.store}
	e.svc.store = counter
	k, err := e.svc.CreateAPIKey(e.admin, devreg.NewAPIKey{Name: "emqx", Scope: devreg.ScopeBroker})
	if err != nil {
		t.Fatal(err)
	}
	brokers := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"}
	use := func(ip string) {
		t.Helper()
		if _, err := e.svc.AuthenticateAPIKey(devreg.NewContextWithClientIP(context.Background(), ip), k.Key); err != nil {
			t.Fatal(err)
		}
	}
	row := func() (time.Time, string) {
		t.Helper()
		got, err := e.svc.APIKey(e.admin, k.ID)
		if err != nil || got.LastUsedAt == nil || got.LastUsedIP == nil {
			t.Fatalf("the key %+v, %v; want its last use", got, err)
		}
		return *got.LastUsedAt, *got.LastUsedIP
	}
	t0 := *e.now.Load()
	use(brokers[0])
	if at, ip := row(); !at.Equal(t0) || ip != brokers[0] || counter.touches.Load() != 1 {
		t.Fatalf("after the first use: %v from %s, %d writes; want %v from %s, one write", at, ip, counter.touches.Load(), t0, brokers[0])
	}

	e.advance(30 * time.Second)
	var wg sync.WaitGroup
	for i := range 400 {
		wg.Go(func() { use(brokers[i%len(brokers)]) })
	}
	wg.Wait()
	e.advance(20 * time.Second)
	last := *e.now.Load()
	use(brokers[2]) // the key's latest use
	e.svc.flushKeyUses(false)
	if at, ip := row(); !at.Equal(t0) || ip != brokers[0] || counter.touches.Load() != 1 {
		t.Errorf("after 401 uses from four addresses within a minute: %v from %s, %d writes; want the first use and one write",
			at, ip, counter.touches.Load())
	}

	e.advance(11 * time.Second) // a minute and a second since the first use
	e.svc.flushKeyUses(false)
	if at, ip := row(); !at.Equal(last) || ip != brokers[2] || counter.touches.Load() != 2 {
		t.Errorf("once the minute has passed: %v from %s, %d writes; want the latest use, %v from %s, written once more",
			at, ip, counter.touches.Load(), last, brokers[2])
	}
	use(brokers[1])
	e.svc.flushKeyUses(false)
	if n := counter.touches.Load(); n != 2 {
		t.Errorf("a use just after the write: %d writes, want still 2", n)
	}

	// Quiet for a minute: the last use is written, and the key forgotten; the next use is
	// written at once.
	e.advance(time.Minute)
	e.svc.flushKeyUses(false)
	e.advance(time.Minute)
	e.svc.flushKeyUses(false)
	e.svc.seen.mu.Lock()
	kept := len(e.svc.seen.keys)
	e.svc.seen.mu.Unlock()
	if n := counter.touches.Load(); n != 3 || kept != 0 {
		t.Errorf("after two quiet minutes: %d writes, %d keys in memory; want 3 writes and none", n, kept)
	}
	use(brokers[3])
	if at, ip := row(); !at.Equal(*e.now.Load()) || ip != brokers[3] {
		t.Errorf("a use after two quiet minutes: the key shows %v from %s, want %v from %s", at, ip, *e.now.Load(), brokers[3])
	}
}
