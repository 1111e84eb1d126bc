package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/webhook"
)

// eventPage is how many events a request for events answers at most.
const eventPage = 500

// eventPoll is how often a request that waits for events looks for new ones: events committed
// by any server are in the database, so looking is all a waiting request needs.
const eventPoll = 250 * time.Millisecond

// maxEventWaiters bounds the requests that wait for events at once on this server, and
// maxAccountEventWaiters those of one account, so that one account's flood of long polls cannot
// take every place; one more answers at once with what there is, as a request with wait=0 does.
const (
	maxEventWaiters        = 256
	maxAccountEventWaiters = 32
)

// eventWaiters counts the requests that wait for events, on this server and per account.
type eventWaiters struct {
	mu        sync.Mutex
	total     int
	byAccount map[string]int
}

// enter takes a place for a request of account to wait in, and reports false when the server's
// or the account's places are all taken.
func (w *eventWaiters) enter(account string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total >= maxEventWaiters || w.byAccount[account] >= maxAccountEventWaiters {
		return false
	}
	if w.byAccount == nil {
		w.byAccount = map[string]int{}
	}
	w.total++
	w.byAccount[account]++
	return true
}

// leave gives back a place enter took.
func (w *eventWaiters) leave(account string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total--
	if w.byAccount[account]--; w.byAccount[account] == 0 {
		delete(w.byAccount, account)
	}
}

// Events returns the caller's account's events after seq after that the caller may see
// (devreg.Caller.SeesEvent), at most eventPage, and the seq to ask after next. When there are none
// yet it waits for the first up to wait (at most devreg.MaxEventWait), so that a consumer can
// long-poll: ask again at once with next as after, and miss nothing, since an account's events
// commit in seq order.
func (s *Service) Events(ctx context.Context, after int64, wait time.Duration) (events []devreg.Event, next int64, err error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, 0, err
	}
	if after < 0 {
		return nil, 0, devreg.Errorf(devreg.EBADREQUEST, "after must be a seq of 0 or more; it is %d", after)
	}
	if wait < 0 || wait > devreg.MaxEventWait {
		return nil, 0, devreg.Errorf(devreg.EBADREQUEST, "wait must be 0 to %d seconds; it is %s", int(devreg.MaxEventWait.Seconds()), wait)
	}
	deadline := time.Now().Add(wait)
	events = []devreg.Event{} // none is an empty list, not null
	waiting := false
	defer func() {
		if waiting {
			s.eventWaiters.leave(c.AccountID)
		}
	}()
	for {
		page, err := s.store.Events(ctx, c.AccountID, after, eventPage)
		if err != nil {
			return nil, 0, err
		}
		events = events[:0]
		for _, e := range page {
			if c.SeesEvent(e) {
				events = append(events, e)
			}
		}
		if len(page) > 0 {
			after = page[len(page)-1].Seq // past the events the caller may not see, too
		}
		if len(events) > 0 || len(page) == eventPage || time.Until(deadline) <= 0 {
			return events, after, nil
		}
		if !waiting {
			if !s.eventWaiters.enter(c.AccountID) {
				return events, after, nil
			}
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-time.After(min(eventPoll, time.Until(deadline))):
		}
	}
}

// webhookAD is the additional data a webhook's secret is sealed with (credential.Seal): it binds
// the sealed secret to its row.
func webhookAD(accountID, id string) []byte { return credential.SealContext("webhook", accountID, id) }

// checkWebhook checks a webhook's URL and event types, as given or changed.
func (s *Service) checkWebhook(ctx context.Context, rawURL string, types []string) error {
	if err := s.checkWebhookURL(ctx, rawURL); err != nil {
		return err
	}
	return checkEventTypes(types)
}

// checkWebhookURL checks a webhook's URL, as given or changed, against the guard.
func (s *Service) checkWebhookURL(ctx context.Context, rawURL string) error {
	if err := s.WebhookGuard.CheckURL(ctx, rawURL); err != nil {
		return devreg.Errorf(devreg.EINVALID, "url: %v", err)
	}
	return nil
}

