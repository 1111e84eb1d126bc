package httpapi_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/server"
	"devreg/webhook"
)

// Reproducers from an outside review of events and webhooks (issue 26): what an attacker, a slow
// or odd receiver and a race do to them.

// allowPrivate is a server whose webhooks may reach the tests' receivers on 127.0.0.1.
func allowPrivate(c *server.Config) { c.WebhookAllowPrivate = true }

// TestPatchedWebhookStopsItsDelivery: a webhook disabled, or moved to another URL, while a
// delivery to it is under way gets nothing more at its old URL than that one request: the server
// delivering must not carry on with the next events of the lease it took before the change.
func TestPatchedWebhookStopsItsDelivery(t *testing.T) {
	pgtest.Each(t, testPatchedWebhookStopsItsDelivery)
}

func testPatchedWebhookStopsItsDelivery(t *testing.T, database string) {
	e := newEnvWith(t, database, allowPrivate)
	// old holds its first request until release is closed, and counts every request.
	var oldHits atomic.Int32
	arrived, release := make(chan struct{}), make(chan struct{})
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if oldHits.Add(1) == 1 {
			close(arrived)
			<-release
		}
	}))
	t.Cleanup(old.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})

	for _, change := range []string{`{"enabled": false}`, `{"url": "NEW"}`} {
		oldHits.Store(0)
		arrived, release = make(chan struct{}), make(chan struct{})
		moved := newReceiver(t)
		change = strings.Replace(change, "NEW", moved.URL+"/moved", 1)
		var wh devreg.Webhook
		e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+old.URL+`/old", "event_types": ["devicetype.create"]}`, 201, &wh)
		for i := range 5 {
			e.createType(t, e.admin, fmt.Sprintf("Type %d of %s", i, wh.ID), 0)
		}
		select {
		case <-arrived:
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the first event never reached the receiver", change)
		}
		e.mustDo(t, e.admin, "PATCH", "/api/v1/webhooks/"+wh.ID, change, 200, nil)
		close(release)
		time.Sleep(3 * time.Second) // six polls of the delivering server
		if n := oldHits.Load(); n != 1 {
			t.Errorf("after PATCH %s the old URL got %d requests, want only the one under way during the change", change, n)
		}
		if strings.Contains(change, "url") {
			waitFor(t, "the events at the new URL", func() bool { got, _ := moved.requests(); return len(got) >= 5 })
		}
		e.mustDo(t, e.admin, "DELETE", "/api/v1/webhooks/"+wh.ID, "", 204, nil)
	}
}

// TestReceiverAnswersWithNUL: a receiver's answer or status line holding a NUL byte or bytes that
// are not UTF-8 (which PostgreSQL's text refuses) is recorded like any other: a taken event is
// not sent again and again, and a failed one waits out its pause instead of being tried at every
// poll.
func TestReceiverAnswersWithNUL(t *testing.T) { pgtest.Each(t, testReceiverAnswersWithNUL) }

