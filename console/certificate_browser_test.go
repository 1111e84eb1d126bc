package console_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg/internal/certtest"
)

// TestBrowserAddCertificate pastes a device's certificate on its page in Chromium: the device then
// lists a certificate credential with its fingerprint and subject; a certificate that names
// another device is refused with the reason.
func TestBrowserAddCertificate(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	e.register(t, dt, "lock-1", "lock-secret-1")
	ca := certtest.NewCA(t, "Factory CA")
	leaf := ca.Issue(t, "lock-1")
	ctx := browser(t)

	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devices/lock-1"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#c-certificate")),
		chromedp.SetValue(chromedp.CSS("#c-certificate"), string(leaf.PEM)),
	))
	clickThrough(t, ctx, `#add-certificate-form button[value="certificate"]`, ".flash")
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "Certificate credential") || !strings.Contains(got, leaf.SHA256()[:16]) {
		t.Errorf("after adding the certificate the page says %q", got)
	}
	kinds, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#credential-list tbody tr")].map(r => r.cells[1].innerText)`))
	must(t, err)
	if len(kinds) != 2 || !strings.HasPrefix(kinds[0], "secret") || !strings.Contains(kinds[1], "certificate "+leaf.SHA256()[:16]) || !strings.Contains(kinds[1], "CN=lock-1") {
		t.Errorf("the device's credentials show kinds %q, want the secret and the certificate", kinds)
	}

	// A certificate of another device is refused, naming why.
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#c-certificate"), string(ca.Issue(t, "lock-2").PEM))))
	clickThrough(t, ctx, `#add-certificate-form button[value="certificate"]`, "h1")
	if got := text(t, ctx, "main"); !strings.Contains(got, `"lock-2"`) || !strings.Contains(got, `"lock-1"`) {
		t.Errorf("a certificate of another device: the page says %q", got)
	}
}
