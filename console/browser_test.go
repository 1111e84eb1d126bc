package console_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"
)

// browser starts headless Chromium for a test. Browser tests are part of the suite: a machine
// without Chromium fails them rather than skipping them.
func browser(t *testing.T) context.Context {
	t.Helper()
	return browserFor(t, 2*time.Minute)
}

// browserFor is browser for a test that may take up to limit, such as one that visits every page.
func browserFor(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	path := os.Getenv("DEVREG_CHROMIUM")
	if path == "" {
		for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
			if found, err := exec.LookPath(p); err == nil {
				path = found
				break
			}
		}
	}
	if path == "" {
		t.Fatal("browser tests need Chromium: apt-get install -y chromium (or set DEVREG_CHROMIUM to its path)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-quic", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, limit)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	return ctx
}

// screenshotDir is where the browser test leaves a picture of each main page, for people to look at.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("DEVREG_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "devreg-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clickThrough clicks sel and waits for waitFor on the page the click leads to, not on the page
// it was clicked on.
func clickThrough(t *testing.T, ctx context.Context, sel, waitFor string) {
	t.Helper()
	must(t, chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`document.body.dataset.left = "yes"`),
		chromedp.Click(chromedp.CSS(sel)),
		chromedp.WaitVisible(chromedp.CSS("body:not([data-left]) "+waitFor)),
	))
}

// answerDialogs answers the page's confirmations: each takes its answer from accept and then
// sends its message to asked. They are answered from another goroutine, since the click that
// opened one waits for it.
func answerDialogs(t *testing.T, ctx context.Context) (asked <-chan string, accept chan<- bool) {
	dialogs, questions, answers := make(chan string, 4), make(chan string, 4), make(chan bool, 4)
	must(t, chromedp.Listen(ctx, func(ev any) {
		if ev, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs <- ev.Message
		}
	}))
	go func() {
		for msg := range dialogs {
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: <-answers})
			questions <- msg
		}
	}()
	t.Cleanup(func() { close(dialogs) })
	return questions, answers
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	must(t, err)
	return s
}

