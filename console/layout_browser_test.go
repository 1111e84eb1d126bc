package console_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"devreg"
	"devreg/console"
	"devreg/registry"
)

// layoutCheck is the script the layout test runs on each page. It measures what a person on a
// phone or with a keyboard meets: whether the page is wider than the screen (and which elements
// stick out), and the WCAG contrast ratio of every piece of visible text against the background
// it is drawn on, from the computed styles.
const layoutCheck = `(() => {
  const parse = c => {
    const m = /rgba?\(([^)]*)\)/.exec(c);
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  // background composes every background colour from el up to the first opaque one.
  const background = el => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = matchMedia("(prefers-color-scheme: dark)").matches ? [18, 18, 18, 1] : [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    return bg;
  };
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).join(".") : "");
  const visible = el => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden" && !el.closest(".sr-only, [hidden], option, head, script, style");
  const out = {page: document.body.dataset.page || "", scrollWidth: document.documentElement.scrollWidth, width: window.innerWidth, wide: [], text: [], bodyLum: lum(background(document.body))};
  for (const el of document.body.querySelectorAll("*")) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.right > window.innerWidth + 0.5 && (!el.closest(".tablewrap, pre") || getComputedStyle(el).position === "absolute")) out.wide.push(name(el) + " ends at " + Math.round(r.right));
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim() !== "") ||
      (["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName) && el.type !== "hidden" && el.value);
    if (!own) continue;
    const s = getComputedStyle(el), bg = background(el);
    const fg = over(parse(s.color), bg);
    const size = parseFloat(s.fontSize), large = size >= 24 || (size >= 18.66 && Number(s.fontWeight) >= 700);
    const got = ratio(fg, bg), want = large ? 3 : 4.5;
    if (got < want) out.text.push(name(el) + " " + JSON.stringify((el.innerText || el.value || "").trim().slice(0, 40)) + ": " + got.toFixed(2) + ":1, want " + want + ":1 (" + s.color + " on " + bg.slice(0, 3).join(",") + ")");
  }
  return out;
})()`

// focusCheck focuses, in tab order, every element the keyboard reaches and measures its focus
// ring: the outline's width and its contrast against what is behind the element (the ring is
// drawn outside it). It runs after a real Tab key press, so the browser shows the ring for a
// focus set by a script as it does for one moved by the keyboard.
const focusCheck = `(() => {
  const parse = c => { const m = /rgba?\(([^)]*)\)/.exec(c); const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const first = document.activeElement;
  const out = {first: first ? first.tagName.toLowerCase() + "." + first.className : "", stops: []};
  const all = [...document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")]
    .filter(el => el.tabIndex >= 0 && !el.disabled && el.type !== "hidden" && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden");
  for (const el of all) {
    el.focus();
    if (document.activeElement !== el) continue;
    const layers = [];
    for (let e = el.parentElement; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (const c of layers.reverse()) bg = over(c, bg);
    const s = getComputedStyle(el), ring = over(parse(s.outlineColor), bg);
    const x = lum(ring), y = lum(bg);
    out.stops.push({name: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " " + JSON.stringify((el.innerText || el.getAttribute("aria-label") || el.name || "").trim().slice(0, 30)),
      style: s.outlineStyle, width: parseFloat(s.outlineWidth), ratio: (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05)});
  }
  return out;
})()`

type layoutReport struct {
	Page        string   `json:"page"`
	ScrollWidth float64  `json:"scrollWidth"`
	Width       float64  `json:"width"`
	Wide        []string `json:"wide"`
	Text        []string `json:"text"`
	BodyLum     float64  `json:"bodyLum"`
}

type focusReport struct {
	First string `json:"first"`
	Stops []struct {
		Name  string  `json:"name"`
		Style string  `json:"style"`
		Width float64 `json:"width"`
		Ratio float64 `json:"ratio"`
	} `json:"stops"`
}