// maxWebhookTypes is how many event types a webhook may list, as the API's document says: each
// delivery looks its event up in the list, and every listing of webhooks shows it.
const maxWebhookTypes = 64

// checkEventTypes checks a webhook's event types, as given or changed.
func checkEventTypes(types []string) error {
	if len(types) > maxWebhookTypes {
		return devreg.Errorf(devreg.EINVALID, "event_types lists %d types; at most %d are allowed (there are %d types)", len(types), maxWebhookTypes, len(devreg.EventTypes))
	}
	for _, t := range types {
		if !knownEventType(t) {
			return devreg.Errorf(devreg.EINVALID, "event_types: %q is not an event type; the types are %s", devreg.ProblemList{}.Clip(t), strings.Join(devreg.EventTypes, ", "))
		}
	}
	return nil
}

func knownEventType(t string) bool { return slices.Contains(devreg.EventTypes, t) }

// CreateWebhook makes a webhook of the caller's account that delivers the events from now on,
// and returns it with its signing secret, which is shown this once: devreg keeps it sealed.
func (s *Service) CreateWebhook(ctx context.Context, rawURL string, types []string, enabled bool) (devreg.Webhook, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Webhook{}, err
	}
	if types == nil {
		types = []string{}
	}
	if err := s.checkWebhook(ctx, rawURL, types); err != nil {
		return devreg.Webhook{}, err
	}
	secret, err := webhook.NewSecret()
	if err != nil {
		return devreg.Webhook{}, err
	}
	key := s.keys.Current()
	w := devreg.Webhook{ID: credential.RandomID("whk", 16), URL: rawURL, EventTypes: types, Enabled: enabled, CreatedAt: s.now(), SealKeyID: key.ID}
	w.SealedSecret = credential.Seal(key, []byte(secret), webhookAD(c.AccountID, w.ID))
	ctx = s.audited(ctx, actorOf(c), "webhook.create", devreg.AuditObject{Type: "webhook", ID: w.ID},
		map[string]any{"url": redactURL(rawURL), "event_types": types, "enabled": enabled})
	if err := s.store.CreateWebhook(ctx, c.AccountID, &w); err != nil {
		return devreg.Webhook{}, err
	}
	w.Secret = secret
	return w, nil
}

// redactURL is a webhook URL as the audit log and events keep it: its scheme and host, without
// its path and query, which may hold a receiver's token (Slack and Discord put it in the path),
// and which every other webhook would otherwise receive with the webhook.create event.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	kept := u.Scheme + "://" + u.Host
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		kept += "/…"
	}
	return kept
}

// Webhooks lists the caller's account's webhooks.
func (s *Service) Webhooks(ctx context.Context) ([]devreg.Webhook, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, err
	}
	return s.store.Webhooks(ctx, c.AccountID)
}

// Webhook returns one webhook of the caller's account.
func (s *Service) Webhook(ctx context.Context, id string) (devreg.Webhook, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Webhook{}, err
	}
	if !opaqueID(id) {
		return devreg.Webhook{}, notFound("webhook", id)
	}
	return s.store.Webhook(ctx, c.AccountID, id)
}

