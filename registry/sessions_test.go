package registry

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// TestLoginHashingIsBounded sends many logins at once, known and unknown emails alike, while
// each password check takes a while: no more than GOMAXPROCS checks ever run at once, and every
// login that finds no slot in time is told the server is busy and when to try again. Logins
// refused as busy were never checked, so they do not count toward the throttle.
func TestLoginHashingIsBounded(t *testing.T) { pgtest.Each(t, testLoginHashingIsBounded) }

func testLoginHashingIsBounded(t *testing.T, url string) {
	ctx := context.Background()
	s, _ := OpenTestService(t, url)
	const email, password = "owner@acme.test", "correct horse battery"
	if _, _, err := s.NewAccount(ctx, "Acme", email, password); err != nil {
		t.Fatal(err)
	}
	var inFlight, most atomic.Int32
	check := s.checkPassword
	s.checkPassword = func(hash, password string) bool {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(time.Second) // long enough that the slots run out
		return check(hash, password)
	}

	// Each slot runs at most two checks in the time a login waits for one: more than that many
	// logins cannot all get one.
	slots := cap(s.hashSlots)
	unknown, known := 4*slots+10, loginMaxFailures
	type result struct {
		known bool
		err   error
	}
	results := make(chan result, unknown+known)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range unknown + known {
		wg.Go(func() {
			<-start
			if i < known {
				_, err := s.Login(ctx, email, password)
				results <- result{true, err}
				return
			}
			_, err := s.Login(ctx, fmt.Sprintf("nobody-%d@acme.test", i), "guess")
			results <- result{false, err}
		})
	}
	close(start)
	wg.Wait()
	close(results)

	if m := most.Load(); m > int32(slots) || m < 1 {
		t.Errorf("%d password checks ran at once, want 1 to %d (GOMAXPROCS)", m, slots)
	}
	busy := 0
	for r := range results {
		switch code := devreg.ErrorCode(r.err); {
		case code == devreg.EUNAVAILABLE:
			busy++
			if wait, _ := devreg.RetryAfter(r.err); wait != 2*time.Second {
				t.Errorf("busy answer %v with RetryAfter %v, want 2s", r.err, wait)
			}
		case r.known && r.err != nil:
			t.Errorf("login with the right password: %v, want success or busy", r.err)
		case !r.known && code != devreg.EUNAUTHORIZED:
			t.Errorf("login with an unknown email: %v, want unauthorized or busy", r.err)
		}
	}
	if busy == 0 {
		t.Errorf("no login was told the server is busy, though %d waited for %d slots", unknown+known, slots)
	}

	// A login the server was too busy to check is no failure: after as many busy refusals as the
	// throttle allows failures, the right password still gets in.
	for range slots {
		s.hashSlots <- struct{}{}
	}
	errs := make(chan error, loginMaxFailures)
	for range loginMaxFailures {
		wg.Go(func() {
			_, err := s.Login(ctx, email, "wrong")
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for range slots {
		<-s.hashSlots
	}
	for err := range errs {
		if devreg.ErrorCode(err) != devreg.EUNAVAILABLE {
			t.Fatalf("login with every slot taken: %v, want unavailable", err)
		}
	}
	if _, err := s.Login(ctx, email, password); err != nil {
		t.Errorf("login after busy refusals: %v", err)
	}
}

// TestLoginCountsFirst sends wrong passwords for one email at once: at most loginMaxFailures of
// them are checked, the rest are refused unchecked with a time to try again.
func TestLoginCountsFirst(t *testing.T) { pgtest.Each(t, testLoginCountsFirst) }

func testLoginCountsFirst(t *testing.T, url string) {
	ctx := context.Background()
	s, _ := OpenTestService(t, url)
	if _, _, err := s.NewAccount(ctx, "Acme", "owner@acme.test", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	var checked atomic.Int32
	check := s.checkPassword
	s.checkPassword = func(hash, password string) bool { checked.Add(1); return check(hash, password) }
	s.hashWait = time.Minute // on a loaded machine the checks queue longer; busy answers are another test's
	const n = 20
	errs := make(chan error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			_, err := s.Login(ctx, "owner@acme.test", "wrong password")
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	codes := map[string]int{}
	for err := range errs {
		codes[devreg.ErrorCode(err)]++
		if wait, _ := devreg.RetryAfter(err); devreg.ErrorCode(err) == devreg.ERATELIMITED && (wait <= 0 || wait > loginWindow) {
			t.Errorf("rate limited with RetryAfter %v", wait)
		}
	}
	if c := checked.Load(); c > loginMaxFailures || codes[devreg.EUNAUTHORIZED] != int(c) || codes[devreg.ERATELIMITED] != n-int(c) {
		t.Errorf("%d parallel wrong passwords: %d checked, answers %v; want at most %d checked, the rest rate limited", n, c, codes, loginMaxFailures)
	}
}
