package registry

import (
	"context"
	"sync"
	"time"

	"devreg"
)

// Broker logins count as the device being seen, and every authentication with a secret as a use
// of its credential. Brokers reconnect whole fleets at once, so those writes are collected and
// made together, per account, every seenInterval (the contract asks for last_seen_at within 10
// seconds), or sooner once maxPendingSeen devices and credentials wait.
const (
	seenInterval   = 5 * time.Second
	maxPendingSeen = 50_000
)

// seenWriter collects the devices that brokers let in, the credentials used and the API keys'
// uses, until it writes them.
type seenWriter struct {
	mu      sync.Mutex
	pending map[string]*pendingSeen // by account ID
	keys    keyUses                 // API keys' uses, to be written once a minute (keyuse.go)
	n       int
	at      time.Time // the latest time a device was seen
	flush   chan struct{}
	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
}

// pendingSeen is what waits to be written for one account.
type pendingSeen struct {
	devices map[string]struct{}
	used    map[devreg.CredentialUse]struct{}
}

// LastSeenBacklog returns how many devices seen and credentials used wait to be written.
func (s *Service) LastSeenBacklog() int {
	s.seen.mu.Lock()
	defer s.seen.mu.Unlock()
	return s.seen.n
}

// markSeen notes that a device was seen at t; a goroutine writes it soon.
func (s *Service) markSeen(accountID, deviceID string, t time.Time) {
	s.note(accountID, t, func(p *pendingSeen) bool {
		_, ok := p.devices[deviceID]
		p.devices[deviceID] = struct{}{}
		return !ok
	})
}

// markUsed notes that a device authenticated with a credential at t; a goroutine writes it soon.
func (s *Service) markUsed(accountID string, u devreg.CredentialUse, t time.Time) {
	s.note(accountID, t, func(p *pendingSeen) bool {
		_, ok := p.used[u]
		p.used[u] = struct{}{}
		return !ok
	})
}

// note adds to what waits for the account, with add, which reports whether it added an item.
func (s *Service) note(accountID string, t time.Time, add func(*pendingSeen) bool) {
	w := &s.seen
	s.startWriter()
	w.mu.Lock()
	if w.pending == nil {
		w.pending = map[string]*pendingSeen{}
	}
	p := w.pending[accountID]
	if p == nil {
		p = &pendingSeen{devices: map[string]struct{}{}, used: map[devreg.CredentialUse]struct{}{}}
		w.pending[accountID] = p
	}
	if add(p) {
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

// startWriter starts, once, the goroutine that writes what waits.
func (s *Service) startWriter() {
	w := &s.seen
	w.once.Do(func() {
		w.flush, w.stop, w.done = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go s.writeSeen()
	})
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
			s.flushKeyUses(true)
			return
		}
		s.flushSeen()
		s.flushKeyUses(false)
	}
}

func (s *Service) flushSeen() {
	w := &s.seen
	w.mu.Lock()
	pending, at := w.pending, w.at
	w.pending, w.n = map[string]*pendingSeen{}, 0
	w.mu.Unlock()
	// The store retries what fails for a passing reason; what still fails is lost (and logged,
	// with how many): the next login of these devices records them again.
	for accountID, p := range pending {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if len(p.devices) > 0 {
			ids := make([]string, 0, len(p.devices))
			for id := range p.devices {
				ids = append(ids, id)
			}
			if err := s.store.MarkSeen(ctx, accountID, ids, at); err != nil && s.Log != nil {
				s.Log.Warn("record that devices were seen", "account_id", accountID, "devices", len(ids), "err", err)
			}
		}
		if len(p.used) > 0 {
			uses := make([]devreg.CredentialUse, 0, len(p.used))
			for u := range p.used {
				uses = append(uses, u)
			}
			if err := s.store.MarkCredentialsUsed(ctx, accountID, uses, at); err != nil && s.Log != nil {
				s.Log.Warn("record that credentials were used", "account_id", accountID, "credentials", len(uses), "err", err)
			}
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
