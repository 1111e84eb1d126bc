package console_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg"
)

// TestBrowserRevokeDeviceMade revokes, in Chromium, the credentials a device made itself from its
// page and those of a batch's devices from the batch's page, each after the browser's
// confirmation, which names what will happen; a dismissed confirmation revokes nothing.
func TestBrowserRevokeDeviceMade(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	batch := e.uploadLot(t, dt, "lk-1, factory-secret-1\nlk-2, factory-secret-2\nlk-3, factory-secret-3")
	for _, n := range []string{"1", "2", "3"} {
		e.rotate(t, "lk-"+n, "factory-secret-"+n)
	}
	deviceMade := func(id string) int {
		t.Helper()
		n := 0
		for _, c := range e.credentials(t, id) {
			if c.Source == devreg.CredentialFromDevice {
				n++
			}
		}
		return n
	}
	ctx := browser(t)
	asked, accept := answerDialogs(t, ctx)
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }

	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devices/lk-1"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#revoke-device-made button")),
	))

	// Dismissed, nothing happens.
	accept <- false
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#revoke-device-made button"))))
	if msg := <-asked; !strings.Contains(msg, "Delete the 1 credentials device lk-1 made itself") {
		t.Errorf("the device's confirmation says %q", msg)
	}
	if n := deviceMade("lk-1"); n != 1 {
		t.Errorf("after a dismissed confirmation lk-1 holds %d device-made credentials, want 1", n)
	}
	// Confirmed, they go, and the page says so.
	accept <- true
	clickThrough("#revoke-device-made button", "#credential-list")
	<-asked
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "Credentials device lk-1 had made itself, revoked: 1.") {
		t.Errorf("after revoking the page says %q", got)
	}
	if n := deviceMade("lk-1"); n != 0 {
		t.Errorf("lk-1 still holds %d device-made credentials", n)
	}
	sources, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#credential-list tbody tr")].map(r => r.cells[6].innerText)`))
	must(t, err)
	if len(sources) != 1 || sources[0] != "registration" {
		t.Errorf("the credentials listed after revoking come from %v, want the registration only", sources)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#revoke-device-made").length`)); err != nil || n != 0 {
		t.Errorf("the revoke button is still offered (%d, %v)", n, err)
	}

	// The batch: lk-2's and lk-3's go at once.
	must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+"/batches/"+batch), chromedp.WaitVisible(chromedp.CSS("#revoke button"))))
	accept <- true
	clickThrough("#revoke button", ".flash")
	if msg := <-asked; !strings.Contains(msg, "Delete every credential the devices of batch "+batch+" made themselves") {
		t.Errorf("the batch's confirmation says %q", msg)
	}
	if got := text(t, ctx, ".flash"); got != "Device-made credentials revoked: 2, of 2 of the batch's 3 devices." {
		t.Errorf("after revoking the batch the page says %q", got)
	}
	if deviceMade("lk-2")+deviceMade("lk-3") != 0 {
		t.Errorf("the batch's devices still hold device-made credentials")
	}
}
