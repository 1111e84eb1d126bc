package console_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg/internal/certtest"
)

// TestBrowserTrustedCAs sets a device type's certificate settings on its edit form, then adds a
// CA certificate on the type's Trusted CAs page by pasting its PEM, is told why a device
// certificate is refused there, and removes the CA after the browser's confirmation (a
// dismissed one removes nothing), all in Chromium.
func TestBrowserTrustedCAs(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	root := certtest.NewCA(t, "Acme Lock Factory CA")
	ctx := browser(t)
	asked, accept := answerDialogs(t, ctx)
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devicetypes/"+dt+"/edit"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#certificate_id_field")),
	))

	// The settings, from their defaults.
	field, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#certificate_id_field")))
	must(t, err)
	limit, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#auto_register_limit")))
	must(t, err)
	if field != "subject_cn" || limit != "100" {
		t.Errorf("the edit form shows %q and %q, want the defaults subject_cn and 100", field, limit)
	}
	must(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#certificate_id_field"), "san_uri"),
		chromedp.Click(chromedp.CSS("#auto_register")),
		chromedp.SetValue(chromedp.CSS("#auto_register_limit"), "250"),
	))
	clickThrough("main form button[type=submit]:not(.danger)", ".flash")
	got, err := e.srv.Service.DeviceType(e.asAdmin(), dt)
	must(t, err)
	if got.CertificateIDField != "san_uri" || !got.AutoRegister || got.AutoRegisterMax() != 250 {
		t.Errorf("after saving the form the type has %q, %v, %d", got.CertificateIDField, got.AutoRegister, got.AutoRegisterMax())
	}

	// Add the CA by pasting its PEM.
	must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+"/devicetypes/"+dt+"/cas"), chromedp.WaitVisible(chromedp.CSS("#certificate"))))
	if body := text(t, ctx, "main"); !strings.Contains(body, "trusts no CA yet") || !strings.Contains(body, "at most 250 an hour") {
		t.Errorf("the empty CA page says %q", body)
	}
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#certificate"), string(root.PEM))))
	clickThrough("main form button[type=submit]", ".flash")
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "CN=Acme Lock Factory CA is trusted now") || !strings.Contains(got, root.SHA256()) {
		t.Errorf("after adding the CA the page says %q", got)
	}
	if row := text(t, ctx, "tbody tr"); !strings.Contains(row, "CN=Acme Lock Factory CA") || !strings.Contains(row, root.SHA256()) {
		t.Errorf("the CA's row reads %q", row)
	}

	// A device certificate is not a CA; the page says so and nothing is added.
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#certificate"), string(root.Issue(t, "lock-1").PEM))))
	clickThrough("section.card form button[type=submit]", ".flash")
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "certificate: certificate is not a CA certificate") {
		t.Errorf("after pasting a device certificate the page says %q", got)
	}

	// Removing asks first.
	accept <- false
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("td.actions button"))))
	if msg := <-asked; !strings.Contains(msg, "Stop trusting CN=Acme Lock Factory CA?") {
		t.Errorf("the confirmation says %q", msg)
	}
	if cas, _ := e.srv.Service.ListTrustedCAs(e.asAdmin(), dt); len(cas) != 1 {
		t.Fatalf("after a dismissed confirmation the type trusts %d CAs, want 1", len(cas))
	}
	accept <- true
	clickThrough("td.actions button", ".flash")
	<-asked
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "CA removed") {
		t.Errorf("after removing the page says %q", got)
	}
	if cas, _ := e.srv.Service.ListTrustedCAs(e.asAdmin(), dt); len(cas) != 0 {
		t.Errorf("after removing the type trusts %d CAs", len(cas))
	}
}
