package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"devreg"
	"devreg/client"
	"devreg/internal/natstest"
	"devreg/internal/pgtest"
)

// hookReceiver keeps, in order, the events webhooks POST to it.
type hookReceiver struct {
	mu  sync.Mutex
	got []receivedEvent
}

type receivedEvent struct {
	webhookID string
	event     devreg.Event
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var e devreg.Event
	if json.Unmarshal(body, &e) != nil {
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, receivedEvent{r.Header.Get("webhook-id"), e})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookReceiver) received() []receivedEvent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]receivedEvent{}, h.got...)
}

// killedServers is what eventsUnderKills leaves: the server that took over, the account's key,
// and every event the account committed after the setup.
type killedServers struct {
	url, key  string
	committed []devreg.Event
}

// eventsUnderKills starts two servers on one PostgreSQL database with args; setup prepares the
// account (after which events count), then 10,000 devices registered at once log in for the
// first time through a broker that asks both servers, which makes 10,000 events. Once
// delivered() reaches 2,000 the first server is killed with SIGKILL and a third started; at 5,000
// the second is killed too.
func eventsUnderKills(t *testing.T, args []string, setup func(url, key string), delivered func() int) killedServers {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", "--database", db)
	args = append([]string{"--database", db, "--api-rate-limit", "100000"}, args...)
	url1, srv1 := serve(t, dir, args...)
	url2, srv2 := serve(t, dir, args...)

	c := client.New(url1, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	setup(url1, acme.APIKey)
	from := eventPage(t, url1, acme.APIKey, 0).NextAfter
	const n = 10_000
	if _, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot(0, n, "secret")), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	broker := newAPIKey(t, url1, acme.APIKey, "broker", "broker")

	var logins sync.WaitGroup
	for w := range 8 {
		logins.Go(func() {
			for i := w; i < n; i += 8 {
				url := []string{url1, url2}[i%2]
				body := fmt.Sprintf(`{"username": "unit-%05d", "password": "secret-%05d", "clientid": "unit-%05d"}`, i, i, i)
				req, _ := http.NewRequest("POST", url+"/broker/v1/emqx/authn", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+broker)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := http.DefaultClient.Do(req); err == nil { // a killed server refuses
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	waitUntil(t, "2,000 deliveries", 60*time.Second, delivered, 2000)
	srv1.Process.Kill()
	srv1.Wait()
	url3, _ := serve(t, dir, args...)
	waitUntil(t, "5,000 deliveries", 60*time.Second, delivered, 5000)
	srv2.Process.Kill()
	srv2.Wait()
	logins.Wait()

	k := killedServers{url: url3, key: acme.APIKey}
	for after := from; ; {
		page := eventPage(t, url3, acme.APIKey, after)
		if len(page.Events) == 0 {
			break
		}
		k.committed, after = append(k.committed, page.Events...), page.NextAfter
	}
	if len(k.committed) < n/2 {
		t.Fatalf("only %d events committed; the logins did not make first connections", len(k.committed))
	}
	return k
}

// waitUntil waits until count() reaches want.
func waitUntil(t *testing.T, what string, limit time.Duration, count func() int, want int) {
	t.Helper()
	for deadline := time.Now().Add(limit); count() < want; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s (%d of %d)", what, count(), want)
		}
	}
}

type eventsPage struct {
	Events    []devreg.Event `json:"events"`
	NextAfter int64          `json:"next_after"`
}

// eventPage is GET /api/v1/events?after=after.
func eventPage(t *testing.T, url, key string, after int64) eventsPage {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/events?after=%d", url, after), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page eventsPage
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/events: HTTP %d, %v", resp.StatusCode, err)
	}
	return page
}

// TestWebhookDeliverySurvivesKilledServers: two servers on one PostgreSQL database deliver
// 10,000 events to a webhook while first one server and then the other is killed with SIGKILL (a
// third takes over): every committed event arrives, first arrivals in seq order, and an event
// that arrives twice does so with its own webhook-id.
func TestWebhookDeliverySurvivesKilledServers(t *testing.T) {
	rcv := &hookReceiver{}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	k := eventsUnderKills(t, []string{"--webhook-allow-private"}, func(url, key string) {
		req, _ := http.NewRequest("POST", url+"/api/v1/webhooks", strings.NewReader(`{"url": "`+hook.URL+`/events"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Body.Close(); resp.StatusCode != 201 {
			t.Fatalf("create webhook: HTTP %d", resp.StatusCode)
		}
	}, func() int { return len(rcv.received()) })

	waitUntil(t, "every committed event", 90*time.Second, func() int {
		seen := map[int64]bool{}
		for _, r := range rcv.received() {
			seen[r.event.Seq] = true
		}
		n := 0
		for _, e := range k.committed {
			if seen[e.Seq] {
				n++
			}
		}
		return n
	}, len(k.committed))

	got := rcv.received()
	ids := map[int64]string{}
	var last int64
	dups := 0
	for _, r := range got {
		if id, ok := ids[r.event.Seq]; ok {
			dups++
			if id != r.webhookID {
				t.Errorf("event %d arrived again with webhook-id %s, first with %s", r.event.Seq, r.webhookID, id)
			}
			continue
		}
		if r.event.Seq < last {
			t.Errorf("event %d arrived first after event %d: out of order", r.event.Seq, last)
		}
		ids[r.event.Seq], last = r.webhookID, r.event.Seq
		if r.webhookID != r.event.ID {
			t.Errorf("event %d has webhook-id %s, want its ID %s", r.event.Seq, r.webhookID, r.event.ID)
		}
	}
	for _, e := range k.committed {
		if ids[e.Seq] != e.ID {
			t.Errorf("event %d (%s) arrived as %q", e.Seq, e.ID, ids[e.Seq])
		}
	}
	t.Logf("%d events committed, %d deliveries (%d sent again after a kill)", len(k.committed), len(got), dups)
}

// TestNATSPublishingSurvivesKilledServers: two servers on one PostgreSQL database publish 10,000
// events to JetStream while first one and then the other is killed with SIGKILL (a third takes
// over): the stream holds every committed event exactly once, in seq order, on its subject and
// with its ID as Nats-Msg-Id (what a killed server published but had not recorded is sent again,
// and JetStream takes it as a duplicate).
func TestNATSPublishingSurvivesKilledServers(t *testing.T) {
	ctx := context.Background()
	ns := natstest.New(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var streamed []*jetstream.RawStreamMsg // the stream's messages, in its order, read so far
	read := func() int {
		s, err := js.Stream(ctx, "DEVREG_EVENTS")
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return len(streamed)
		}
		for seq := uint64(len(streamed)) + 1; seq <= info.State.LastSeq; seq++ {
			msg, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("stream message %d: %v", seq, err)
			}
			streamed = append(streamed, msg)
		}
		return len(streamed)
	}
	k := eventsUnderKills(t, []string{"--events-nats", ns.URL()}, func(string, string) {}, read)

	first := k.committed[0].Seq
	byID := map[string]devreg.Event{}
	for _, e := range k.committed {
		byID[e.ID] = e
	}
	var got []devreg.Event // the committed events, in the stream's order
	waitUntil(t, "every committed event in the stream", 90*time.Second, func() int {
		read()
		got = got[:0]
		for _, msg := range streamed {
			if e, ok := byID[msg.Header.Get("Nats-Msg-Id")]; ok {
				got = append(got, e)
			}
		}
		return len(got)
	}, len(k.committed))

	seen := map[string]bool{}
	for i, msg := range streamed {
		id := msg.Header.Get("Nats-Msg-Id")
		if seen[id] {
			t.Errorf("stream message %d: event %s is in the stream twice", i+1, id)
		}
		seen[id] = true
		var e devreg.Event
		if err := json.Unmarshal(msg.Data, &e); err != nil || e.ID != id || msg.Subject != "devreg."+e.AccountID+"."+e.Type {
			t.Errorf("stream message %d on %s, Nats-Msg-Id %s: %s", i+1, msg.Subject, id, msg.Data)
		}
		if c, ok := byID[id]; e.Seq >= first && (!ok || c.Seq != e.Seq || c.Type != e.Type) {
			t.Errorf("stream message %d is event %d %s %s, which the account did not commit", i+1, e.Seq, e.Type, id)
		}
	}
	for i, e := range got {
		if e.Seq != first+int64(i) {
			t.Fatalf("the stream's %dth committed event is event %d, want %d: out of order or missing", i+1, e.Seq, first+int64(i))
		}
	}
	t.Logf("%d events committed, %d messages in the stream", len(k.committed), len(streamed))
}