// UpdateWebhook changes a webhook of the caller's account.
func (s *Service) UpdateWebhook(ctx context.Context, id string, u devreg.WebhookUpdate) (devreg.Webhook, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Webhook{}, err
	}
	old, err := s.Webhook(ctx, id)
	if err != nil {
		return devreg.Webhook{}, err
	}
	rawURL, types := old.URL, old.EventTypes
	if u.URL != nil {
		rawURL = *u.URL
	}
	if u.EventTypes != nil {
		if *u.EventTypes == nil {
			*u.EventTypes = []string{}
		}
		types = *u.EventTypes
	}
	// Only what changes is checked: a URL the guard would refuse now (the server restarted
	// without --webhook-allow-private, or the host no longer resolves), or a type a later
	// version no longer makes, must not keep the webhook from being disabled or moved.
	if u.URL != nil {
		if err := s.checkWebhookURL(ctx, rawURL); err != nil {
			return devreg.Webhook{}, err
		}
	}
	if u.EventTypes != nil {
		if err := checkEventTypes(types); err != nil {
			return devreg.Webhook{}, err
		}
	}
	if u.ResumeAfter != nil && *u.ResumeAfter < 0 {
		return devreg.Webhook{}, devreg.Errorf(devreg.EINVALID, "resume_after must be a seq of 0 or more; it is %d", *u.ResumeAfter)
	}
	before, after := map[string]any{}, map[string]any{}
	if u.URL != nil {
		before["url"], after["url"] = redactURL(old.URL), redactURL(rawURL)
	}
	if u.EventTypes != nil {
		before["event_types"], after["event_types"] = old.EventTypes, types
	}
	if u.Enabled != nil {
		before["enabled"], after["enabled"] = old.Enabled, *u.Enabled
	}
	if u.ResumeAfter != nil {
		before["delivered_seq"], after["delivered_seq"] = old.DeliveredSeq, *u.ResumeAfter
	}
	ctx = s.audited(ctx, actorOf(c), "webhook.update", devreg.AuditObject{Type: "webhook", ID: id}, change(before, after))
	return s.store.UpdateWebhook(ctx, c.AccountID, id, u)
}

// DeleteWebhook deletes a webhook of the caller's account; it delivers nothing more.
func (s *Service) DeleteWebhook(ctx context.Context, id string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	w, err := s.Webhook(ctx, id)
	if err != nil {
		return err
	}
	ctx = s.audited(ctx, actorOf(c), "webhook.delete", devreg.AuditObject{Type: "webhook", ID: id}, map[string]any{"url": redactURL(w.URL)})
	return s.store.DeleteWebhook(ctx, c.AccountID, id)
}

// WebhookDeliveries returns a webhook's latest tries, newest first.
func (s *Service) WebhookDeliveries(ctx context.Context, id string) ([]devreg.WebhookDelivery, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, err
	}
	if !opaqueID(id) {
		return nil, notFound("webhook", id)
	}
	return s.store.WebhookDeliveries(ctx, c.AccountID, id)
}

// EventTest is the type of the event TestWebhook sends: it is in no account's events.
const EventTest = "webhook.test"

// TestWebhook sends a webhook one event of type webhook.test (seq 0, outside the account's
// events) at once, signed as every delivery is, and returns the try, which the webhook's
// deliveries list too. It works on a disabled webhook as well: to check a receiver before
// enabling it again.
func (s *Service) TestWebhook(ctx context.Context, id string) (devreg.WebhookDelivery, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.WebhookDelivery{}, err
	}
	w, err := s.Webhook(ctx, id)
	if err != nil {
		return devreg.WebhookDelivery{}, err
	}
	secret, err := s.webhookSecret(c.AccountID, w)
	if err != nil {
		return devreg.WebhookDelivery{}, err
	}
	data, _ := json.Marshal(map[string]any{"webhook_id": w.ID, "message": "a test event sent from devreg; it changes nothing"})
	e := devreg.Event{ID: credential.RandomID("evt", 16), Type: EventTest, Time: s.now(), AccountID: c.AccountID, Data: data}
	client := s.WebhookGuard.Client(deliveryTimeout)
	defer client.CloseIdleConnections()
	d := s.post(ctx, client, w.URL, secret, e, 1)
	return d, s.store.AddWebhookDelivery(context.WithoutCancel(ctx), c.AccountID, w.ID, d)
}

// webhookSecret opens the signing secret of w, of account accountID.
func (s *Service) webhookSecret(accountID string, w devreg.Webhook) (string, error) {
	secret, err := s.keys.Open(w.SealKeyID, w.SealedSecret, webhookAD(accountID, w.ID))
	if err != nil {
		return "", fmt.Errorf("webhook %s: %w", w.ID, err)
	}
	return string(secret), nil
}
