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

	"devreg"
	"devreg/client"
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

// TestWebhookDeliverySurvivesKilledServers: two servers on one PostgreSQL database deliver
// 10,000 events (first connections of 10,000 devices logging in through a broker at both) to a
// webhook while first one server and then the other is killed with SIGKILL (a third takes over):
// every committed event arrives, first arrivals in seq order, and an event that arrives twice
// does so with its own webhook-id.
func TestWebhookDeliverySurvivesKilledServers(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", "--database", db)
	args := []string{"--database", db, "--webhook-allow-private", "--api-rate-limit", "100000"}
	url1, srv1 := serve(t, dir, args...)
	url2, srv2 := serve(t, dir, args...)

	rcv := &hookReceiver{}
	hook := httptest.NewServer(rcv)
	defer hook.Close()
	c := client.New(url1, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", url1+"/api/v1/webhooks", strings.NewReader(`{"url": "`+hook.URL+`/events"}`))
	req.Header.Set("Authorization", "Bearer "+acme.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var wh devreg.Webhook
	if json.NewDecoder(resp.Body).Decode(&wh); resp.StatusCode != 201 {
		t.Fatalf("create webhook: HTTP %d", resp.StatusCode)
	}
	resp.Body.Close()
	const n = 10_000
	if _, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot(0, n, "secret")), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	broker := newAPIKey(t, url1, acme.APIKey, "broker", "broker")

	// The devices log in through a broker that asks both servers.
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
	waitUntil := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s (%d events received)", what, len(rcv.received()))
			}
		}
	}
	waitUntil("2,000 deliveries", 60*time.Second, func() bool { return len(rcv.received()) >= 2000 })
	srv1.Process.Kill()
	srv1.Wait()
	url3, _ := serve(t, dir, args...)
	waitUntil("5,000 deliveries", 60*time.Second, func() bool { return len(rcv.received()) >= 5000 })
	srv2.Process.Kill()
	srv2.Wait()
	logins.Wait()

	// Every event committed after the webhook's creation arrives.
	var want []devreg.Event
	for after := wh.DeliveredSeq; ; {
		var page struct {
			Events    []devreg.Event `json:"events"`
			NextAfter int64          `json:"next_after"`
		}
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/events?after=%d", url3, after), nil)
		req.Header.Set("Authorization", "Bearer "+acme.APIKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if len(page.Events) == 0 {
			break
		}
		want, after = append(want, page.Events...), page.NextAfter
	}
	if len(want) < n/2 {
		t.Fatalf("only %d events committed; the logins did not make first connections", len(want))
	}
	waitUntil("every committed event", 90*time.Second, func() bool {
		seen := map[int64]bool{}
		for _, r := range rcv.received() {
			seen[r.event.Seq] = true
		}
		for _, e := range want {
			if !seen[e.Seq] {
				return false
			}
		}
		return true
	})

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
	for _, e := range want {
		if ids[e.Seq] != e.ID {
			t.Errorf("event %d (%s) arrived as %q", e.Seq, e.ID, ids[e.Seq])
		}
	}
	t.Logf("%d events committed, %d deliveries (%d sent again after a kill)", len(want), len(got), dups)
}