// TestBrowserSeedFlow clicks through the seed document's Method 1 in a real browser.
func TestBrowserSeedFlow(t *testing.T) {
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
	flash := func() string { t.Helper(); return text(t, ctx, ".flash") }
	clickThrough := func(sel, waitFor string) { t.Helper(); clickThrough(t, ctx, sel, waitFor) }

	// Log in.
	goTo("/devices", "#email")
	shot("01-login")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#f-type")),
	))

	// Define two device types.
	for _, name := range []string{"Thermostat T1", "Gateway G2"} {
		goTo("/devicetypes", "#name")
		must(t, chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#name"), name),
			chromedp.Click(chromedp.CSS("main form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS(".flash")),
		))
		if got := flash(); !strings.Contains(got, name) || !strings.Contains(got, "created") {
			t.Fatalf("after creating %s the page says %q", name, got)
		}
	}
	shot("02-device-types")
	typeID := func(name string) string {
		t.Helper()
		id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("table tbody tr")].find(r => r.cells[0].innerText === "`+name+`").cells[1].innerText`))
		must(t, err)
		return id
	}
	thermostat, gateway := typeID("Thermostat T1"), typeID("Gateway G2")

	// Register one device while prototyping.
	goTo("/devices", "#r-id")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#r-id"), "proto-1"),
		chromedp.SendKeys(chromedp.CSS("#r-secret"), "prototype-secret"),
		chromedp.SetValue(chromedp.CSS("#r-type"), thermostat),
		chromedp.Click(chromedp.CSS("form[method=post][action='/devices'] button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	))
	if got := flash(); got != "Device proto-1 registered." {
		t.Fatalf("after registering one device the page says %q", got)
	}

	// Bulk-upload the contract's example through the "Bulk Upload" link.
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "lot-0001.csv")
	must(t, os.WriteFile(csvPath, []byte("device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3,\n\ndevice4, secretfordevice4, device5, secretfordevice5\n"), 0o644))
	gwPath := filepath.Join(dir, "gateways.csv")
	must(t, os.WriteFile(gwPath, []byte("gw-1, gatewaysecret1,\ngw-2, gatewaysecret2\n"), 0o644))
	upload := func(typeID, path string, checkOnly bool) {
		t.Helper()
		goTo("/devices", "#f-type")
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(".pagehead a.button")),
			chromedp.WaitVisible(chromedp.CSS("#u-file")),
			chromedp.SetValue(chromedp.CSS("#u-type"), typeID),
			chromedp.SetUploadFiles(chromedp.CSS("#u-file"), []string{path}),
		))
		if checkOnly {
			must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#u-dry"))))
		}
		must(t, chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS("#upload-form button[type=submit]")),
			chromedp.WaitVisible(chromedp.CSS("#created, #problems")),
		))
	}
	upload(thermostat, csvPath, false)
	if got := text(t, ctx, "#created"); got != "5" {
		t.Fatalf("upload result shows %q created, want 5", got)
	}
	shot("04-upload-result")
	upload(gateway, gwPath, false)

	// The Devices page, filtered by type, shows exactly that type's devices.
	deviceIDs := func() []string {
		t.Helper()
		ids, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#devices tbody tr td:first-child")].map(td => td.innerText)`))
		must(t, err)
		return ids
	}
	for _, tc := range []struct {
		typeID string
		want   []string
	}{
		{thermostat, []string{"proto-1", "device1", "device2", "device3", "device4", "device5"}}, // registration order
		{gateway, []string{"gw-1", "gw-2"}},
	} {
		goTo("/devices", "#f-type")
		must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#f-type"), tc.typeID)))
		clickThrough(".filter-buttons button", "#devices")
		if diff := cmp.Diff(tc.want, deviceIDs()); diff != "" {
			t.Errorf("devices filtered by %s (-want +got):\n%s", tc.typeID, diff)
		}
	}
	shot("03-devices-filtered")

	// A bad file is refused whole, with every problem listed.
	badPath := filepath.Join(dir, "bad.csv")
	must(t, os.WriteFile(badPath, []byte("device6, secretfordevice6,\ndevice 7, secretfordevice7,\ndevice8, short\n"), 0o644))
	upload(thermostat, badPath, false)
	refusal := text(t, ctx, "main")
	if !strings.Contains(refusal, "nothing was registered") || !strings.Contains(refusal, "device ID contains a space") ||
		!strings.Contains(refusal, "secret is 5 characters long") {
		t.Errorf("bad file result:\n%s", refusal)
	}
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[][]string](`[...document.querySelectorAll("#problems tbody tr")].map(r => [...r.cells].slice(0, 3).map(c => c.innerText))`))
	must(t, err)
	// Entries and lines both count from 1: device 7 is the file's second entry, on its second line.
	if diff := cmp.Diff([][]string{{"2", "2", "device 7"}, {"3", "3", "device8"}}, rows); diff != "" {
		t.Errorf("problems (entry, line, ID) (-want +got):\n%s", diff)
	}
	// The download of every problem sends the file again: the page has chosen the one just
	// uploaded, and what the browser sends with it is the list as CSV.
	downloaded, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(async () => {
		const form = document.getElementById("problems-form");
		const file = document.getElementById("problems-file").files[0];
		if (!file) return "no file chosen";
		const resp = await fetch(form.action, {method: "POST", body: new FormData(form)});
		return file.name + "\n" + resp.headers.get("Content-Disposition") + "\n" + await resp.text();
	})()`, chromedp.EvalAwaitPromise))
	must(t, err)
	if want := "bad.csv\nattachment; filename=problems-bad.csv\nentry,line,device_id,problem\n2,2,device 7,device ID contains a space\n3,3,device8,secret is 5 characters long"; !strings.HasPrefix(downloaded, want) {
		t.Errorf("the download of all problems from the refused upload's page:\n%s\nwant it to start\n%s", downloaded, want)
	}
	shot("05-upload-refused")
	goTo("/devices?prefix=device6", "#f-type")
	if ids := deviceIDs(); len(ids) != 0 {
		t.Errorf("the refused file registered %v", ids)
	}

	// Batches.
	goTo("/batches", "main h1")
	if got := text(t, ctx, "main table"); !strings.Contains(got, "lot-0001.csv") || !strings.Contains(got, "gateways.csv") {
		t.Errorf("batches page lacks the uploaded files:\n%s", got)
	}
	shot("06-batches")

	// An API key is shown once.
	goTo("/apikeys", "#k-name")
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#k-name"), "line-3 station"),
		chromedp.Click(chromedp.CSS("form[action='/apikeys'] button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#new-key-value")),
	))
	key, err := chromedp.Run(ctx, chromedp.Value(chromedp.CSS("#new-key-value")))
	must(t, err)
	if !strings.HasPrefix(key, "drk_") {
		t.Fatalf("new key field holds %q", key)
	}
	shot("07-api-key-created")
	goTo("/apikeys", "#k-name")
	if page := text(t, ctx, "main"); strings.Contains(page, key) || !strings.Contains(page, "line-3 station") {
		t.Errorf("the key list shows the key again, or not its name")
	}

	// A device's page, then the phone-sized Devices page.
	goTo("/devices/device1", "dl.facts")
	shot("08-device")
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)))
	goTo("/devices?device_type_id="+thermostat, "#devices")
	shot("09-devices-phone")
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)))

	// The interactive API docs load from the embedded assets, with "Authorize".
	goTo("/docs", "button.authorize")
	if got := text(t, ctx, "body"); !strings.Contains(got, "PUT") || !strings.Contains(got, "/devicetypes/{device_type_id}/device_ids") {
		t.Errorf("docs page lacks the registration call:\n%.500s", got)
	}
	shot("10-api-docs")

	// Log out.
	goTo("/devices", ".logout button")
	must(t, chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(".logout button")),
		chromedp.WaitVisible(chromedp.CSS("#email")),
	))
	if got := flash(); got != "You are logged out." {
		t.Errorf("after logout the page says %q", got)
	}
	goTo("/devices", "#email")
	t.Logf("screenshots of each main page are in %s", shots)
}
