package console_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg"
)

// TestBrowserEnrollmentGroups follows the link from the device types page to a type's
// enrollment groups, creates a group with the form and copies its key from the page that shows it
// once, disables it after the browser's confirmation (a dismissed one changes nothing), makes a
// new key, and deletes the group, all in Chromium.
func TestBrowserEnrollmentGroups(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	ctx := browser(t)
	asked, accept := answerDialogs(t, ctx)
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devicetypes"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/devicetypes/`+dt+`/enrollment_groups"]`)),
	))
	clickThrough(`a[href="/devicetypes/`+dt+`/enrollment_groups"]`, "#g-pattern")
	if body := text(t, ctx, "main"); !strings.Contains(body, "has no enrollment group yet") {
		t.Errorf("the empty page says %q", body)
	}

	// Create: the page that answers shows the key, once.
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#g-name"), "Line 3"),
		chromedp.SendKeys(chromedp.CSS("#g-pattern"), "^L-[0-9]{6}$"),
		chromedp.SendKeys(chromedp.CSS("#g-max"), "500"),
	))
	clickThrough("#create-group button[type=submit]", "#new-group-key")
	key, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#new-group-key-value")))
	must(t, err)
	if raw, err := base64.StdEncoding.DecodeString(key); err != nil || len(raw) != 32 {
		t.Fatalf("the key shown (%d characters) is not base64 of 32 bytes", len(key))
	}
	if row := text(t, ctx, "#enrollment-groups tbody tr"); !strings.Contains(row, "Line 3") || !strings.Contains(row, "^L-[0-9]{6}$") ||
		!strings.Contains(row, "0 / 500") || !strings.Contains(row, "enabled") {
		t.Errorf("the group's row reads %q", row)
	}
	groups, err := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt)
	if err != nil || len(groups) != 1 || groups[0].MaxPerHour != devreg.DefaultEnrollmentPerHour || !groups[0].Temporary {
		t.Fatalf("the form made %+v, %v", groups, err)
	}
	g := groups[0]
	// Reloading the page does not show it again.
	must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+"/devicetypes/"+dt+"/enrollment_groups"), chromedp.WaitVisible(chromedp.CSS("#enrollment-groups"))))
	if html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html"))); err != nil || strings.Contains(html, key) || strings.Contains(html, "new-group-key") {
		t.Errorf("the reloaded page shows the key (%v)", err)
	}

	// Disabling asks first.
	accept <- false
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("button.group-toggle"))))
	if msg := <-asked; !strings.Contains(msg, "Disable the group Line 3?") {
		t.Errorf("the confirmation says %q", msg)
	}
	if got, _ := e.srv.Service.EnrollmentGroup(e.asAdmin(), dt, g.ID); got.Status != devreg.StatusEnabled {
		t.Fatalf("after a dismissed confirmation the group is %s", got.Status)
	}
	accept <- true
	clickThrough("button.group-toggle", ".flash")
	<-asked
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "Group Line 3 is disabled") {
		t.Errorf("after disabling the page says %q", got)
	}
	if got := text(t, ctx, "td.group-status"); !strings.Contains(got, "disabled") {
		t.Errorf("the status reads %q", got)
	}

	// A new key, shown once, and different.
	accept <- true
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("details.rotate summary"))))
	clickThrough("button.group-rotate", "#new-group-key")
	<-asked
	key2, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#new-group-key-value")))
	must(t, err)
	if key2 == key || len(key2) != 44 || !strings.Contains(text(t, ctx, "#new-group-key"), "older keys work until") {
		t.Errorf("after the rotation the page shows %q", text(t, ctx, "#new-group-key"))
	}
	if got := text(t, ctx, "td.group-keys"); strings.Count(got, "egk_") != 2 || !strings.Contains(got, "ends ") {
		t.Errorf("the keys read %q", got)
	}

	// Delete asks first.
	accept <- true
	clickThrough("button.group-delete", ".flash")
	if msg := <-asked; !strings.Contains(msg, "Delete the group Line 3?") {
		t.Errorf("the confirmation says %q", msg)
	}
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "Group deleted") {
		t.Errorf("after deleting the page says %q", got)
	}
	if groups, _ := e.srv.Service.ListEnrollmentGroups(e.asAdmin(), dt); len(groups) != 0 {
		t.Errorf("after deleting the type has %d groups", len(groups))
	}
}
