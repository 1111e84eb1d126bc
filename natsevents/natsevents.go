// Package natsevents publishes devreg's events to NATS JetStream: each event to subject
// devreg.<account_id>.<event type>, with the event's ID as its Nats-Msg-Id, so that JetStream's
// deduplication takes an event sent again (after a crash between the publish and the record of
// it) once.
package natsevents

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"devreg"
)

// Stream is the stream devreg makes for its events when no stream takes them: subjects
// devreg.>, kept on disk, with a deduplication window of DuplicateWindow.
const Stream = "DEVREG_EVENTS"

// DuplicateWindow is how long the stream devreg makes remembers message IDs: longer than a
// server's lease on an account's events (a minute), so that whatever a killed server published
// and did not record is recognised when another server publishes it again.
const DuplicateWindow = 10 * time.Minute

// Publisher publishes events to a NATS server with JetStream.
type Publisher struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu     sync.Mutex
	stream bool // a stream takes devreg.> (found or made)
}

// Dial connects to the NATS server at url, and keeps reconnecting, for good, whenever it goes
// away: events wait in the database meanwhile.
func Dial(url string) (*Publisher, error) {
	nc, err := nats.Connect(url, nats.Name("devreg"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second))
	if err != nil {
		return nil, fmt.Errorf("--events-nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Publisher{nc: nc, js: js}, nil
}

// Subject returns the subject event e is published to.
func Subject(e devreg.Event) string { return "devreg." + e.AccountID + "." + e.Type }

// Publish sends event e, whose JSON is body, and returns once JetStream has stored it (or known
// it for a duplicate).
func (p *Publisher) Publish(ctx context.Context, e devreg.Event, body []byte) error {
	if err := p.ensureStream(ctx); err != nil {
		return err
	}
	_, err := p.js.Publish(ctx, Subject(e), body, jetstream.WithMsgID(e.ID))
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		p.mu.Lock()
		p.stream = false // the stream went away: look again next time
		p.mu.Unlock()
	}
	return err
}

// ensureStream makes Stream unless a stream takes devreg's subjects already (one the operator
// made, with limits of their own).
func (p *Publisher) ensureStream(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stream {
		return nil
	}
	if name, err := p.js.StreamNameBySubject(ctx, "devreg.>"); err == nil && name != "" {
		p.stream = true
		return nil
	}
	_, err := p.js.CreateStream(ctx, jetstream.StreamConfig{Name: Stream, Subjects: []string{"devreg.>"}, Storage: jetstream.FileStorage,
		Duplicates: DuplicateWindow, Description: "devreg's events: devreg.<account_id>.<event type>"})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("make JetStream stream %s for devreg.>: %w", Stream, err)
	}
	p.stream = true
	return nil
}

// Close ends the connection.
func (p *Publisher) Close() { p.nc.Close() }