func testReceiverAnswersWithNUL(t *testing.T, database string) {
	e := newEnvWith(t, database, allowPrivate)
	var tookHits, failedHits atomic.Int32
	took := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tookHits.Add(1)
		io.WriteString(w, "took it\x00\xff")
	}))
	t.Cleanup(took.Close)
	failed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failedHits.Add(1)
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 503 busy\x00\xff\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		buf.Flush()
	}))
	t.Cleanup(failed.Close)

	var whTook, whFailed devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+took.URL+`", "event_types": ["devicetype.create"]}`, 201, &whTook)
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+failed.URL+`", "event_types": ["devicetype.create"]}`, 201, &whFailed)
	e.createType(t, e.admin, "Lock", 0)
	waitFor(t, "both receivers", func() bool { return tookHits.Load() > 0 && failedHits.Load() > 0 })
	time.Sleep(3 * time.Second) // six polls of the delivering server
	if n := tookHits.Load(); n != 1 {
		t.Errorf("the receiver that took the event got it %d times", n)
	}
	if n := failedHits.Load(); n != 1 {
		t.Errorf("the receiver that failed was tried %d times within 3 s; the first pause is 5 s", n)
	}
	var w devreg.Webhook
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+whFailed.ID, "", 200, &w)
	if w.Attempts != 1 || w.NextAttempt == nil {
		t.Errorf("the failing webhook says %d attempts, next %v; want its failure counted and a pause", w.Attempts, w.NextAttempt)
	}
	var ds struct {
		Deliveries []devreg.WebhookDelivery `json:"deliveries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+whTook.ID+"/deliveries", "", 200, &ds)
	if len(ds.Deliveries) != 1 || !strings.HasPrefix(ds.Deliveries[0].Answer, "took it") {
		t.Errorf("deliveries = %+v, want the one, with its answer", ds.Deliveries)
	}
}

// TestWebhookLimitUnderParallelPOSTs: 40 POSTs at once make exactly devreg.MaxWebhooks webhooks;
// the rest are refused as over the limit, not as server errors.
func TestWebhookLimitUnderParallelPOSTs(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnvWith(t, database, allowPrivate)
		statuses := make([]int, 40)
		var wg sync.WaitGroup
		for i := range statuses {
			wg.Go(func() {
				statuses[i], _ = e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/webhooks", body: `{"url": "http://127.0.0.1:9/hook"}`})
			})
		}
		wg.Wait()
		counts := map[int]int{}
		for _, s := range statuses {
			counts[s]++
		}
		if counts[201] != devreg.MaxWebhooks || counts[422] != len(statuses)-devreg.MaxWebhooks {
			t.Errorf("40 parallel POSTs answered %v, want %d × 201 and the rest 422", counts, devreg.MaxWebhooks)
		}
		var list struct {
			Webhooks []devreg.Webhook `json:"webhooks"`
		}
		e.mustDo(t, e.admin, "GET", "/api/v1/webhooks", "", 200, &list)
		if len(list.Webhooks) != devreg.MaxWebhooks {
			t.Errorf("the account has %d webhooks, want %d", len(list.Webhooks), devreg.MaxWebhooks)
		}
	})
}

// TestWebhooksOfAnotherAccountDoNotExist: an admin of another account, and keys below admin or
// restricted to device types, get nothing of a webhook: not it, its deliveries, a change or its
// deletion; and its secret is in no answer but its creation's, nor in the audit log or events.
func TestWebhooksOfAnotherAccountDoNotExist(t *testing.T) {
	e := newEnvWith(t, "", allowPrivate)
	rcv := newReceiver(t)
	var wh devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`/hook?token=t0ken"}`, 201, &wh)
	lock := e.createType(t, e.admin, "Lock", 0)
	var restricted map[string]any
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "lock registrar", "scope": "register", "device_type_ids": ["`+lock.ID+`"]}`, 201, &restricted)
	for _, k := range []struct {
		name, key string
		status    int
	}{{"another account's admin", e.other, 404}, {"a read key", e.read, 403}, {"a register key", e.registerKey, 403},
		{"a key restricted to a type", restricted["key"].(string), 403}} {
		for _, r := range []req{
			{method: "GET", path: "/api/v1/webhooks/" + wh.ID},
			{method: "GET", path: "/api/v1/webhooks/" + wh.ID + "/deliveries"},
			{method: "PATCH", path: "/api/v1/webhooks/" + wh.ID, body: `{"url": "http://127.0.0.1:9/stolen", "resume_after": 0}`},
			{method: "DELETE", path: "/api/v1/webhooks/" + wh.ID},
		} {
			r.key = k.key
			if status, b := e.send(t, r); status != k.status {
				t.Errorf("%s: %s %s = %d %s, want %d", k.name, r.method, r.path, status, b, k.status)
			}
		}
		var list struct {
			Webhooks []devreg.Webhook `json:"webhooks"`
		}
		if status, b := e.send(t, req{key: k.key, method: "GET", path: "/api/v1/webhooks"}); status == 200 {
			json.Unmarshal(b, &list)
			if len(list.Webhooks) != 0 {
				t.Errorf("%s lists %d webhooks of another account", k.name, len(list.Webhooks))
			}
		}
	}
	var got devreg.Webhook
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID, "", 200, &got)
	if got.URL != wh.URL || !got.Enabled {
		t.Errorf("the webhook changed: %+v", got)
	}
	// An admin sees the URL whole where the webhook is shown, but the secret nowhere; the audit
	// log and the events (which other webhooks receive) keep the URL without its query.
	secret := strings.TrimPrefix(wh.Secret, "whsec_")
	for _, path := range []string{"/api/v1/webhooks", "/api/v1/webhooks/" + wh.ID, "/api/v1/audit?limit=100", "/api/v1/events", "/api/v1/webhooks/" + wh.ID + "/deliveries"} {
		status, b := e.send(t, req{key: e.admin, method: "GET", path: path})
		if status != 200 || strings.Contains(string(b), secret) {
			t.Errorf("GET %s = %d, and shows the secret: %s", path, status, b)
		}
		if (strings.Contains(path, "audit") || strings.Contains(path, "events")) && strings.Contains(string(b), "t0ken") {
			t.Errorf("GET %s shows the URL's query: %s", path, b)
		}
	}
	if strings.Contains(e.log.String(), secret) {
		t.Errorf("the log shows the secret")
	}
}

// TestDeliveryIsTheSignedBody: a delivery verifies by the Standard Webhooks formula computed here
// from the secret (base64 HMAC-SHA256 of "id.timestamp.body" under the key after whsec_), the
// body is the event exactly as GET /events shows it, and webhook-id is the event's ID.
func TestDeliveryIsTheSignedBody(t *testing.T) {
	e := newEnvWith(t, "", allowPrivate)
	rcv := newReceiver(t)
	var wh devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`"}`, 201, &wh)
	e.createType(t, e.admin, "Lock \u2603 \"quoted\" <b>", 0)
	// The webhook's own creation is its first event, the type's the second.
	waitFor(t, "the deliveries", func() bool { got, _ := rcv.requests(); return len(got) == 2 })
	got, bodies := rcv.requests()
	r, body := got[1], bodies[1]
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(wh.Secret, "whsec_"))
	if err != nil || len(key) < 24 {
		t.Fatalf("secret %q does not carry a base64 key of 24 bytes or more", wh.Secret)
	}
	stamp := r.Header.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.%s", r.Header.Get("webhook-id"), stamp, body)
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.Header.Get("webhook-signature") != want {
		t.Errorf("webhook-signature = %q, want %q", r.Header.Get("webhook-signature"), want)
	}
	if err := webhook.Verify(wh.Secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("webhook.Verify: %v", err)
	}
	if sec, err := strconv.ParseInt(stamp, 10, 64); err != nil || time.Since(time.Unix(sec, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q is not now", stamp)
	}
	page := e.events(t, e.admin, 0, 0)
	last := page.Events[len(page.Events)-1]
	var sent devreg.Event
	if err := json.Unmarshal(body, &sent); err != nil || sent.ID != last.ID || sent.Seq != last.Seq || string(sent.Data) != string(last.Data) ||
		r.Header.Get("webhook-id") != last.ID || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("delivered %s (webhook-id %s), want the event %+v", body, r.Header.Get("webhook-id"), last)
	}
}