// TestBrowserEveryPageFitsAndContrasts visits every console page in Chromium at a phone's width
// (390 px) and at a desktop's, in the light and the dark colour scheme, and checks that no page
// is wider than the screen, that all visible text has a WCAG contrast of at least 4.5:1 (3:1 when
// large), that the first Tab reaches a skip link to the content, and that every element the
// keyboard reaches shows a focus ring of at least 2 px with 3:1 contrast. It leaves a screenshot
// of each page at each width and scheme in DEVREG_SCREENSHOT_DIR/layout (by default
// $TMPDIR/devreg-screenshots/layout).
func TestBrowserEveryPageFitsAndContrasts(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	dt := e.createType(t, "Thermostat T1 with a rather long name for a phone")
	if status, body := e.post(t, "/devices", url.Values{"device_id": {"thermostat-0001"}, "secret": {"a-secret-of-some-length"}, "device_type_id": {dt}}); status != 200 {
		t.Fatalf("register = %d:\n%s", status, body)
	}
	if status, body := e.upload(t, map[string]string{"device_type_id": dt}, "lot-0001.csv", "d-1, secretfordevice1, d-2, secretfordevice2\n"); status != 200 {
		t.Fatalf("upload = %d:\n%s", status, body)
	}
	d, err := e.srv.Service.Device(e.asAdmin(), "thermostat-0001")
	must(t, err)
	key, err := e.srv.Service.CreateAPIKey(e.asAdmin(), devreg.NewAPIKey{Name: "line-3 station", Scope: devreg.ScopeRegister, DeviceTypeIDs: []string{dt}})
	must(t, err)
	_, err = e.srv.Service.CreateEnrollmentGroup(e.asAdmin(), dt, devreg.NewEnrollmentGroup{Name: "Line 3", IDPattern: "^L-[0-9]{6}$", MaxDevices: 500})
	must(t, err)
	_, link, err := e.srv.Service.CreateUser(e.asAdmin(), registry.NewUser{Email: "dana@maker.example", Role: devreg.RoleOperations})
	must(t, err)
	invitation, err := url.Parse(link)
	must(t, err)
	hook, err := e.srv.Service.CreateWebhook(e.asAdmin(), "http://127.0.0.1:9/a/rather/long/path/for/a/phone/screen?token=0123456789abcdef", []string{"devices.registered"}, true)
	must(t, err)
	_, err = e.srv.Service.TestWebhook(e.asAdmin(), hook.ID) // a failed try, with its long error, to show
	must(t, err)
	badPath := filepath.Join(t.TempDir(), "bad.csv")
	must(t, os.WriteFile(badPath, []byte("device 7, secretfordevice7,\ndevice8, short\n"), 0o644))

	ctx := browserFor(t, 8*time.Minute) // 80 page views, each measured and photographed
	shots := filepath.Join(screenshotDir(t), "layout")
	must(t, os.MkdirAll(shots, 0o755))
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login"), chromedp.WaitVisible(chromedp.CSS("#email")),
	))

	// Each visit reaches a page: by address, or by sending a form from the page before it.
	type visit struct {
		name string
		path string                          // navigate here; or
		post func(ctx context.Context) error // send a form on the page at path
	}
	posts := 0 // each form sent, to give what it makes a name of its own
	submit := func(path, sel, waitFor string, fill ...func(n int) chromedp.Action[chromedp.Void]) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			posts++
			acts := []chromedp.Action[chromedp.Void]{chromedp.Navigate(e.url + path), chromedp.WaitVisible(chromedp.CSS(sel))}
			for _, f := range fill {
				acts = append(acts, f(posts))
			}
			acts = append(acts, chromedp.Evaluate[chromedp.Void](`document.body.dataset.left = "yes"`), chromedp.Click(chromedp.CSS(sel)),
				chromedp.WaitVisible(chromedp.CSS("body:not([data-left]) :is("+waitFor+", .flash.error, .error-page)")))
			if err := chromedp.Do(ctx, acts...); err != nil {
				return err
			}
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector(`+"`"+waitFor+"`"+`)`)); err != nil || !ok {
				return fmt.Errorf("sending the form on %s led to a page without %s: %q", path, waitFor, text(t, ctx, "main"))
			}
			return nil
		}
	}
	// keys types text into the field sel; a %d in it becomes the form's number.
	keys := func(sel, text string) func(n int) chromedp.Action[chromedp.Void] {
		return func(n int) chromedp.Action[chromedp.Void] {
			typed := text
			if strings.Contains(text, "%d") {
				typed = fmt.Sprintf(text, n)
			}
			return chromedp.SendKeys(chromedp.CSS(sel), typed)
		}
	}
	// bulk sends the Devices page's form of changes to a selection: the device and one that does
	// not exist, so that the answer is a page (a change that all went through redirects).
	bulk := func(action, page string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			return chromedp.Do(ctx, chromedp.Navigate(e.url+"/devices"), chromedp.WaitVisible(chromedp.CSS("#bulk")),
				chromedp.Evaluate[chromedp.Void](`(() => {
  const f = document.querySelector("#bulk");
  for (const id of ["thermostat-0001", "no-such-device"]) {
    const i = document.createElement("input"); i.type = "hidden"; i.name = "device_id"; i.value = id; f.appendChild(i);
  }
  const a = document.createElement("input"); a.type = "hidden"; a.name = "action"; a.value = "`+action+`"; f.appendChild(a);
  document.body.dataset.left = "yes";
  HTMLFormElement.prototype.submit.call(f);
})()`),
				chromedp.WaitVisible(chromedp.CSS("body:not([data-left])[data-page="+page+"]")))
		}
	}
	dev := "/devices/" + d.DeviceID
	visits := []visit{
		{name: "login", path: "/login"},
		{name: "login-in", post: submit("/login", "form button[type=submit]", "#f-type",
			keys("#email", email), keys("#password", password))},
		{name: "devices", path: "/devices"},
		{name: "upload", path: "/devices/upload"},
		{name: "upload-refused", post: submit("/devices/upload", "#upload-form button[type=submit]", "#problems",
			func(int) chromedp.Action[chromedp.Void] { return chromedp.SetValue(chromedp.CSS("#u-type"), dt) },
			func(int) chromedp.Action[chromedp.Void] {
				return chromedp.SetUploadFiles(chromedp.CSS("#u-file"), []string{badPath})
			})},
		{name: "device", path: dev},
		{name: "credential-new", post: submit(dev, "button[name=generate][value=true]", "#new-secret")},
		{name: "device-delete", path: dev + "/delete"},
		{name: "devicetypes", path: "/devicetypes"},
		{name: "devicetype-edit", path: "/devicetypes/" + dt + "/edit"},
		{name: "devicetype-cas", path: "/devicetypes/" + dt + "/cas"},
		{name: "devicetype-groups", path: "/devicetypes/" + dt + "/enrollment_groups"},
		{name: "group-created", post: submit("/devicetypes/"+dt+"/enrollment_groups", "#create-group button[type=submit]", "#new-group-key",
			keys("#g-name", "Line %d"), keys("#g-pattern", "^M%d-[0-9]{6}$"), keys("#g-max", "500"))},
		{name: "batches", path: "/batches"},
		{name: "batch", path: "/batches/" + d.BatchID},
		{name: "batch-delete", path: "/batches/" + d.BatchID + "/delete"},
		{name: "devices-bulk-delete", post: bulk("delete", "devices_bulk_delete")},
		{name: "devices-bulk-result", post: bulk("enable", "devices_bulk_result")},
		{name: "apikeys", path: "/apikeys"},
		{name: "apikey-created", post: submit("/apikeys", "form[action='/apikeys'] button[type=submit]", "#new-key-value",
			keys("#k-name", "key %d made in the layout test"))},
		{name: "apikey-edit", path: "/apikeys/" + key.ID + "/edit"},
		{name: "audit", path: "/audit"},
		{name: "users", path: "/users"},
		{name: "webhooks", path: "/webhooks"},
		{name: "webhook", path: "/webhooks/" + hook.ID},
		{name: "password", path: "/account/password"},
		{name: "invitation", path: invitation.RequestURI()},
		{name: "error", path: "/devices/no-such-device"},
	}
	seen := map[string]bool{}
	for round, scheme := range []string{"light", "dark"} {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		must(t, err)
		for _, width := range []int64{390, 1280} {
			must(t, chromedp.Do(ctx, chromedp.EmulateViewport(width, 844)))
			for i, v := range visits {
				if v.name == "login-in" {
					if round > 0 || width > 390 {
						continue // logged in once; the session lasts
					}
				}
				if v.post != nil {
					must(t, v.post(ctx))
				} else {
					must(t, chromedp.Do(ctx, chromedp.Navigate(e.url+v.path), chromedp.WaitReady(chromedp.CSS("body[data-page]"))))
				}
				// Measure only once the stylesheet is in: a layout forced before it loads has no styles.
				must(t, chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`new Promise(r => document.readyState === "complete" ? r() : addEventListener("load", () => r()))`, chromedp.EvalAwaitPromise)))
				rep, err := chromedp.Run(ctx, chromedp.Evaluate[layoutReport](layoutCheck))
				must(t, err)
				seen[rep.Page] = true
				where := fmt.Sprintf("%s (%s page) at %d px, %s", v.name, rep.Page, width, scheme)
				if rep.ScrollWidth > rep.Width {
					t.Errorf("%s: the page is %v px wide, wider than the %v px screen; sticking out: %s", where, rep.ScrollWidth, rep.Width, strings.Join(rep.Wide, "; "))
				}
				for _, p := range rep.Text {
					t.Errorf("%s: text contrast too low: %s", where, p)
				}
				if dark := rep.BodyLum < 0.05; dark != (scheme == "dark") {
					t.Errorf("%s: the page's background has luminance %.2f, not a %s scheme", where, rep.BodyLum, scheme)
				}
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90))
				must(t, err)
				must(t, os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s-%dpx-%s.png", i, v.name, width, scheme)), png, 0o644))
				checkFocusRings(t, ctx, where)
			}
		}
	}
	var missing []string
	h, err := console.New(e.srv.Service, slog.New(slog.DiscardHandler), console.Config{})
	must(t, err)
	for _, p := range h.Pages() {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the test visited no %s page: add it to the visits", strings.Join(missing, ", "))
	}
	t.Logf("screenshots at 390 and 1280 px, light and dark, are in %s (set DEVREG_SCREENSHOT_DIR to keep them elsewhere)", shots)
}

// checkFocusRings presses Tab on the page as loaded: the first stop is the skip link (on a page
// that puts the focus in a field itself, the skip link is first in tab order). Then every stop
// must show a focus ring at least 2 px wide with 3:1 contrast against what is behind it.
func checkFocusRings(t *testing.T, ctx context.Context, where string) {
	t.Helper()
	autofocus, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.activeElement !== document.body`))
	must(t, err)
	must(t, chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)))
	f, err := chromedp.Run(ctx, chromedp.Evaluate[focusReport](focusCheck))
	must(t, err)
	if !autofocus && f.First != "a.skip" {
		t.Errorf("%s: the first Tab reaches %s, not the skip link", where, f.First)
	}
	if len(f.Stops) == 0 || !strings.HasPrefix(f.Stops[0].Name, "a ") || !strings.Contains(f.Stops[0].Name, "Skip to content") {
		t.Errorf("%s: the first stop in tab order is not the skip link: %+v", where, f.Stops[:min(1, len(f.Stops))])
	}
	for _, s := range f.Stops {
		if s.Style == "none" || s.Width < 2 || s.Ratio < 3 {
			t.Errorf("%s: focus ring of %s is %s %.0f px at %.2f:1, want at least 2 px at 3:1", where, s.Name, s.Style, s.Width, s.Ratio)
		}
	}
}
