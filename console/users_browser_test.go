package console_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserInvitation has the owner invite a developer on the Users page, the developer open
// the link, set a password, log in, and meet its role's limits: no Users or API Keys in the
// menu, no way to define a device type, and a refusal that names its role when it posts one
// anyway. The link then works no more.
func TestBrowserInvitation(t *testing.T) {
	e := newEnv(t, "")
	ctx := browser(t)
	shots := screenshotDir(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644))
	}
	goTo := func(path, waitFor string) {
		t.Helper()
		must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+path), chromedp.WaitVisible(chromedp.CSS(waitFor))))
	}
	logIn := func(email, password string) {
		t.Helper()
		goTo("/login", "#email")
		must(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#email"), email),
			chromedp.SendKeys(chromedp.CSS("#password"), password),
			chromedp.Click(chromedp.CSS("form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS("nav")),
		))
	}

	logIn(email, password)
	goTo("/users", "#u-email")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#u-email"), "dana@acme.test"),
		chromedp.SetValue(chromedp.CSS("#u-role"), "developer"),
		chromedp.Click(chromedp.CSS("form[action='/users'] button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#new-link-value")),
	))
	shot("users-invited")
	link, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#new-link-value")))
	must(t, err)
	if !strings.HasPrefix(link, e.srv.PublicURL()+"/invitation?token=") {
		t.Fatalf("the invitation link is %q", link)
	}
	if got := text(t, ctx, "#users"); !strings.Contains(got, "dana@acme.test") || !strings.Contains(got, "developer") {
		t.Errorf("the users table: %q", got)
	}
	// A reload shows the list, not the link again; at phone width it does not scroll sideways.
	goTo("/users", "#users")
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)))
	goTo("/users", "#users")
	shot("users-phone")
	if w, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); err != nil || w > 390 {
		wide, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > 390).slice(0, 8).map(e => e.tagName + "." + e.className + "#" + e.id + ":" + Math.round(e.getBoundingClientRect().right)).join(" ")`))
		t.Errorf("the Users page at 390 px is %d px wide (%v): %s", w, err, wide)
	}
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#new-link-value").length`)); err != nil || n != 0 {
		t.Errorf("the link is shown again on the Users page: %d, %v", n, err)
	}
	clickThrough(t, ctx, "form[action='/logout'] button", "#email")

	// The developer sets its password from the link.
	must(t, chromedp.Do(ctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#password2"))))
	shot("invitation")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#password"), "dana-password"),
		chromedp.SendKeys(chromedp.CSS("#password2"), "dana-password"),
	))
	clickThrough(t, ctx, "form[action='/invitation'] button[type=submit]", "#email")
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "password is set") {
		t.Errorf("after setting the password the page says %q", got)
	}
	logIn("dana@acme.test", "dana-password")
	shot("developer-devices")
	if got := text(t, ctx, "header"); !strings.Contains(got, "dana@acme.test (developer)") || strings.Contains(got, "Users") || strings.Contains(got, "API Keys") {
		t.Errorf("the developer's header: %q", got)
	}
	for _, p := range []struct{ path, form string }{{"/devices", "#r-id"}, {"/devicetypes", "#name"}} {
		goTo(p.path, "h1")
		if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("`+p.form+`").length`)); err != nil || n != 0 {
			t.Errorf("the developer's %s page shows the form %s: %d, %v", p.path, p.form, n, err)
		}
	}
	// The server refuses what the role may not do, whatever the page shows.
	status, body := postAs(t, ctx, e.url+"/devicetypes", "name=by+dana")
	if status != 403 || !strings.Contains(body, "role operations or higher; your role is developer") {
		t.Errorf("a developer defines a device type: %d %s", status, body)
	}
	goTo("/users", "h1")
	if got := text(t, ctx, "main"); !strings.Contains(got, "Not allowed") {
		t.Errorf("a developer opens the Users page: %q", got)
	}

	// The link worked once.
	must(t, chromedp.Do(ctx, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("h1"))))
	if got := text(t, ctx, "main"); !strings.Contains(got, "This link does not work") || !strings.Contains(got, "used already") {
		t.Errorf("the used link's page: %q", got)
	}
}

// postAs posts a form from the page, with the browser's session, and returns the answer.
func postAs(t *testing.T, ctx context.Context, url, form string) (int, string) {
	t.Helper()
	type answer struct {
		Status int
		Body   string
	}
	out, err := chromedp.Run(ctx, chromedp.Evaluate[answer](`fetch(`+"`"+url+"`"+`, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: "`+form+`"}).then(async r => ({Status: r.status, Body: await r.text()}))`,
		chromedp.EvalAwaitPromise))
	must(t, err)
	return out.Status, out.Body
}
