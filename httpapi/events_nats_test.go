package httpapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"devreg"
	"devreg/internal/natstest"
	"devreg/internal/pgtest"
	"devreg/server"
)

// TestEventsToJetStream: with --events-nats, every event reaches JetStream on subject
// devreg.<account>.<type> with its ID as Nats-Msg-Id, in order; a NATS server that goes away and
// comes back loses nothing; an event sent again is taken once.
func TestEventsToJetStream(t *testing.T) { pgtest.Each(t, testEventsToJetStream) }

func testEventsToJetStream(t *testing.T, database string) {
	ns := natstest.New(t)
	e := newEnvWith(t, database, func(c *server.Config) { c.EventsNATS = ns.URL() })
	e.createType(t, e.admin, "Lock", 0)

	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	count := func() uint64 {
		s, err := js.Stream(ctx, "DEVREG_EVENTS")
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	all := e.events(t, e.admin, 0, 0).Events
	waitFor(t, "the events in the stream", func() bool { return count() > uint64(len(all)) })

	// The server goes away; a change meanwhile is published once it is back.
	ns.Stop()
	e.createType(t, e.admin, "Gate", 0)
	time.Sleep(time.Second)
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	all = e.events(t, e.admin, 0, 0).Events
	defer func() {
		if t.Failed() {
			t.Logf("server log:\n%s", e.log.String())
		}
	}()
	others := len(e.events(t, e.other, 0, 0).Events) // the other account's events go there too
	waitFor(t, "the event made while NATS was away", func() bool { return count() == uint64(len(all)+others) })

	s, err := js.Stream(ctx, "DEVREG_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	var mine []*jetstream.RawStreamMsg // this account's messages, in the stream's order
	for i := range count() {
		msg, err := s.GetMsg(ctx, i+1)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(msg.Subject, "devreg."+e.accountID+".") {
			mine = append(mine, msg)
		}
	}
	if len(mine) != len(all) {
		t.Fatalf("the stream has %d messages of the account, want its %d events", len(mine), len(all))
	}
	for i, want := range all {
		msg := mine[i]
		var got devreg.Event
		json.Unmarshal(msg.Data, &got)
		if msg.Subject != "devreg."+e.accountID+"."+want.Type || msg.Header.Get("Nats-Msg-Id") != want.ID || got.ID != want.ID || got.Seq != want.Seq {
			t.Errorf("the account's message %d: %s, id %q, event %s seq %d; want %s seq %d on devreg.%s.%s", i+1, msg.Subject,
				msg.Header.Get("Nats-Msg-Id"), got.ID, got.Seq, want.ID, want.Seq, e.accountID, want.Type)
		}
	}
	// Sent again (as by a server killed before it recorded the publish), an event is a duplicate.
	ack, err := js.Publish(ctx, "devreg."+e.accountID+"."+all[0].Type, []byte(`{}`), jetstream.WithMsgID(all[len(all)-1].ID))
	if err != nil || !ack.Duplicate || count() != uint64(len(all)+others) {
		t.Errorf("an event sent again: ack %+v, %v, %d messages; want a duplicate and %d", ack, err, count(), len(all)+others)
	}
}
