package console_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserDeleteLot deletes a named lot in Chromium from its batch page: "Delete lot…" leads
// to a confirmation page that names the count and the lot, Cancel leads back with nothing
// deleted, and the page's Delete button deletes the lot and says so on the batch list. The
// confirmation page is left as screenshots at desktop and phone width, where it must not scroll
// sideways.
func TestBrowserDeleteLot(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Plug")
	var csv strings.Builder
	for i := range 1500 {
		fmt.Fprintf(&csv, "pl-%04d, secret-of-plug-%04d\n", i, i)
	}
	status, body := e.upload(t, map[string]string{"device_type_id": dt, "batch_name": "Lot 7"}, "plugs.csv", csv.String())
	if status != 200 {
		t.Fatalf("upload = %d:\n%s", status, body)
	}
	ctx := browser(t)
	shots := screenshotDir(t)
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/batches"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("table a[href^='/batches/bat_']")),
	))
	clickThrough("table a[href^='/batches/bat_']", "#delete a.button")
	clickThrough("#delete a.button", "section.danger h1")
	heading := text(t, ctx, "section.danger h1")
	if !strings.HasPrefix(heading, "Delete 1,500 devices of lot Lot 7 (bat_") {
		t.Errorf("the confirmation asks %q", heading)
	}
	for _, w := range []struct {
		name          string
		width, height int64
	}{{"desktop", 1280, 800}, {"phone", 390, 844}} {
		must(t, chromedp.Do(ctx, chromedp.EmulateViewport(w.width, w.height)))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(shots, "batch-delete-"+w.name+".png"), png, 0o644))
		wide, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > document.documentElement.clientWidth`))
		must(t, err)
		if wide {
			t.Errorf("the confirmation page scrolls sideways at %d px", w.width)
		}
	}
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)))

	// Cancel: back on the batch page, nothing deleted.
	clickThrough("section.danger a.secondary", "#delete a.button")
	if status, _ := e.get(t, "/devices/pl-0001"); status != 200 {
		t.Errorf("after Cancel pl-0001 answers %d, want 200", status)
	}
	clickThrough("#delete a.button", "section.danger h1")
	clickThrough("section.danger button.danger", ".flash")
	if got := text(t, ctx, ".flash"); !strings.HasPrefix(got, "Batch bat_") || !strings.HasSuffix(got, "deleted, with its 1,500 devices.") {
		t.Errorf("after deleting the page says %q", got)
	}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("table a[href^='/batches/bat_']").length`)); err != nil || n != 0 {
		t.Errorf("the batch list still shows %d batches (%v)", n, err)
	}
	if status, _ := e.get(t, "/devices/pl-0001"); status != 404 {
		t.Errorf("after deleting pl-0001 answers %d, want 404", status)
	}
}
