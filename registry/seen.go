package registry

import (
	"context"
	"sync"
	"time"
)

// Broker logins count as the device being seen. Brokers reconnect whole fleets at once, so
// those writes are collected and made together, per account, every seenInterval (the contract
// asks for last_seen_at within 10 seconds), or sooner once maxPendingSeen devices wait.
const (
	seenInterval   = 5 * time.Second
	maxPendingSeen = 50_000
)

// seenWriter collects the devices that brokers let in until it writes them.
type seenWriter struct {
	mu      sync.Mutex
	pending map[string]map[string]struct{} // account ID → device IDs
	n       int
	at      time.Time // the latest time a device was seen
	flush   chan struct{}
	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
}

// markSeen notes that a device was seen at t; a goroutine writes it soon.
func (s *Service) markSeen(accountID, deviceID string, t time.Time) {
	w := &s.seen
	w.once.Do(func() {
		w.pending, w.flush, w.stop, w.done = map[string]map[string]struct{}{}, make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go s.writeSeen()
	})
	w.mu.Lock()
	devices := w.pending[accountID]
	if devices == nil {
		devices = map[string]struct{}{}
		w.pending[accountID] = devices
	}
	if _, ok := devices[deviceID]; !ok {
		devices[deviceID] = struct{}{}
		w.n++
	}
	w.at = t
	full := w.n >= maxPendingSeen
	w.mu.Unlock()
	if full {
		select {
		case w.flush <- struct{}{}:
		default:
		}
	}
}

// writeSeen writes what markSeen collected, every seenInterval and when asked, until Close.
func (s *Service) writeSeen() {
	w := &s.seen
	defer close(w.done)
	tick := time.NewTicker(seenInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-w.flush:
		case <-w.stop:
			s.flushSeen()
			return
		}
		s.flushSeen()
	}
}

func (s *Service) flushSeen() {
	w := &s.seen
	w.mu.Lock()
	pending, at := w.pending, w.at
	w.pending, w.n = map[string]map[string]struct{}{}, 0
	w.mu.Unlock()
	for accountID, devices := range pending {
		ids := make([]string, 0, len(devices))
		for id := range devices {
			ids = append(ids, id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := s.store.MarkSeen(ctx, accountID, ids, at); err != nil && s.Log != nil {
			// Lost, not retried: the next login of these devices is seen again.
			s.Log.Warn("record that devices were seen", "account_id", accountID, "devices", len(ids), "err", err)
		}
		cancel()
	}
}

// Close writes what is still pending and stops the service's background work.
func (s *Service) Close() {
	s.closeOnce.Do(func() {
		w := &s.seen
		w.once.Do(func() {}) // nothing was started: nothing to stop
		if w.stop != nil {
			close(w.stop)
			<-w.done
		}
	})
}
