package console_test

import (
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"devreg/internal/pgtest"
	"devreg/webhook"
)

// TestConsoleWebhooks: an admin adds a webhook for some event types and copies its secret, shown
// once; a test event reaches the receiver signed with that secret and the page says so; the
// deliveries are listed; disabling, enabling and deleting work behind confirmations; the page
// is an admin's only.
func TestConsoleWebhooks(t *testing.T) { pgtest.Each(t, testConsoleWebhooks) }

func testConsoleWebhooks(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	var got atomic.Value
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.Store([2]any{r.Header.Clone(), body})
		w.Write([]byte("thanks"))
	}))
	defer rcv.Close()

	_, body := e.post(t, "/webhooks", url.Values{"url": {rcv.URL + "/hook"}, "event_type": {"devices.registered", "device.update"}})
	secret := regexp.MustCompile(`id="new-webhook-secret" readonly value="(whsec_[^"]+)"`).FindStringSubmatch(body)
	hook := regexp.MustCompile(`/webhooks/(whk_[A-Za-z0-9]+)`).FindStringSubmatch(body)
	if secret == nil || hook == nil || !strings.Contains(body, "devices.registered, device.update") {
		t.Fatalf("the new webhook and its secret are not shown:\n%s", body)
	}
	secret[1] = html.UnescapeString(secret[1])
	if _, body := e.get(t, "/webhooks"); strings.Contains(body, "whsec_") {
		t.Errorf("the secret is shown again")
	}
	_, body = e.post(t, "/webhooks/"+hook[1]+"/test", nil)
	if !strings.Contains(body, "delivered: the receiver answered 200") || !strings.Contains(body, "webhook.test") || !strings.Contains(body, "thanks") {
		t.Errorf("the test event's page:\n%s", body)
	}
	sent, _ := got.Load().([2]any)
	if sent[0] == nil || webhook.Verify(secret[1], sent[0].(http.Header), sent[1].([]byte), time.Now(), time.Minute) != nil {
		t.Errorf("the test event does not verify with the secret shown")
	}
	for _, confirm := range []string{`data-confirm="Disable this webhook?`, `data-confirm="Delete this webhook?`} {
		if !strings.Contains(body, confirm) {
			t.Errorf("the webhook page lacks %q", confirm)
		}
	}
	_, body = e.post(t, "/webhooks/"+hook[1]+"/enabled", url.Values{"enabled": {"false"}})
	if !strings.Contains(body, "Webhook disabled") || !strings.Contains(body, `data-confirm="Enable this webhook?`) {
		t.Errorf("disable:\n%s", body)
	}
	_, body = e.post(t, "/webhooks", url.Values{"url": {"ftp://example.com/"}})
	if !strings.Contains(body, "url:") {
		t.Errorf("a bad URL is not refused with a reason:\n%s", body)
	}
	_, devClient := e.invite(t, "dev@acme.test", "developer")
	dev := *e
	dev.http = devClient
	if status, _ := dev.get(t, "/webhooks"); status != 403 {
		t.Errorf("a developer's /webhooks = %d, want 403", status)
	}
	if _, body := dev.get(t, "/devices"); strings.Contains(body, `href="/webhooks"`) {
		t.Errorf("a developer's menu offers Webhooks")
	}
	_, body = e.post(t, "/webhooks/"+hook[1]+"/delete", nil)
	if !strings.Contains(body, "deleted") || strings.Contains(body, hook[1]+"</a>") {
		t.Errorf("delete:\n%s", body)
	}
}
