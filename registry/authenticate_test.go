package registry

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// slowCounting is a store whose failures take delay to be counted, as when its writer is busy:
// the time in which a right secret could read the count before the wrong ones sent with it are
// in it.
type slowCounting struct {
	Store
	delay    time.Duration
	counting atomic.Int32 // ReserveAttempt calls begun
}

func (s *slowCounting) ReserveAttempt(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	s.counting.Add(1)
	time.Sleep(s.delay)
	return s.Store.ReserveAttempt(ctx, key, now, window)
}

// TestRightSecretAmongParallelWrongOnes sends 30 wrong secrets for one device at once to a store
// slow to count failures, and the right secret once DeviceMaxFailures of them are being counted:
// it is refused, as it would be after them one by one, and not let in because it read the count
// before they were in it. No turn is left behind.
func TestRightSecretAmongParallelWrongOnes(t *testing.T) {
	pgtest.Each(t, testRightSecretAmongParallelWrongOnes)
}

func testRightSecretAmongParallelWrongOnes(t *testing.T, url string) {
	e := newCredEnv(t, url, 0)
	slow := &slowCounting{Store: e.svc.store, delay: 20 * time.Millisecond}
	e.svc.store = slow
	var wg sync.WaitGroup
	codes := make(chan string, 30)
	for i := range 30 {
		wg.Go(func() {
			_, code := e.login("wrong-secret-" + strconv.Itoa(i))
			codes <- code
		})
	}
	for deadline := time.Now().Add(10 * time.Second); slow.counting.Load() < DeviceMaxFailures; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d failures counted in 10s", slow.counting.Load())
		}
	}
	_, code := e.login(s1)
	wg.Wait()
	close(codes)
	if code != devreg.ERATELIMITED {
		t.Errorf("right secret sent while %d wrong ones were counted = %q, want %q", DeviceMaxFailures, code, devreg.ERATELIMITED)
	}
	checked := 0
	for c := range codes {
		if c == devreg.EUNAUTHORIZED {
			checked++
		}
	}
	if checked > DeviceMaxFailures {
		t.Errorf("%d wrong secrets were answered as checked, want at most %d", checked, DeviceMaxFailures)
	}
	if n := e.svc.turns.held(); n != 0 {
		t.Errorf("%d turns left after the logins", n)
	}
}

// TestLoginTurns checks that attempts for one key take turns one at a time, that one for another
// key does not wait for them, and that one whose context ends while it waits gives up its place.
func TestLoginTurns(t *testing.T) {
	var turns loginTurns
	ctx := context.Background()
	release, err := turns.take(ctx, "device:a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := turns.take(ctx, "device:b")
	if err != nil {
		t.Fatalf("another key waits: %v", err)
	}
	other()

	cancelled, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() {
		_, err := turns.take(cancelled, "device:a")
		gaveUp <- err
	}()
	var inTurn atomic.Int32
	var together atomic.Bool
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			r, err := turns.take(ctx, "device:a")
			if err != nil {
				t.Error(err)
				return
			}
			if inTurn.Add(1) > 1 {
				together.Store(true)
			}
			time.Sleep(time.Millisecond)
			inTurn.Add(-1)
			r()
		})
	}
	for turns.waiting("device:a") < 22 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting with a cancelled context = %v, want context.Canceled", err)
	}
	release()
	wg.Wait()
	if together.Load() {
		t.Errorf("two attempts had the turn at once")
	}
	if n := turns.held(); n != 0 {
		t.Errorf("%d turns left", n)
	}
}

// waiting is how many attempts have key's turn or wait for it.
func (t *loginTurns) waiting(key string) int {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		tu := sh.turns[key]
		n := 0
		if tu != nil {
			n = tu.users
		}
		sh.mu.Unlock()
		if n > 0 {
			return n
		}
	}
	return 0
}

// held is how many keys have turns in use.
func (t *loginTurns) held() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.turns)
		sh.mu.Unlock()
	}
	return n
}
