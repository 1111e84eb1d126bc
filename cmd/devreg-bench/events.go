package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"devreg"
	"devreg/internal/natstest"
	"devreg/webhook"
)

var eventsN = flag.Int("events-n", 10_000, "with events: how many events each run delivers")

// runEvents measures the delivery of events (issue 26: keep up with 2,000 events/s to a local
// webhook receiver and to JetStream). Each run makes a fresh registry (SQLite, and PostgreSQL
// with -postgres) whose -events-n devices connect through a broker for the first time: as many
// device.first_connection events. Then, measured:
//
//   - a webhook made after them, moved back to deliver them all (PATCH resume_after), until an
//     in-process receiver has every one; against the baseline: a loop in this process that POSTs
//     the same events, signed the same way, one at a time in order, to the same receiver over one
//     kept-alive connection (the limit of delivering in order, without a database);
//   - the server's publishing of the same events to a private nats-server -js, from the first
//     message in the stream to the last; against the baseline: nats.go publishing the same
//     bodies with the same Nats-Msg-Id, one at a time, each waiting for JetStream's ack.
func runEvents(cfg config) error {
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ns, err := natstest.Start(filepath.Join(b.dir, "nats"))
	if err != nil {
		return err
	}
	defer ns.Stop()
	ctx := context.Background()
	for _, db := range []string{"SQLite", "PostgreSQL"} {
		if db == "PostgreSQL" && b.pg == "" {
			continue
		}
		var hook, hookBase, js, jsBase []measure
		for run := range b.runs {
			var args []string
			if db == "PostgreSQL" {
				url, drop, err := b.newPGDatabase(ctx)
				if err != nil {
					return err
				}
				defer drop()
				args = []string{"--database", url}
			}
			h, hb, j, jb, err := b.eventsRun(ctx, ns, fmt.Sprintf("events-%s-%d", db, run), args...)
			if err != nil {
				return err
			}
			hook, hookBase, js, jsBase = append(hook, h), append(hookBase, hb), append(js, j), append(jsBase, jb)
		}
		rate := func(m measure) float64 { return m.value }
		ratio := func(m measure) float64 { return m.ratio }
		fmt.Printf("devreg-bench events: %d events a run, one %s server, %d runs (median)\n", *eventsN, db, b.runs)
		fmt.Printf("  to a webhook on loopback:   %7.0f events/s; baseline (signed POSTs in order, no database) %7.0f events/s; devreg/baseline %.2f (issue 26: at least 2,000 events/s)\n",
			medianBy(hook, rate), medianBy(hookBase, rate), medianBy(hook, ratio))
		fmt.Printf("  to JetStream (nats-server): %7.0f events/s; baseline (nats.go publishes, each acked)   %7.0f events/s; devreg/baseline %.2f (issue 26: at least 2,000 events/s)\n",
			medianBy(js, rate), medianBy(jsBase, rate), medianBy(js, ratio))
	}
	return nil
}

