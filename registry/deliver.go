package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/webhook"
)

const (
	// deliveryPoll is how often a server looks for webhooks with events to deliver.
	deliveryPoll = 500 * time.Millisecond
	// deliveryWorkers bounds the webhooks a server delivers to at once, and so the connections
	// it holds to receivers, however slow they are.
	deliveryWorkers = 8
	// deliveryTimeout bounds one try: a receiver that answers more slowly has failed it.
	deliveryTimeout = 10 * time.Second
	// deliveryLease is how long a server holds a webhook it delivers to; it stops taking new
	// events a try's length before the end. A server killed mid-delivery holds it no longer.
	deliveryLease = 60 * time.Second
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
	tick := time.NewTicker(deliveryPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			for range deliveryWorkers { // let the deliveries under way record their tries
				slots <- struct{}{}
			}
			return
		case <-tick.C:
		}
		free := cap(slots) - len(slots)
		if free == 0 {
			continue
		}
		leases, err := s.store.ClaimWebhooks(ctx, owner, s.now(), deliveryLease, free)
		if err != nil {
			if ctx.Err() == nil {
				s.logError("claim webhooks", err)
			}
			continue
		}
		for _, l := range leases {
			slots <- struct{}{}
			go func() {
				defer func() { <-slots }()
				s.deliverLease(ctx, client, l)
			}()
		}
	}
}

func (s *Service) logError(what string, err error) {
	if s.Log != nil {
		s.Log.Error(what, "err", err)
	}
}

// deliverLease delivers the events of leased webhook l in order while the lease lasts, until
// one fails or none is left, and then gives the lease back.
func (s *Service) deliverLease(ctx context.Context, client *http.Client, l devreg.WebhookLease) {
	// The lease is given back with a context of its own: ctx may be ending.
	defer s.store.ReleaseWebhook(context.WithoutCancel(ctx), l)
	secret, err := s.webhookSecret(l.AccountID, l.Webhook)
	if err != nil {
		s.logError("webhook secret", err)
		return
	}
	after := l.DeliveredSeq
	for time.Until(l.Until) > 2*deliveryTimeout && ctx.Err() == nil {
		events, err := s.store.Events(ctx, l.AccountID, after, eventPage)
		if err != nil || len(events) == 0 {
			if err != nil && ctx.Err() == nil {
				s.logError("webhook events", err)
			}
			return
		}
		passed := after
		for _, e := range events {
			if len(l.EventTypes) > 0 && !slices.Contains(l.EventTypes, e.Type) {
				passed = e.Seq
				continue
			}
			d := s.post(ctx, client, l.URL, secret, e, l.Attempts+1)
			held, err := s.store.RecordDelivery(context.WithoutCancel(ctx), l, &d, passed)
			if err != nil {
				s.logError("record webhook delivery", err)
				return
			}
			if !held || !d.Delivered() {
				return
			}
			l.Attempts, after, passed = 0, e.Seq, e.Seq
			if time.Until(l.Until) <= 2*deliveryTimeout || ctx.Err() != nil {
				return
			}
		}
		if passed > after { // the page ends with events not of the webhook's types
			if held, err := s.store.RecordDelivery(ctx, l, nil, passed); err != nil || !held {
				return
			}
			after = passed
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
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := s.PruneEventsOnce(ctx, retention); err != nil && ctx.Err() == nil {
			s.logError("delete old events", err)
		}
	}
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