// TestWebhookAuditEntriesAreFound: a webhook's audit entries, of object type webhook (which the
// document allows), are found by its ID alone, as those of every other object are.
func TestWebhookAuditEntriesAreFound(t *testing.T) {
	e := newEnvWith(t, "", allowPrivate)
	var wh devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "http://127.0.0.1:9/hook"}`, 201, &wh)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/webhooks/"+wh.ID, `{"enabled": false}`, 200, nil)
	var page struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?object_id="+wh.ID, "", 200, &page)
	var actions []string
	for _, en := range page.Entries {
		actions = append(actions, en.Action)
	}
	if strings.Join(actions, " ") != "webhook.update webhook.create" {
		t.Errorf("the audit entries of %s are %v, want its update and its creation", wh.ID, actions)
	}
}

// TestTwoServersDeliverInOrderOnce: two servers on one database deliver three webhooks' events
// while receivers fail some first tries (a 500, a redirect not to be followed): no
// webhook ever has two deliveries under way at once, and each receiver takes every event once,
// in seq order, with the failed ones tried again before any later one.
func TestTwoServersDeliverInOrderOnce(t *testing.T) {
	pgtest.Each(t, testTwoServersDeliverInOrderOnce)
}

func testTwoServersDeliverInOrderOnce(t *testing.T, database string) {
	e := newEnvWith(t, database, allowPrivate)
	second, err := server.Open(t.Context(), server.Config{Addr: "127.0.0.1:0", DataDir: e.dataDir, Database: database, WebhookAllowPrivate: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	second.Service.Now = e.clock.Now
	go second.Serve()
	t.Cleanup(func() { second.Shutdown(context.Background()) })

	type hook struct {
		mu             sync.Mutex
		inflight, most int
		taken          []int64       // the seqs answered 2xx, in the order taken
		tries          map[int64]int // tries per seq
	}
	hooks := make([]*hook, 3)
	for i := range hooks {
		hooks[i] = &hook{tries: map[int64]int{}}
	}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var i int
		if _, err := fmt.Sscanf(r.URL.Path, "/w%d", &i); err != nil || i >= len(hooks) {
			http.NotFound(w, r)
			return
		}
		h := hooks[i]
		h.mu.Lock()
		h.inflight++
		h.most = max(h.most, h.inflight)
		h.mu.Unlock()
		defer func() { h.mu.Lock(); h.inflight--; h.mu.Unlock() }()
		var ev devreg.Event
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &ev)
		time.Sleep(20 * time.Millisecond)
		h.mu.Lock()
		h.tries[ev.Seq]++
		first := h.tries[ev.Seq] == 1
		h.mu.Unlock()
		if first && ev.Type == "devicetype.create" {
			switch ev.Seq % 5 {
			case 1:
				e.clock.Add(6 * time.Second) // past the first pause
				http.Error(w, "down", 500)
				return
			case 3:
				e.clock.Add(6 * time.Second)
				http.Redirect(w, r, "/elsewhere", http.StatusFound)
				return
			}
		}
		h.mu.Lock()
		h.taken = append(h.taken, ev.Seq)
		h.mu.Unlock()
	}))
	t.Cleanup(rcv.Close)
	for i := range hooks {
		e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", fmt.Sprintf(`{"url": "%s/w%d", "event_types": ["devicetype.create"]}`, rcv.URL, i), 201, nil)
	}
	const n = 15
	for i := range n {
		e.createType(t, e.admin, fmt.Sprintf("Type %d", i), 0)
	}
	var want []int64
	for _, ev := range e.events(t, e.admin, 0, 0).Events {
		if ev.Type == "devicetype.create" {
			want = append(want, ev.Seq)
		}
	}
	if len(want) != n {
		t.Fatalf("%d type creations among the events, want %d", len(want), n)
	}
	for i, h := range hooks {
		waitFor(t, fmt.Sprintf("webhook %d's events", i), func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return len(h.taken) >= n
		})
	}
	time.Sleep(time.Second) // time for a wrong extra delivery
	for i, h := range hooks {
		h.mu.Lock()
		if !slices.Equal(h.taken, want) {
			t.Errorf("webhook %d took %v, want %v", i, h.taken, want)
		}
		if h.most != 1 {
			t.Errorf("webhook %d had %d deliveries under way at once", i, h.most)
		}
		h.mu.Unlock()
	}
}

// TestNoEventsIsAnEmptyList: an answer without events (none yet, a long poll that timed out, or
// only events the key may not see) lists none, as the document says, instead of "events": null,
// which a consumer iterating over the list fails on.
func TestNoEventsIsAnEmptyList(t *testing.T) {
	e := newEnv(t, "", 0)
	newest := e.events(t, e.admin, 0, 0).NextAfter
	for _, key := range []string{e.admin, e.read} {
		for _, wait := range []int{0, 1} {
			status, b := e.send(t, req{key: key, method: "GET", path: fmt.Sprintf("/api/v1/events?after=%d&wait=%d", newest, wait)})
			if status != 200 || !strings.Contains(string(b), `"events":[]`) {
				t.Errorf("no events (wait %d) = %d %s, want an empty list", wait, status, b)
			}
		}
	}
	// A read key sees none of the keys' creation events, all there is.
	if status, b := e.send(t, req{key: e.read, method: "GET", path: "/api/v1/events"}); status != 200 || !strings.Contains(string(b), `"events":[]`) {
		t.Errorf("only events a read key may not see = %d %s, want an empty list", status, b)
	}
}
