package registry

import (
	"context"
	"time"

	"devreg"
)

// A key's last_used_at and last_used_ip are written at most once every apiKeyTouchInterval per
// key by each server, whatever address the key is used from: a broker cluster shares one key,
// and rewriting its row whenever the address changed turned every hook call into a write (EMQX
// topic checks through one server on PostgreSQL: 6,616/s from one address, 1,587/s from four).
// Between writes, the server keeps the key's latest use in memory and writes it, address and
// all, once the interval has passed (with the background writes of seen.go), so the row follows
// the key's last use within about a minute.

// maxKeyUses bounds the keys whose use a server keeps in memory; a key it has no room for is
// stamped by its row alone (when the stored last use is older than the interval).
const maxKeyUses = 10_000

// keyUses is, per key ID, what this server knows of a key's use; guarded by seenWriter.mu.
type keyUses map[string]*keyUse

// keyUse is when a key's use was last written, and its latest use since, if any.
type keyUse struct {
	stamped time.Time // when this server wrote it last, or the last use it read from the key
	at      time.Time // the latest use not yet written; zero if there is none
	ip      string    // the address of the latest use that had one
}

// keyUsed notes that key k was used at now from ip ("" when unknown), and reports whether to
// stamp the key's row now, with this use.
func (s *Service) keyUsed(k devreg.APIKey, now time.Time, ip string) bool {
	w := &s.seen
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.keys[k.ID]
	if u == nil {
		due := k.LastUsedAt == nil || now.Sub(*k.LastUsedAt) >= apiKeyTouchInterval
		if len(w.keys) >= maxKeyUses {
			return due
		}
		if w.keys == nil {
			w.keys = keyUses{}
		}
		u = &keyUse{stamped: now}
		w.keys[k.ID] = u
		if due {
			return true
		}
		u.stamped = *k.LastUsedAt // stamped within the interval, by this server or another
	}
	if now.Sub(u.stamped) >= apiKeyTouchInterval {
		u.stamped, u.at, u.ip = now, time.Time{}, ""
		return true
	}
	u.at = now
	if ip != "" {
		u.ip = ip
	}
	s.startWriter()
	return false
}

// flushKeyUses writes the latest use of each key whose interval has passed (of every key with
// one, if all), and forgets the keys that have not been used since their last write.
func (s *Service) flushKeyUses(all bool) {
	type use struct {
		id, ip string
		at     time.Time
	}
	var due []use
	now := s.now()
	w := &s.seen
	w.mu.Lock()
	for id, u := range w.keys {
		passed := now.Sub(u.stamped) >= apiKeyTouchInterval
		switch {
		case !u.at.IsZero() && (passed || all):
			due = append(due, use{id, u.ip, u.at})
			u.stamped, u.at, u.ip = now, time.Time{}, ""
		case u.at.IsZero() && passed:
			delete(w.keys, id)
		}
	}
	w.mu.Unlock()
	for _, u := range due {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.store.TouchAPIKey(ctx, u.id, u.at, u.ip); err != nil && s.Log != nil {
			s.Log.Warn("record an API key's last use", "key_id", u.id, "err", err)
		}
		cancel()
	}
}
