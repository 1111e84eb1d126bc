package console_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
)

// TestBrowserAuditLog opens the Audit Log from the navigation in Chromium, filters it by action
// and finds the entry of the change made before.
func TestBrowserAuditLog(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	thermostat := e.createType(t, "Thermostat T1")
	e.createType(t, "Gateway G2")
	e.register(t, thermostat, "proto-1", "prototype-secret")
	ctx := browser(t)

	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/devices"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#f-type")),
		chromedp.Click(chromedp.CSS(`nav a[href="/audit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#audit")),
	))
	column := func(i int) []string {
		t.Helper()
		cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#audit tbody tr")].map(r => r.cells[`+strconv.Itoa(i)+`].innerText.trim())`))
		must(t, err)
		return cells
	}
	if got := column(4); len(got) != 6 || got[0] != "login.success" || got[len(got)-1] != "account.create" {
		t.Errorf("the unfiltered log's actions, newest first: %q", got)
	}

	must(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#a-action"), "devicetype.create"),
		chromedp.Evaluate[chromedp.Void](`document.body.dataset.left = "yes"`),
		chromedp.Click(chromedp.CSS(".filter-buttons button")),
		chromedp.WaitVisible(chromedp.CSS("body:not([data-left]) #audit")),
	))
	if diff := cmp.Diff([]string{"devicetype.create", "devicetype.create"}, column(4)); diff != "" {
		t.Errorf("actions filtered by devicetype.create (-want +got):\n%s", diff)
	}
	if details := column(6); len(details) != 2 || !strings.Contains(details[0], "Gateway G2") || !strings.Contains(details[1], "Thermostat T1") {
		t.Errorf("the entries' details: %q, want the names of the two types, newest first", details)
	}
	if objects := column(5); len(objects) != 2 || objects[1] != "devicetype "+thermostat+"\nThermostat T1" {
		t.Errorf("the entries' objects: %q", objects)
	}
	value, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#a-action")))
	must(t, err)
	if value != "devicetype.create" {
		t.Errorf("the filtered page's action field holds %q", value)
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(screenshotDir(t), name+".png"), png, 0o644))
	}
	shot("11-audit-log")
	// The API Keys page with a restricted, expiring key, for people to look at.
	e.post(t, "/apikeys", url.Values{"name": {"line-3 station"}, "scope": {"register"}, "device_type_id": {thermostat}, "expires_at": {"2099-03-31T00:00"}})
	must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+"/apikeys"), chromedp.WaitVisible(chromedp.CSS("#api-keys"))))
	if row := text(t, ctx, "#api-keys tbody tr:last-child"); !strings.Contains(row, "Thermostat T1") || !strings.Contains(row, "2099-03-31 00:00 UTC") {
		t.Errorf("the restricted key's row reads %q", row)
	}
	shot("12-api-keys")
}
