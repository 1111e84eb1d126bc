package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"devreg"
	"devreg/webhook"
)

const (
	// deliveryPoll is how often a server looks for webhooks with events to deliver.
	deliveryPoll = 500 * time.Millisecond
	// deliveryWorkers bounds the webhooks a server delivers to at once, and so the connections
	// it holds to receivers, however slow they are; accountWorkers bounds those of one account,
	// so that an account of slow receivers leaves the others workers.
	deliveryWorkers = 8
	accountWorkers  = 4
	// deliverySlice is how long a worker delivers to one webhook before it gives it back, so
	// that the webhooks waiting for a worker get their turn.
	deliverySlice = 10 * time.Second
	// deliveryTimeout bounds one try: a receiver that answers more slowly has failed it.
	deliveryTimeout = 10 * time.Second
	// deliveryLease is how long a server holds a webhook it delivers to from its last record of
	// where the webhook is: it renews the lease with every record, and starts no try that could
	// outlast it. Another server takes over the webhook of a server killed mid-delivery once its
	// lease has run out.
	deliveryLease = 15 * time.Second
	// deliveryAnswer is how much of a receiver's answer a delivery keeps, to show.
	deliveryAnswer = 1024
)

// DeliverEvents delivers the accounts' events to their webhooks until ctx ends. Every server
// runs it: each poll it claims the webhooks with events due (a lease in the database, so that one
// server delivers to a webhook at a time), and delivers each one's events in seq order, one
// at a time, until one fails; the failed event is tried again after devreg.WebhookBackoff.
// owner names this server in the leases.
func (s *Service) DeliverEvents(ctx context.Context, owner string) {
	client := s.WebhookGuard.Client(deliveryTimeout)
	defer client.CloseIdleConnections()
	slots := make(chan struct{}, deliveryWorkers)
	var mu sync.Mutex
	busy := map[string]int{} // workers by account
	every(ctx, deliveryPoll, func() {
		free := cap(slots) - len(slots)
		if free == 0 {
			return
		}
		var full []string
		mu.Lock()
		for a, n := range busy {
			if n >= accountWorkers {
				full = append(full, a)
			}
		}
		mu.Unlock()
		leases, err := s.store.ClaimWebhooks(ctx, owner, s.now(), deliveryLease, free, full)
		if err != nil {
			if ctx.Err() == nil {
				s.logError("claim webhooks", err)
			}
			return
		}
		for _, l := range leases {
			mu.Lock()
			if busy[l.AccountID] >= accountWorkers { // the claim took more of one account
				mu.Unlock()
				s.store.ReleaseWebhook(ctx, l, s.now())
				continue
			}
			busy[l.AccountID]++
			mu.Unlock()
			slots <- struct{}{}
			go func() {
				defer func() {
					mu.Lock()
					if busy[l.AccountID]--; busy[l.AccountID] == 0 {
						delete(busy, l.AccountID)
					}
					mu.Unlock()
					<-slots
				}()
				s.deliverLease(ctx, client, l)
			}()
		}
	})
	for range deliveryWorkers { // let the deliveries under way record their tries
		slots <- struct{}{}
	}
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fn()
		}
	}
}

func (s *Service) logError(what string, err error) {
	if s.Log != nil {
		s.Log.Error(what, "err", err)
	}
}

// recordEvery is how many deliveries, or how long, a server lets pass before it records where a
// webhook is: recording each delivery in a transaction of its own would bound a webhook to the
// database's commits a second. A server killed in between sends those events again, with the
// same webhook-id, which is what at least once allows.
const (
	recordEvery     = 100
	recordEveryTime = 250 * time.Millisecond
)

// deliverLease delivers the events of leased webhook l in order while the lease lasts, until
// one fails or none is left, and then gives the lease back.
func (s *Service) deliverLease(ctx context.Context, client *http.Client, l devreg.WebhookLease) {
	// The lease is given back, as it is then (each record renews it), with a context of its own:
	// ctx may be ending.
	defer func() { s.store.ReleaseWebhook(context.WithoutCancel(ctx), l, s.now()) }()
	started := time.Now()
	secret, err := s.webhookSecret(l.AccountID, l.Webhook)
	if err != nil {
		s.logError("webhook secret", err)
		return
	}
	var tries []devreg.WebhookDelivery // delivered, not yet recorded
	passed := l.DeliveredSeq           // the last event delivered or passed over
	recorded := time.Now()
	record := func() bool {
		renew := s.now().Add(deliveryLease)
		held, err := s.store.RecordDeliveries(context.WithoutCancel(ctx), l, tries, passed, renew)
		if err != nil {
			s.logError("record webhook deliveries", err)
		}
		if err == nil && held {
			l.Until = renew.Truncate(time.Microsecond)
		}
		tries, recorded = tries[:0], time.Now()
		return err == nil && held
	}
	defer func() {
		if len(tries) > 0 || passed > l.DeliveredSeq {
			record()
		}
	}()
	for ctx.Err() == nil {
		events, err := s.store.Events(ctx, l.AccountID, passed, eventPage)
		if err != nil || len(events) == 0 {
			if err != nil && ctx.Err() == nil {
				s.logError("webhook events", err)
			}
			return
		}
		for _, e := range events {
			if l.Until.Sub(s.now()) <= deliveryTimeout+time.Second || ctx.Err() != nil || time.Since(started) > deliverySlice {
				return // a try now could outlast the lease, or others wait for a turn
			}
			if held, err := s.store.HoldsLease(ctx, l); err != nil || !held {
				tries = tries[:0] // changed meanwhile (a PATCH): the next claim decides
				return
			}
			if len(l.EventTypes) > 0 && !slices.Contains(l.EventTypes, e.Type) {
				passed = e.Seq
				continue
			}
			d := s.post(ctx, client, l.URL, secret, e, l.Attempts+1)
			tries = append(tries, d)
			if !d.Delivered() {
				record() // the failure, and the next try's time
				tries, passed = nil, l.DeliveredSeq
				return
			}
			l.Attempts, passed = 0, e.Seq
			if len(tries) >= recordEvery || time.Since(recorded) >= recordEveryTime {
				if !record() {
					return
				}
				l.DeliveredSeq = passed
			}
		}
	}
}

