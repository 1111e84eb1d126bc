package registry

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// hotCache.load keeps what it read for the next load, except a value read while something was
// forgotten (it may be what was just changed), one that keep refuses, and a failed read.
func TestHotCacheLoad(t *testing.T) {
	var c hotCache[string, int]
	reads := 0
	read := func(v int, err error) func() (int, error) {
		return func() (int, error) { reads++; return v, err }
	}
	if v, err := c.load("a", read(1, nil), nil); v != 1 || err != nil {
		t.Fatalf("first load: %d, %v", v, err)
	}
	if v, _ := c.load("a", read(2, nil), nil); v != 1 || reads != 1 {
		t.Errorf("second load: %d after %d reads; want the kept 1 after 1 read", v, reads)
	}

	// A forget while the read runs: the value read is not kept.
	started, forgotten := make(chan struct{}), make(chan struct{})
	done := make(chan int)
	go func() {
		v, _ := c.load("b", func() (int, error) { close(started); <-forgotten; return 10, nil }, nil)
		done <- v
	}()
	<-started
	c.forget(func(v int) bool { return v == 10 })
	close(forgotten)
	if v := <-done; v != 10 {
		t.Errorf("load during a forget: %d, want 10", v)
	}
	if v, _ := c.load("b", read(11, nil), nil); v != 11 {
		t.Errorf("load after a forget during a read: %d, want 11 (the value read before the forget was kept)", v)
	}

	// Refused by keep, or failed: not kept.
	reads = 0
	c.load("c", read(0, nil), func(v int) bool { return v != 0 })
	c.load("c", read(0, nil), func(v int) bool { return v != 0 })
	c.load("d", read(5, errors.New("down")), nil)
	if v, err := c.load("d", read(6, nil), nil); v != 6 || err != nil || reads != 4 {
		t.Errorf("after refused and failed reads: %d, %v after %d reads; want 6, nil after 4", v, err, reads)
	}
}

// Loads and forgets at once (run with -race): a load that began before the last forget never
// leaves its value kept.
func TestHotCacheLoadRace(t *testing.T) {
	var c hotCache[int, int64]
	var version atomic.Int64 // the "database"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c.load((g+i)%3, func() (int64, error) { return version.Load(), nil }, nil)
			}
		}()
	}
	for range 2000 {
		version.Add(1)
		c.forget(func(int64) bool { return true })
		// Every value kept from now on was read after the change.
		want := version.Load()
		for k := range 3 {
			if v, _ := c.load(k, func() (int64, error) { return version.Load(), nil }, nil); v < want {
				t.Fatalf("key %d: %d kept after the change to %d was forgotten", k, v, want)
			}
		}
	}
	close(stop)
	wg.Wait()
}
