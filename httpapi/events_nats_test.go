package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"devreg"
	"devreg/server"
)

// natsServer is a private nats-server with JetStream, on a port of its own, with its store in a
// folder that outlives a restart.
type natsServer struct {
	t     *testing.T
	bin   string
	port  int
	store string
	cmd   *exec.Cmd
}

// startNATS starts a nats-server -js; the test fails, never skips, where none can run.
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nats-server"); err != nil {
			t.Fatalf("this test needs nats-server (apt-get install -y nats-server): %v", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &natsServer{t: t, bin: bin, port: port, store: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

func (n *natsServer) start() {
	n.t.Helper()
	n.cmd = exec.Command(n.bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-sd", n.store)
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port)); err == nil {
			c.Close()
			return
		}
	}
	n.t.Fatal("nats-server did not start")
}

func (n *natsServer) stop() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Kill()
		n.cmd.Wait()
		n.cmd = nil
	}
}

// TestEventsToJetStream: with --events-nats, every event reaches JetStream on subject
// devreg.<account>.<type> with its ID as Nats-Msg-Id, in order; a NATS server that goes away and
// comes back loses nothing; an event sent again is taken once.
func TestEventsToJetStream(t *testing.T) { forEachStore(t, testEventsToJetStream) }

func testEventsToJetStream(t *testing.T, database string) {
	ns := startNATS(t)
	e := newEnvWith(t, database, func(c *server.Config) { c.EventsNATS = ns.url() })
	e.createType(t, e.admin, "Lock", 0)

	nc, err := nats.Connect(ns.url(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
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
	ns.stop()
	e.createType(t, e.admin, "Gate", 0)
	time.Sleep(time.Second)
	ns.start()
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
