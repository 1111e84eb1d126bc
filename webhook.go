package devreg

import "time"

// Webhook is an account's receiver of events: each event of its types (all when EventTypes is
// empty) is POSTed to URL, signed as the Standard Webhooks specification says, at least once and
// in the account's order. A receiver that keeps failing is tried with growing pauses for
// WebhookGiveUp, then disabled.
type Webhook struct {
	ID         string    `json:"id"`
	URL        string    `json:"url"`
	EventTypes []string  `json:"event_types"`
	Enabled    bool      `json:"enabled"`
	CreatedAt  time.Time `json:"created_at"`
	// DeliveredSeq is the seq of the account's last event delivered (or passed over, not being
	// of the webhook's types); the next delivery is of a later one.
	DeliveredSeq int64 `json:"delivered_seq"`
	// Attempts counts the failed tries of the next event; FailingSince is when the first of
	// them failed, NextAttempt when the next try is due.
	Attempts     int        `json:"attempts"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	NextAttempt  *time.Time `json:"next_attempt,omitempty"`
	// DisabledReason says why devreg disabled the webhook, when it did.
	DisabledReason string `json:"disabled_reason,omitempty"`
	// Secret is the signing secret ("whsec_…"), in the answer to the webhook's creation only.
	Secret string `json:"secret,omitempty"`

	SealKeyID    string `json:"-"` // the server key the secret is sealed with
	SealedSecret []byte `json:"-"`
}

// WebhookUpdate changes a webhook; nil fields stay. Enabling a webhook clears its failures and
// tries its next event at once.
type WebhookUpdate struct {
	URL        *string
	EventTypes *[]string
	Enabled    *bool
	// ResumeAfter moves the webhook to deliver the events after this seq next: back to send
	// events again, forward to skip them.
	ResumeAfter *int64
}

// WebhookLease is a webhook claimed for delivery by one server, Owner, until Until: each webhook
// is delivered by one server at a time.
type WebhookLease struct {
	Webhook
	AccountID string
	Owner     string
	Until     time.Time
}

// CursorLease is an account's place in a sink that takes every account's events (NATS), leased
// to one server, Owner, until Until: Seq is the last event published.
type CursorLease struct {
	Sink, AccountID, Owner string
	Seq                    int64
	Until                  time.Time
}

// WebhookDelivery is one try to deliver an event to a webhook, and what came back.
type WebhookDelivery struct {
	Time       time.Time `json:"time"`
	EventID    string    `json:"event_id"`
	EventSeq   int64     `json:"event_seq"`
	EventType  string    `json:"event_type"`
	Attempt    int       `json:"attempt"`
	Status     int       `json:"status"` // the receiver's HTTP status; 0 when none came
	Error      string    `json:"error,omitempty"`
	Answer     string    `json:"answer,omitempty"` // the start of the receiver's answer
	DurationMS int64     `json:"duration_ms"`
}

// Delivered reports whether the receiver took the event: any 2xx answer.
func (d WebhookDelivery) Delivered() bool { return d.Status >= 200 && d.Status < 300 }

const (
	// WebhookGiveUp is how long a webhook's event is tried before the webhook is disabled.
	WebhookGiveUp = 72 * time.Hour
	// MaxWebhooks is how many webhooks an account may have.
	MaxWebhooks = 20
	// MaxWebhookDeliveries is how many of a webhook's latest tries are kept.
	MaxWebhookDeliveries = 100
)

// WebhookBackoff returns how long to wait before try attempts+1 of an event that failed attempts
// times: 5 s doubling to at most an hour (5 s, 10 s, 20 s, … 1 h), so that a receiver that is down
// for a day is tried some thirty times, not thousands.
func WebhookBackoff(attempts int) time.Duration {
	d := 5 * time.Second
	for i := 1; i < attempts && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}
