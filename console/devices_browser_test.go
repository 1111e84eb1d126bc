package console_test

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// TestBrowserDevicesList sorts, searches, exports and bulk-disables on the Devices page in
// Chromium, on SQLite and on PostgreSQL, and leaves screenshots of it at desktop and phone width.
func TestBrowserDevicesList(t *testing.T) { pgtest.Each(t, testBrowserDevicesList) }

func testBrowserDevicesList(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := browser(t)
	shots := screenshotDir(t)
	name := "sqlite"
	if store.IsPostgres(database) {
		name = "postgres"
	}
	shot := func(what string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(shots, "devices-list-"+what+"-"+name+".png"), png, 0o644))
	}
	goTo := func(path, waitFor string) {
		t.Helper()
		must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+path), chromedp.WaitVisible(chromedp.CSS(waitFor))))
	}
	deviceIDs := func() []string {
		t.Helper()
		ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#devices tbody tr td:first-child")].map(td => td.innerText.trim())`))
		must(t, err)
		return ids
	}
	filter := func(set ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		goTo("/devices", "#f-sort")
		must(t, chromedp.Do(ctx, set...))
		clickThrough(t, ctx, ".filter-buttons button", "#summary")
	}

	goTo("/devices", "#email")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#f-type")),
	))
	goTo("/devicetypes", "#name")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#name"), "Lock"),
		chromedp.Click(chromedp.CSS("main form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	))
	typeID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("table tbody tr").cells[1].innerText`))
	must(t, err)
	// Two lots, their IDs out of order: registration order is 03 01 02 05 04.
	dir := t.TempDir()
	for i, lot := range []string{"lock-03, secret-lock-03, lock-01, secret-lock-01, lock-02, secret-lock-02", "lock-05, secret-lock-05, lock-04, secret-lock-04"} {
		path := filepath.Join(dir, []string{"first.csv", "second.csv"}[i])
		must(t, os.WriteFile(path, []byte(lot), 0o644))
		goTo("/devices/upload", "#u-file")
		must(t, chromedp.Do(ctx,
			chromedp.SetValue(chromedp.CSS("#u-type"), typeID),
			chromedp.SetUploadFiles(chromedp.CSS("#u-file"), []string{path}),
			chromedp.Click(chromedp.CSS("#upload-form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS("#created")),
		))
	}

	// Each order.
	registered := []string{"lock-03", "lock-01", "lock-02", "lock-05", "lock-04"}
	byID := slices.Sorted(slices.Values(registered))
	newest := slices.Clone(registered)
	slices.Reverse(newest)
	for _, c := range []struct {
		sort string
		want []string
	}{{"", registered}, {"newest", newest}, {"id", byID}} {
		filter(chromedp.SetValue(chromedp.CSS("#f-sort"), c.sort))
		if diff := cmp.Diff(c.want, deviceIDs()); diff != "" {
			t.Errorf("sorted by %q (-want +got):\n%s", c.sort, diff)
		}
	}
	shot("desktop")
	// The newest lot is one click away.
	goTo("/devices", "#newest-lot")
	clickThrough(t, ctx, "#newest-lot", "#summary")
	if diff := cmp.Diff([]string{"lock-05", "lock-04"}, deviceIDs()); diff != "" {
		t.Errorf("the newest lot (-want +got):\n%s", diff)
	}
	// A time says how long ago, with the exact time on hover.
	title, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#devices time").title`))
	must(t, err)
	if !strings.HasSuffix(title, " UTC") {
		t.Errorf("a registration time's title is %q, want the exact UTC time", title)
	}

	// A search by substring, whatever order was chosen, lists by ID.
	filter(chromedp.SendKeys(chromedp.CSS("#f-contains"), "k-0"), chromedp.SetValue(chromedp.CSS("#f-sort"), "newest"))
	if diff := cmp.Diff(byID, deviceIDs()); diff != "" {
		t.Errorf("search k-0 (-want +got):\n%s", diff)
	}
	if got := text(t, ctx, "#summary"); !strings.Contains(got, "device ID order") {
		t.Errorf("the summary of a search in another order says %q", got)
	}
	filter(chromedp.SendKeys(chromedp.CSS("#f-contains"), "4"))
	if diff := cmp.Diff([]string{"lock-04"}, deviceIDs()); diff != "" {
		t.Errorf("search 4 (-want +got):\n%s", diff)
	}

	// The export downloads the filter's devices, in its order, with the CLI's columns.
	downloads := t.TempDir()
	done := make(chan string, 1)
	must(t, chromedp.ListenBrowser(ctx, func(ev any) {
		if ev, ok := ev.(*cdpbrowser.EventDownloadProgress); ok && ev.State == cdpbrowser.DownloadProgressStateCompleted {
			done <- ev.GUID
		}
	}))
	events := true
	_, err = chromedp.CallBrowser(ctx, cdpbrowser.SetDownloadBehavior, cdpbrowser.SetDownloadBehaviorParams{
		Behavior: cdpbrowser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: &events})
	must(t, err)
	goTo("/devices?sort=newest", "#export")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#export"))))
	var guid string
	select {
	case guid = <-done:
	case <-ctx.Done():
		t.Fatal("the export did not download")
	}
	f, err := os.Open(filepath.Join(downloads, guid))
	must(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	must(t, err)
	if diff := cmp.Diff(devreg.DeviceExportColumns, rows[0]); diff != "" {
		t.Errorf("export header (-want +got):\n%s", diff)
	}
	var exported []string
	for _, r := range rows[1:] {
		exported = append(exported, r[0])
	}
	if diff := cmp.Diff(newest, exported); diff != "" {
		t.Errorf("exported devices, newest first (-want +got):\n%s", diff)
	}

	// Select all on the page ticks every device; two are then disabled in bulk.
	goTo("/devices?sort=id", "#select-all")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#select-all"))))
	n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("input[name=device_id]:checked").length`))
	must(t, err)
	if n != 5 {
		t.Errorf("select all ticked %d devices, want 5", n)
	}
	must(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#select-all")),
		chromedp.Click(chromedp.CSS(`input[name=device_id][value="lock-02"]`)),
		chromedp.Click(chromedp.CSS(`input[name=device_id][value="lock-04"]`)),
	))
	clickThrough(t, ctx, `button[name=action][value=disable]`, ".flash")
	if got := text(t, ctx, ".flash"); got != "Disabled 2 devices." {
		t.Errorf("after the bulk disable the page says %q", got)
	}
	statuses, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#devices tbody tr")].map(r => r.cells[0].innerText.trim() + " " + r.cells[2].innerText)`))
	must(t, err)
	if diff := cmp.Diff([]string{"lock-01 enabled", "lock-02 disabled", "lock-03 enabled", "lock-04 disabled", "lock-05 enabled"}, statuses); diff != "" {
		t.Errorf("statuses after the bulk disable, back on the list sorted by ID (-want +got):\n%s", diff)
	}
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)))
	goTo("/devices?sort=id", "#devices")
	shot("phone")
}
