package registry

import (
	"context"
	"strconv"
	"testing"

	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// cancelAtCount is a store that, like a client hanging up while its failure is being counted,
// sees the request's context end as ReserveAttempt starts.
type cancelAtCount struct {
	Store
	cancel context.CancelFunc
}

func (s *cancelAtCount) ReserveAttempt(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error) {
	if s.cancel != nil {
		s.cancel()
	}
	return s.Store.ReserveAttempt(ctx, key, now, window)
}

// TestAttack17GuessesCutOffWhileCountedAreCounted: a wrong guess whose request ends (the client
// hangs up) as its failure is counted is counted all the same. (It was not: its answer, none,
// differed from a right guess's, which needs no write, so hanging up gave unlimited guesses.)
func TestAttack17GuessesCutOffWhileCountedAreCounted(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		e := newCredEnv(t, url, 0)
		e.wantLogin(t, s1, "first login") // the credential is used once, so a right login writes nothing
		wrap := &cancelAtCount{Store: e.svc.store}
		e.svc.store = wrap
		for i := range 3 * DeviceMaxFailures {
			ctx, cancel := context.WithCancel(context.Background())
			wrap.cancel = cancel
			_, err := e.svc.AuthenticateDevice(ctx, e.acc, "d1", "wrong-secret-"+strconv.Itoa(i))
			cancel()
			if devreg.ErrorCode(err) == devreg.ERATELIMITED {
				t.Logf("throttled after %d cancelled guesses", i)
				return
			}
		}
		wrap.cancel = nil
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if _, err := e.svc.AuthenticateDevice(ctx, e.acc, "d1", s1); err == nil {
			t.Errorf("after %d wrong guesses cut off while counted, the right secret still gets in: none was counted", 3*DeviceMaxFailures)
		}
	})
}
