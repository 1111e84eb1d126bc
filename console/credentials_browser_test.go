package console_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
)

// TestBrowserCredentials generates a device's secret on its page in Chromium, copies it with the
// Copy button, then disables and deletes a credential, confirming the delete in the browser's
// dialog.
func TestBrowserCredentials(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Lock")
	e.register(t, dt, "lock-1", "lock-secret-1")
	ctx := browser(t)
	shots := screenshotDir(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644))
	}
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }
	type row struct{ ID, Status string }
	rows := func() []row {
		t.Helper()
		cells, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](
			`[...document.querySelectorAll("#credential-list tbody tr")].map(r => [r.cells[0].innerText, r.querySelector(".badge").innerText])`))
		must(t, err)
		var out []row
		for _, c := range cells {
			out = append(out, row{c[0], c[1]})
		}
		return out
	}

	// Every script error and every message the page logs as an error (a refused inline script
	// would be one) fails the test.
	var mu sync.Mutex
	var pageErrors []string
	dialogs := make(chan string, 4)
	must(t, chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			if d.Exception != nil && d.Exception.Description != "" {
				pageErrors = append(pageErrors, d.Exception.Description)
			} else {
				pageErrors = append(pageErrors, d.Text)
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError && !strings.HasSuffix(ev.Entry.URL, "/favicon.ico") {
				pageErrors = append(pageErrors, ev.Entry.Text+" "+ev.Entry.URL)
			}
		case *page.EventJavascriptDialogOpening:
			select {
			case dialogs <- ev.Message:
			default:
			}
		}
	}))
	_, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{})
	must(t, err)
	// Answer confirmation dialogs from another goroutine: the click that opened one waits for it.
	accepted := make(chan string, 4)
	go func() {
		for msg := range dialogs {
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
			accepted <- msg
		}
	}()
	t.Cleanup(func() { close(dialogs) })

	// Log in, straight to the device's page.
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devices/lock-1"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#credential-list")),
	))
	registered := rows()
	if len(registered) != 1 || registered[0].Status != "enabled" {
		t.Fatalf("credentials of a registered device = %+v, want one, enabled", registered)
	}

	// Generate a secret: the answer shows it once, with a warning and a Copy button.
	clickThrough(`form[action="/devices/lock-1/credentials"] button[value="true"]`, "#new-secret")
	secret, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#new-secret")))
	must(t, err)
	newID := text(t, ctx, "#new-credential h2 code")
	if len(secret) < 32 || !strings.HasPrefix(newID, "cr_") {
		t.Fatalf("the page shows secret %q for credential %q", secret, newID)
	}
	if got := text(t, ctx, ".callout.warn"); !strings.Contains(got, "will not be shown again") {
		t.Errorf("the warning says %q", got)
	}
	where, err := chromedp.Run(ctx, chromedp.Location())
	must(t, err)
	if strings.Contains(where, secret) {
		t.Errorf("the secret is in the address %s", where)
	}

	// Copy it. The browser lets the page write the clipboard as a user who allowed it would, and
	// the test reads the clipboard back.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
			Permission: &cdpbrowser.PermissionDescriptor{Name: name}, Setting: cdpbrowser.PermissionSettingGranted, Origin: e.url})
		must(t, err)
	}
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`button[data-copy="new-secret"]`))))
	label, err := chromedp.Run(ctx, chromedp.Poll[string](`document.querySelector('[data-copy="new-secret"]').textContent !== "Copy" && document.querySelector('[data-copy="new-secret"]').textContent`,
		chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		mu.Lock()
		reported := slices.Clone(pageErrors)
		mu.Unlock()
		t.Fatalf("the Copy button gave no feedback (%v); the page reported: %q", err, reported)
	}
	if label != "Copied" || text(t, ctx, "#copy-status") != "Copied to the clipboard." {
		t.Errorf("after Copy the button says %q and the status %q", label, text(t, ctx, "#copy-status"))
	}
	selected, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(f => document.activeElement === f && f.selectionStart === 0 && f.selectionEnd === f.value.length)(document.getElementById("new-secret"))`))
	must(t, err)
	if !selected {
		t.Errorf("after Copy the secret is not selected")
	}
	copied, err := chromedp.Run(ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	must(t, err)
	if copied != secret {
		t.Errorf("the clipboard holds %q, want the secret", copied)
	}
	shot("11-credential-secret")

	// Back on the device's page the new credential is listed, and its secret is not shown.
	clickThrough(`a.button[href="/devices/lock-1#credentials"]`, "#credential-list")
	if diff := cmp.Diff([]row{{registered[0].ID, "enabled"}, {newID, "enabled"}}, rows()); diff != "" {
		t.Errorf("credentials after generating one (-want +got):\n%s", diff)
	}
	if got := text(t, ctx, "main"); strings.Contains(got, secret) {
		t.Errorf("the device page shows the generated secret")
	}
	html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`))
	must(t, err)
	if strings.Contains(html, secret) {
		t.Errorf("the device page's HTML holds the generated secret")
	}

	// Disable the registration's credential, then delete it.
	clickThrough(`#cred-`+registered[0].ID+` form[action$="/status"] button`, "#credential-list")
	if msg := <-accepted; !strings.Contains(msg, "Disable credential "+registered[0].ID+"?") {
		t.Errorf("the disable confirmation says %q", msg)
	}
	if got := text(t, ctx, ".flash"); got != "Credential "+registered[0].ID+" is disabled." {
		t.Errorf("after disabling the page says %q", got)
	}
	if diff := cmp.Diff([]row{{registered[0].ID, "disabled"}, {newID, "enabled"}}, rows()); diff != "" {
		t.Errorf("credentials after disabling one (-want +got):\n%s", diff)
	}
	shot("12-device-credentials")
	clickThrough(`#cred-`+registered[0].ID+` form[action$="/delete"] button`, "#credential-list")
	if msg := <-accepted; !strings.Contains(msg, "Delete credential "+registered[0].ID) {
		t.Errorf("the delete confirmation says %q", msg)
	}
	if got := text(t, ctx, ".flash"); !strings.Contains(got, "Credential "+registered[0].ID+" deleted") {
		t.Errorf("after deleting the page says %q", got)
	}
	if diff := cmp.Diff([]row{{newID, "enabled"}}, rows()); diff != "" {
		t.Errorf("credentials after deleting one (-want +got):\n%s", diff)
	}

	// The last enabled credential cannot be disabled: the browser shows why, with the status.
	clickThrough(`#cred-`+newID+` form[action$="/status"] button`, "main h1")
	<-accepted
	if got := text(t, ctx, "main"); !strings.Contains(got, "That did not work") || !strings.Contains(got, "is the only credential that lets device") {
		t.Errorf("disabling the last credential shows:\n%s", got)
	}

	mu.Lock()
	defer mu.Unlock()
	// The refusal just above is logged by the browser as a failed load (409); nothing else may be.
	var unexpected []string
	for _, e := range pageErrors {
		if !strings.Contains(e, "409") {
			unexpected = append(unexpected, e)
		}
	}
	if len(unexpected) > 0 {
		t.Errorf("the pages reported errors:\n%s", strings.Join(unexpected, "\n"))
	}
}