// post sends event e to the webhook at url, signed with secret as Standard Webhooks says, and
// returns the try as a delivery.
func (s *Service) post(ctx context.Context, client *http.Client, url, secret string, e devreg.Event, attempt int) devreg.WebhookDelivery {
	start := s.Now()
	d := devreg.WebhookDelivery{Time: start.UTC().Truncate(time.Microsecond), EventID: e.ID, EventSeq: e.Seq, EventType: e.Type, Attempt: attempt}
	if err := send(ctx, client, url, secret, e, start, &d); err != nil {
		// The error may quote the receiver's status line, which may hold anything.
		d.Error = devreg.ProblemList{}.Clip(logText(err.Error()))
	}
	d.Answer = logText(d.Answer)
	d.DurationMS = s.Now().Sub(start).Milliseconds()
	return d
}

// logText is s as a delivery's record keeps it: a receiver's answer and status line may hold
// bytes that are not UTF-8, or NUL, which PostgreSQL's text refuses; a try whose record fails to
// be written would be made again at every poll, without a pause, and a taken event sent again.
func logText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// send is post's request, its answer put in d.
func send(ctx context.Context, client *http.Client, url, secret string, e devreg.Event, now time.Time, d *devreg.WebhookDelivery) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := webhook.SetHeaders(req.Header, secret, e.ID, now, body); err != nil {
		return err
	}
	req.Header.Set("User-Agent", "devreg-webhooks")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	d.Status = resp.StatusCode
	d.Answer, _ = webhook.ReadAnswer(resp, deliveryAnswer)
	if !d.Delivered() {
		return fmt.Errorf("the receiver answered %s, not 2xx", resp.Status)
	}
	return nil
}

// pruneBatch is how many events one retention statement deletes: few enough that the accounts'
// writers wait for it no longer than for a registration's batch.
const pruneBatch = 1000

// PruneEvents deletes, every minute until ctx ends, the events older than retention that every
// webhook of their account has delivered. The audit log keeps its entries.
func (s *Service) PruneEvents(ctx context.Context, retention time.Duration) {
	every(ctx, time.Minute, func() {
		if _, err := s.PruneEventsOnce(ctx, retention); err != nil && ctx.Err() == nil {
			s.logError("delete old events", err)
		}
	})
}

// PruneEventsOnce deletes the events older than retention that every enabled webhook of their
// account has delivered, pruneBatch at a time, and returns how many it deleted.
func (s *Service) PruneEventsOnce(ctx context.Context, retention time.Duration) (int64, error) {
	var total int64
	for {
		n, err := s.store.DeleteEventsBefore(ctx, s.now().Add(-retention), pruneBatch)
		total += n
		if err != nil || n < pruneBatch {
			return total, err
		}
	}
}

// EventPublisher sends events to a system that takes every account's events (NATS JetStream).
type EventPublisher interface {
	// Publish returns once the event, whose JSON is body, is stored there.
	Publish(ctx context.Context, e devreg.Event, body []byte) error
}

// publishPoll is how often a server looks for events to publish.
const publishPoll = 250 * time.Millisecond

// PublishEvents publishes every account's events through p, in seq order per account, at least
// once, until ctx ends. Every server runs it: an account's events are leased to one server at a
// time (sink names the cursor), and an event that fails to publish (the server is away) is tried
// again on the next poll, with those after it waiting.
func (s *Service) PublishEvents(ctx context.Context, sink, owner string, p EventPublisher) {
	every(ctx, publishPoll, func() {
		leases, err := s.store.ClaimCursors(ctx, sink, owner, s.now(), deliveryLease, deliveryWorkers)
		if err != nil {
			if ctx.Err() == nil {
				s.logError("claim events to publish", err)
			}
			return
		}
		for _, l := range leases {
			s.publishLease(ctx, p, l)
		}
	})
}

// publishLease publishes the events of leased cursor l, page by page, while the lease lasts and
// publishing works, and then gives the lease back.
func (s *Service) publishLease(ctx context.Context, p EventPublisher, l devreg.CursorLease) {
	seq := l.Seq
	defer func() { s.store.AdvanceCursor(context.WithoutCancel(ctx), l, seq, time.Time{}) }()
	for l.Until.Sub(s.now()) > deliveryTimeout+time.Second && ctx.Err() == nil {
		events, err := s.store.Events(ctx, l.AccountID, seq, eventPage)
		if err != nil || len(events) == 0 {
			return
		}
		for _, e := range events {
			body, err := json.Marshal(e)
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
				err = p.Publish(pctx, e, body)
				cancel()
			}
			if err != nil {
				if ctx.Err() == nil {
					s.logError("publish event", fmt.Errorf("event %s (seq %d of account %s): %w", e.ID, e.Seq, e.AccountID, err))
				}
				return
			}
			seq = e.Seq
		}
		renew := s.now().Add(deliveryLease)
		if held, err := s.store.AdvanceCursor(ctx, l, seq, renew); err != nil || !held {
			return
		}
		l.Until = renew.Truncate(time.Microsecond)
	}
}
