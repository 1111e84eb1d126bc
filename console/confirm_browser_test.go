package console_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg/internal/pgtest"
)

// TestBrowserStateChangesConfirm: disabling and enabling a device asks first, as deleting does;
// a dismissed question changes nothing. The same data-confirm guards a credential's, a batch's
// and an enrollment group's status (TestEveryStatusButtonConfirms).
func TestBrowserStateChangesConfirm(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	e.post(t, "/devices", map[string][]string{"device_id": {"lock-1"}, "secret": {"lock-1-secret"}, "device_type_id": {dt}})
	ctx := browser(t)
	asked, accept := answerDialogs(t, ctx)
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devices/lock-1"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".pagehead .badge")),
	))
	status := func() string { t.Helper(); return text(t, ctx, ".pagehead .badge") }
	button := `form[action="/devices/lock-1/status"] button`

	accept <- false
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(button))))
	if msg := <-asked; !strings.Contains(msg, "Disable device lock-1?") {
		t.Errorf("the question says %q", msg)
	}
	must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+"/devices/lock-1"), chromedp.WaitVisible(chromedp.CSS(".pagehead .badge"))))
	if got := status(); got != "enabled" {
		t.Fatalf("after a dismissed question the device is %s", got)
	}

	for _, want := range []struct{ question, status string }{{"Disable device lock-1?", "disabled"}, {"Enable device lock-1?", "enabled"}} {
		accept <- true
		clickThrough(t, ctx, button, ".flash")
		if msg := <-asked; !strings.Contains(msg, want.question) {
			t.Errorf("the question says %q, want %q", msg, want.question)
		}
		if got := status(); got != want.status {
			t.Errorf("after %q the device is %s", want.question, got)
		}
	}
}

// TestEveryStatusButtonConfirms: every button that changes a status on the device, batch and
// enrollment group pages, either way, carries a question for the browser to ask first.
func TestEveryStatusButtonConfirms(t *testing.T) { pgtest.Each(t, testEveryStatusButtonConfirms) }

func testEveryStatusButtonConfirms(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	e.post(t, "/devices", map[string][]string{"device_id": {"lock-1"}, "secret": {"lock-1-secret"}, "device_type_id": {dt}})
	e.post(t, "/devices/lock-1/credentials", map[string][]string{"secret": {"second-secret"}})
	e.post(t, "/devicetypes/"+dt+"/enrollment_groups", map[string][]string{"name": {"Line 3"}, "id_pattern": {"^L-[0-9]{6}$"}, "max_devices": {"5"}})
	d, err := e.srv.Service.Device(e.asAdmin(), "lock-1")
	must(t, err)
	form := regexp.MustCompile(`(?s)<form method="post" action="[^"]*/status"[^>]*>.*?</form>`)
	for _, round := range []string{"enabled", "disabled"} {
		pages := []string{"/devices/lock-1", "/batches/" + d.BatchID, "/devicetypes/" + dt + "/enrollment_groups"}
		found := 0
		for _, p := range pages {
			_, body := e.get(t, p)
			for _, f := range form.FindAllString(body, -1) {
				found++
				if !strings.Contains(f, "data-confirm=") {
					t.Errorf("%s (%s): a status form without a question:\n%s", p, round, f)
				}
			}
		}
		if found < 4 {
			t.Errorf("%s: found %d status forms on %v, want the device's, its credentials', the batch's and the group's", round, found, pages)
		}
		// Now the other way round: everything disabled, so the Enable buttons show.
		e.post(t, "/devices/lock-1/status", map[string][]string{"status": {"disabled"}})
		e.post(t, "/batches/"+d.BatchID+"/status", map[string][]string{"status": {"disabled"}})
		gs, _ := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
		for _, g := range gs {
			e.post(t, "/devicetypes/"+dt+"/enrollment_groups/"+g.ID+"/status", map[string][]string{"status": {"disabled"}})
		}
	}
}
