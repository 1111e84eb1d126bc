package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/server"
	"devreg/webhook"
)

type eventPage struct {
	Events    []devreg.Event `json:"events"`
	NextAfter int64          `json:"next_after"`
}

func (e *env) events(t *testing.T, key string, after int64, wait int) eventPage {
	t.Helper()
	var p eventPage
	e.mustDo(t, key, "GET", fmt.Sprintf("/api/v1/events?after=%d&wait=%d", after, wait), "", 200, &p)
	return p
}

func types(events []devreg.Event) []string {
	var ts []string
	for _, e := range events {
		ts = append(ts, e.Type)
	}
	return ts
}

// TestEventsFromTheChangesTransaction: every committed change is one event, in order, and a
// refused one is none; a registration of any size is one devices.registered event with the batch
// and the counts; a long poll wakes for the next change; a key restricted to a device type sees
// only that type's events, a read key none about keys or users.
func TestEventsFromTheChangesTransaction(t *testing.T) {
	pgtest.Each(t, testEventsFromTheChangesTransaction)
}

func testEventsFromTheChangesTransaction(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	start := e.events(t, e.admin, 0, 0).NextAfter // the keys newEnv made
	lock := e.createType(t, e.admin, "Lock", 0)
	gate := e.createType(t, e.admin, "Gate", 0)
	var csv strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&csv, "lock-%04d, a-long-secret-%04d\n", i, i)
	}
	if status, b := e.register(t, e.registerKey, lock.ID, "", "text/csv", csv.String()); status != 200 {
		t.Fatalf("register = %d %s", status, b)
	}
	if status, _ := e.register(t, e.registerKey, lock.ID, "", "text/csv", "lock-x, short"); status != 422 {
		t.Fatalf("a bad file = %d, want 422", status)
	}
	page := e.events(t, e.admin, start, 0)
	if got := strings.Join(types(page.Events), " "); got != "devicetype.create devicetype.create devices.registered" {
		t.Fatalf("events = %s, want the two types and one registration (not the refused one)", got)
	}
	for i, ev := range page.Events {
		if ev.Seq != start+int64(i)+1 || !strings.HasPrefix(ev.ID, "evt_") || ev.AccountID != e.accountID {
			t.Errorf("event %d = %+v: seq, ID or account wrong", i, ev)
		}
	}
	var reg struct {
		BatchID      string `json:"batch_id"`
		DeviceTypeID string `json:"device_type_id"`
		Created      int    `json:"created"`
	}
	if err := json.Unmarshal(page.Events[2].Data, &reg); err != nil || reg.Created != 1000 || reg.DeviceTypeID != lock.ID || !strings.HasPrefix(reg.BatchID, "bat_") {
		t.Errorf("devices.registered data = %s, want the batch, the type and created 1000", page.Events[2].Data)
	}
	if page.NextAfter != page.Events[2].Seq {
		t.Errorf("next_after = %d, want %d", page.NextAfter, page.Events[2].Seq)
	}

	// A long poll answers with the next change, made while it waits.
	got := make(chan eventPage, 1)
	go func() { got <- e.events(t, e.admin, page.NextAfter, 30) }()
	time.Sleep(300 * time.Millisecond)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/lock-0007", `{"status": "disabled"}`, 200, nil)
	select {
	case p := <-got:
		if len(p.Events) != 1 || p.Events[0].Type != "device.update" {
			t.Errorf("the long poll answered %v, want the device.update", types(p.Events))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll did not wake for the change")
	}

	// A device's first connection is one event, whether it checks in or a broker lets it in; its
	// next connections are none.
	from := e.events(t, e.admin, 0, 0).NextAfter
	for range 2 {
		if err := e.loginAndCheckIn("lock-0001", "a-long-secret-0001"); err != nil {
			t.Fatal(err)
		}
	}
	var broker map[string]any
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "broker", "scope": "broker"}`, 201, &broker)
	for range 2 {
		hr, _ := http.NewRequest("POST", e.url+"/broker/v1/emqx/authn", strings.NewReader(`{"username": "lock-0002", "password": "a-long-secret-0002", "clientid": "lock-0002"}`))
		hr.Header.Set("Authorization", "Bearer "+broker["key"].(string))
		hr.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "allow") {
			t.Fatalf("broker login = %d %s", resp.StatusCode, body)
		}
	}
	var firsts []map[string]string
	for deadline := time.Now().Add(20 * time.Second); len(firsts) < 2 && time.Now().Before(deadline); {
		p := e.events(t, e.admin, from, 10) // broker logins are written within seconds, in batches
		for _, ev := range p.Events {
			if ev.Type == devreg.EventFirstConnection {
				var d map[string]string
				json.Unmarshal(ev.Data, &d)
				firsts = append(firsts, d)
			}
		}
		from = p.NextAfter
	}
	time.Sleep(6 * time.Second) // past the writer's next batch: a second connection makes no event
	for _, ev := range e.events(t, e.admin, from, 0).Events {
		if ev.Type == devreg.EventFirstConnection {
			t.Errorf("a second connection made event %s", ev.Data)
		}
	}
	// Their credentials' first uses are events too; a lock-out's beginning is one.
	uses := 0
	for _, ev := range e.events(t, e.admin, 0, 0).Events {
		if ev.Type == devreg.EventCredentialFirstUse {
			uses++
		}
	}
	if uses != 2 {
		t.Errorf("%d credential.first_use events, want 2 (lock-0001's and lock-0002's secret)", uses)
	}
	for range 12 {
		form := url.Values{"grant_type": {"client_credentials"}, "account_id": {e.accountID}, "client_id": {"lock-0003"}, "client_secret": {"wrong-secret"}}
		resp, err := http.PostForm(e.url+"/device/v1/token", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	locked := 0
	for _, ev := range e.events(t, e.admin, 0, 0).Events {
		if ev.Type == devreg.EventLockedOut {
			locked++
			if !strings.Contains(string(ev.Data), `"device_id":"lock-0003"`) {
				t.Errorf("lock-out event %s", ev.Data)
			}
		}
	}
	if locked != 1 {
		t.Errorf("%d device.locked_out events after 12 wrong secrets, want 1", locked)
	}
	if len(firsts) != 2 || firsts[0]["device_id"] != "lock-0001" || firsts[0]["via"] != "check-in" || firsts[1]["device_id"] != "lock-0002" ||
		firsts[1]["via"] != "broker" || firsts[1]["device_type_id"] != lock.ID || firsts[1]["batch_id"] != reg.BatchID {
		t.Errorf("first connections = %v, want lock-0001 by check-in and lock-0002 through the broker, with type and batch", firsts)
	}

	// Keys see what they may: a key of Gate only Gate's events; a read key no key's events.
	var restricted map[string]any
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "gate reader", "scope": "read", "device_type_ids": ["`+gate.ID+`"]}`, 201, &restricted)
	for _, ev := range e.events(t, restricted["key"].(string), 0, 0).Events {
		if !strings.Contains(string(ev.Data), gate.ID) {
			t.Errorf("a key of Gate sees event %s %s", ev.Type, ev.Data)
		}
	}
	if n := len(e.events(t, restricted["key"].(string), 0, 0).Events); n != 1 {
		t.Errorf("a key of Gate sees %d events, want Gate's creation only", n)
	}
	// A key of Lock sees the changes of Lock's devices and batches, which name no type in their
	// details: the change's own read of the device or batch gives it.
	var cred map[string]any
	e.mustDo(t, e.admin, "POST", "/api/v1/devices/lock-0008/credentials", `{"generate": true}`, 201, &cred)
	e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/lock-0008/credentials/"+cred["id"].(string), "", 204, nil)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/batches/"+reg.BatchID, `{"status": "disabled"}`, 200, nil)
	var lockReader map[string]any
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "lock reader", "scope": "read", "device_type_ids": ["`+lock.ID+`"]}`, 201, &lockReader)
	lockSees := map[string]int{}
	for _, ev := range e.events(t, lockReader["key"].(string), 0, 0).Events {
		lockSees[ev.Type]++
	}
	for _, typ := range []string{"devicetype.create", "devices.registered", "device.update", "credential.create", "credential.delete", "batch.update"} {
		if lockSees[typ] != 1 {
			t.Errorf("a key of Lock sees %d %s events, want 1 (it sees %v)", lockSees[typ], typ, lockSees)
		}
	}
	readSees := map[string]bool{}
	for _, ev := range e.events(t, e.read, 0, 0).Events {
		readSees[ev.Type] = true
		if strings.HasPrefix(ev.Type, "apikey.") || strings.HasPrefix(ev.Type, "user.") {
			t.Errorf("a read key sees %s", ev.Type)
		}
	}
	if !readSees["device.update"] || !readSees["devices.registered"] {
		t.Errorf("a read key sees %v; want the device's update and the registration (events about devices of types it reaches)", readSees)
	}
	// Another account's events are its own.
	for _, ev := range e.events(t, e.other, 0, 0).Events {
		if ev.AccountID == e.accountID {
			t.Errorf("another account sees %s of this one", ev.Type)
		}
	}
	for _, q := range []string{"wait=61", "after=-1", "after=x"} {
		if status, b := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/events?" + q, invalid: true}); status != 400 {
			t.Errorf("events?%s = %d %s, want 400", q, status, b)
		}
	}
}

// receiver is a webhook endpoint that keeps what it is sent, and answers with fail's status
// while fail is not 0.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []*http.Request
	bodies [][]byte
	fail   int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.got, r.bodies = append(r.got, req), append(r.bodies, body)
		if r.fail != 0 {
			http.Error(w, "not now", r.fail)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() ([]*http.Request, [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request{}, r.got...), append([][]byte{}, r.bodies...)
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

// TestWebhooksDeliverSignedEvents: a webhook gets each event of its types, in order, signed so
// that the Standard Webhooks check with the secret shown once passes; a receiver that fails is
// tried again with the same webhook-id, and its tries are listed; URLs of private addresses are
// refused unless the server allows them.
func TestWebhooksDeliverSignedEvents(t *testing.T) { pgtest.Each(t, testWebhooksDeliverSignedEvents) }

func testWebhooksDeliverSignedEvents(t *testing.T, database string) {
	strict := newEnv(t, pgtest.NewDatabaseLike(t, database), 0) // a server of its own, on a database of its own
	var refused errorBody
	status, b := strict.send(t, req{key: strict.admin, method: "POST", path: "/api/v1/webhooks", body: `{"url": "http://127.0.0.1:9/hook"}`})
	if json.Unmarshal(b, &refused); status != 422 || !strings.Contains(refused.Error.Message, "loopback") || !strings.Contains(refused.Error.Message, "--webhook-allow-private") {
		t.Errorf("a loopback URL = %d %s, want 422 naming loopback and the flag", status, b)
	}

	e := newEnvWith(t, database, func(c *server.Config) { c.WebhookAllowPrivate = true })
	rcv := newReceiver(t)
	var wh devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`/hook", "event_types": ["devicetype.create", "devices.registered"]}`, 201, &wh)
	if !strings.HasPrefix(wh.Secret, "whsec_") || !wh.Enabled {
		t.Fatalf("webhook = %+v, want an enabled one with a whsec_ secret", wh)
	}
	var again devreg.Webhook
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID, "", 200, &again)
	if again.Secret != "" {
		t.Errorf("the secret is shown again")
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`", "event_types": ["no.such"]}`, 422, nil)
	// A token in a receiver's URL (Slack and Discord put it in the path) stays out of the
	// webhook.create event, which every other webhook receives, and out of the audit log.
	var tokened devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`/api/webhooks/123/S3CRET-PATH-TOKEN?key=S3CRET-QUERY", "enabled": false}`, 201, &tokened)
	for _, ev := range e.events(t, e.admin, 0, 0).Events {
		if strings.Contains(string(ev.Data), "S3CRET") {
			t.Errorf("event %s repeats the URL's token: %s", ev.Type, ev.Data)
		}
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/webhooks/"+tokened.ID, "", 204, nil)
	e.mustDo(t, e.read, "GET", "/api/v1/webhooks", "", 403, nil)

	lock := e.createType(t, e.admin, "Lock", 0)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+lock.ID, `{"description": "not of the webhook's types"}`, 200, nil)
	if status, b := e.register(t, e.registerKey, lock.ID, "", "text/csv", "lock-1, a-long-secret-1"); status != 200 {
		t.Fatalf("register = %d %s", status, b)
	}
	waitFor(t, "two deliveries", func() bool { got, _ := rcv.requests(); return len(got) >= 2 })
	got, bodies := rcv.requests()
	var seen []string
	for i, r := range got {
		if err := webhook.Verify(wh.Secret, r.Header, bodies[i], time.Now(), 5*time.Minute); err != nil {
			t.Errorf("delivery %d does not verify: %v", i, err)
		}
		var ev devreg.Event
		json.Unmarshal(bodies[i], &ev)
		if r.Header.Get("webhook-id") != ev.ID || r.Method != "POST" || r.URL.Path != "/hook" {
			t.Errorf("delivery %d: webhook-id %q for event %s, %s %s", i, r.Header.Get("webhook-id"), ev.ID, r.Method, r.URL.Path)
		}
		seen = append(seen, ev.Type)
	}
	if strings.Join(seen, " ") != "devicetype.create devices.registered" {
		t.Errorf("delivered %v, want the type's creation and the registration, in order, and not the update", seen)
	}
	if err := webhook.Verify("whsec_"+strings.Repeat("A", 43)+"=", got[0].Header, bodies[0], time.Now(), 5*time.Minute); err == nil {
		t.Errorf("a delivery verifies under another secret")
	}

	// A receiver that fails is tried again, with the same webhook-id, until it takes the event.
	rcv.mu.Lock()
	rcv.fail = http.StatusServiceUnavailable
	rcv.mu.Unlock()
	e.createType(t, e.admin, "Gate", 0)
	waitFor(t, "a failed try", func() bool { got, _ := rcv.requests(); return len(got) >= 3 })
	var failing devreg.Webhook
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID, "", 200, &failing)
	if failing.Attempts < 1 || failing.FailingSince == nil || failing.NextAttempt == nil {
		t.Errorf("after a failed try the webhook says %+v", failing)
	}
	rcv.mu.Lock()
	rcv.fail = 0
	rcv.mu.Unlock()
	e.clock.Add(10 * time.Second) // past the first pause (5 s)
	waitFor(t, "the retry", func() bool {
		var w devreg.Webhook
		e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID, "", 200, &w)
		return w.Attempts == 0 && w.DeliveredSeq > failing.DeliveredSeq
	})
	got, _ = rcv.requests()
	if n := len(got); got[n-1].Header.Get("webhook-id") != got[2].Header.Get("webhook-id") {
		t.Errorf("the retry has webhook-id %q, the failed try %q: want the same", got[n-1].Header.Get("webhook-id"), got[2].Header.Get("webhook-id"))
	}
	var ds struct {
		Deliveries []devreg.WebhookDelivery `json:"deliveries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID+"/deliveries", "", 200, &ds)
	if len(ds.Deliveries) < 4 || ds.Deliveries[0].Status != 200 || ds.Deliveries[1].Status != 503 || !strings.Contains(ds.Deliveries[1].Answer, "not now") {
		t.Errorf("deliveries = %+v, want the retry's 200 after the 503 with its answer", ds.Deliveries)
	}
	// A test event goes at once, signed, outside the account's events, and is listed.
	var test devreg.WebhookDelivery
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks/"+wh.ID+"/test", "", 200, &test)
	got, bodies = rcv.requests()
	if last := got[len(got)-1]; test.Status != 200 || test.EventType != "webhook.test" || last.Header.Get("webhook-id") != test.EventID ||
		webhook.Verify(wh.Secret, last.Header, bodies[len(bodies)-1], time.Now(), 5*time.Minute) != nil {
		t.Errorf("test event = %+v; the receiver got webhook-id %q", test, last.Header.Get("webhook-id"))
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID+"/deliveries", "", 200, &ds)
	if ds.Deliveries[0].EventType != "webhook.test" {
		t.Errorf("the test event is not listed first: %+v", ds.Deliveries[0])
	}
	for _, ev := range e.events(t, e.admin, 0, 0).Events {
		if ev.Type == "webhook.test" {
			t.Errorf("the test event is among the account's events")
		}
	}

	e.mustDo(t, e.admin, "DELETE", "/api/v1/webhooks/"+wh.ID, "", 204, nil)
	e.mustDo(t, e.admin, "GET", "/api/v1/webhooks/"+wh.ID, "", 404, nil)

	// Retention: events older than it go once delivered; those an enabled webhook still owes stay.
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`", "enabled": false}`, 201, nil)
	var owing devreg.Webhook
	e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", `{"url": "`+rcv.URL+`", "enabled": false}`, 201, &owing)
	before := e.events(t, e.admin, 0, 0).Events
	e.mustDo(t, e.admin, "PATCH", "/api/v1/webhooks/"+owing.ID, fmt.Sprintf(`{"resume_after": %d}`, before[2].Seq), 200, nil)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/webhooks/"+owing.ID, `{"enabled": true}`, 200, nil) // events from the 4th on are owed
	rcv.mu.Lock()
	rcv.fail = http.StatusServiceUnavailable // and stay owed
	rcv.mu.Unlock()
	e.clock.Add(8 * 24 * time.Hour)
	if n, err := e.srv.Service.PruneEventsOnce(context.Background(), 7*24*time.Hour); err != nil || n < 3 {
		t.Fatalf("pruned %d, %v; want the first 3 events at least", n, err)
	}
	after := e.events(t, e.admin, 0, 0).Events
	if len(after) == 0 || after[0].Seq != before[3].Seq {
		t.Errorf("after retention the first event is %+v, want seq %d, the first the webhook owes", after, before[3].Seq)
	}
}