// eventsRun makes a registry of n first connections and measures their delivery to a webhook
// and to JetStream, each with its baseline.
func (b *bench) eventsRun(ctx context.Context, ns *natstest.Server, name string, args ...string) (hook, hookBase, js, jsBase measure, err error) {
	n := *eventsN
	stream := strings.ReplaceAll(name, "-", "_")
	srv, err := b.startServerWith(ctx, name, []string{"--webhook-allow-private"}, args...)
	if err != nil {
		return
	}
	defer srv.stop()
	events, err := firstConnections(ctx, srv, b.dir, name, n)
	if err != nil {
		return
	}

	// The webhook.
	var got atomic.Int64
	done := make(chan struct{})
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if got.Add(1) == int64(n) {
			close(done)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	var wh devreg.Webhook
	if err = srv.api(ctx, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`", "event_types": ["device.first_connection"]}`, &wh); err != nil {
		return
	}
	start := time.Now()
	if err = srv.api(ctx, "PATCH", "/api/v1/webhooks/"+wh.ID, fmt.Sprintf(`{"resume_after": %d}`, events[0].Seq-1), nil); err != nil {
		return
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		return hook, hookBase, js, jsBase, fmt.Errorf("the webhook got %d of %d events in 5 minutes", got.Load(), n)
	}
	hook.value = float64(n) / time.Since(start).Seconds()
	if err = srv.api(ctx, "DELETE", "/api/v1/webhooks/"+wh.ID, "", nil); err != nil {
		return
	}
	got.Store(0)
	done = make(chan struct{})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	start = time.Now()
	for _, e := range events {
		body, _ := json.Marshal(e)
		req, _ := http.NewRequestWithContext(ctx, "POST", rcv.URL, strings.NewReader(string(body)))
		if err = webhook.SetHeaders(req.Header, wh.Secret, e.ID, time.Now(), body); err != nil {
			return
		}
		resp, rerr := hc.Do(req)
		if rerr != nil {
			err = rerr
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	hookBase.value = float64(n) / time.Since(start).Seconds()
	hook.ratio = hook.value / hookBase.value

	// JetStream: the server again, now publishing to JetStream, on the same data (the embedded
	// database is one server's at a time).
	srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.cmd.Wait()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return
	}
	defer nc.Close()
	jsc, err := jetstream.New(nc)
	if err != nil {
		return
	}
	s, err := jsc.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"devreg." + srv.accountID + ".>"}, Duplicates: 10 * time.Minute})
	if err != nil {
		return
	}
	defer jsc.DeleteStream(context.Background(), stream)
	count := func() uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	pubArgs := append([]string{"--data", srv.data, "--api-rate-limit", "1000000", "--events-nats", ns.URL()}, args...)
	_, pub, err := serve(b.bin, pubArgs...)
	if err != nil {
		return
	}
	defer func() { pub.Process.Kill(); pub.Wait() }()
	var first time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for c := count(); c < uint64(len(events)); c = count() {
		if c > 0 && first.IsZero() {
			first = time.Now()
		}
		if time.Now().After(deadline) {
			return hook, hookBase, js, jsBase, fmt.Errorf("JetStream got %d of %d events in 5 minutes", c, len(events))
		}
		time.Sleep(2 * time.Millisecond)
	}
	if first.IsZero() {
		first = time.Now()
	}
	js.value = float64(len(events)) / time.Since(first).Seconds()
	raw := stream + "_RAW"
	rs, err := jsc.CreateStream(ctx, jetstream.StreamConfig{Name: raw, Subjects: []string{"raw." + srv.accountID + ".>"}, Duplicates: 10 * time.Minute})
	if err != nil {
		return
	}
	defer jsc.DeleteStream(context.Background(), raw)
	start = time.Now()
	for _, e := range events {
		body, _ := json.Marshal(e)
		if _, err = jsc.Publish(ctx, "raw."+srv.accountID+"."+e.Type, body, jetstream.WithMsgID(e.ID)); err != nil {
			return
		}
	}
	jsBase.value = float64(len(events)) / time.Since(start).Seconds()
	js.ratio = js.value / jsBase.value
	if info, ierr := rs.Info(ctx); ierr != nil || info.State.Msgs != uint64(len(events)) {
		return hook, hookBase, js, jsBase, errors.New("the baseline's stream lost messages")
	}
	return hook, hookBase, js, jsBase, nil
}

// firstConnections registers n devices and logs each in once through the broker endpoint (eight
// at a time), and returns the n device.first_connection events that makes, in seq order.
func firstConnections(ctx context.Context, srv *server, dir, name string, n int) ([]devreg.Event, error) {
	typeID, err := srv.newType(ctx, name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name+".csv")
	if err := writeLotFile(path, name, n); err != nil {
		return nil, err
	}
	defer os.Remove(path)
	secrets, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if _, err := srv.register(ctx, name, typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(n) }); err != nil {
		return nil, err
	}
	var broker struct{ Key string }
	if err := srv.api(ctx, "POST", "/api/v1/apikeys", `{"name": "broker", "scope": "broker"}`, &broker); err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(secrets)), "\n")
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(lines); i += 8 {
				id, secret, _ := strings.Cut(lines[i], ",")
				body := fmt.Sprintf(`{"username": %q, "password": %q, "clientid": %q}`, id, secret, id)
				req, _ := http.NewRequestWithContext(ctx, "POST", srv.url+"/broker/v1/emqx/authn", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+broker.Key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return nil, fmt.Errorf("%d broker logins failed", f)
	}
	var events []devreg.Event
	for after, deadline := int64(0), time.Now().Add(time.Minute); len(events) < n; {
		var page struct {
			Events    []devreg.Event `json:"events"`
			NextAfter int64          `json:"next_after"`
		}
		if err := srv.api(ctx, "GET", fmt.Sprintf("/api/v1/events?after=%d&wait=10", after), "", &page); err != nil {
			return nil, err
		}
		for _, e := range page.Events {
			if e.Type == devreg.EventFirstConnection {
				events = append(events, e)
			}
		}
		after = page.NextAfter
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d first connections in a minute", len(events), n)
		}
	}
	return events, nil
}

// api sends a request to the Operations API with the account's key and decodes the answer.
func (s *server) api(ctx context.Context, method, path, body string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
