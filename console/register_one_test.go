package console_test

import (
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"devreg/internal/pgtest"
)

// TestRegisterOneRefusalKeepsTheID: a refused registration from the register-one form comes
// back to the form with the ID as typed (never the secret) and the reason at the form, not at the
// top of the page; the form asks the browser for the type's minimum secret length.
func TestRegisterOneRefusalKeepsTheID(t *testing.T) {
	pgtest.Each(t, testRegisterOneRefusalKeepsTheID)
}

func testRegisterOneRefusalKeepsTheID(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	long := e.createType(t, "Vault")
	if status, body := e.post(t, "/devicetypes/"+long, url.Values{"name": {"Vault"}, "min_secret_length": {"20"}}); status != 200 {
		t.Fatalf("set the minimum = %d:\n%s", status, body)
	}
	status, body := e.post(t, "/devices", url.Values{"device_id": {"vault-7"}, "secret": {"too-short-1"}, "device_type_id": {long}})
	if status != 200 {
		t.Fatalf("refused registration = %d", status)
	}
	form := body[strings.Index(body, `id="register"`):]
	if !regexp.MustCompile(`id="register-error" role="alert">vault-7 was not registered: [^<]*secret is 11 characters long`).MatchString(form) {
		t.Errorf("the form does not say why:\n%s", form)
	}
	if !strings.Contains(form, `value="vault-7" aria-invalid="true" aria-describedby="register-error"`) {
		t.Errorf("the form lost the ID typed:\n%s", form)
	}
	if !regexp.MustCompile(`<option value="`+long+`" data-minlength="20" selected>`).MatchString(form) || !strings.Contains(form, `minlength="20"`) {
		t.Errorf("the form does not offer the type again with its minimum secret length:\n%s", form)
	}
	if top := body[:strings.Index(body, `id="register"`)]; strings.Contains(top, "was not registered") || strings.Contains(body, "too-short-1") {
		t.Errorf("the refusal is shown at the top of the page, or the secret is on it")
	}
	// A plain visit has an empty form with the first type's minimum, and no error.
	_, body = e.get(t, "/devices")
	if strings.Contains(body, "register-error") || !strings.Contains(body, `<option value="`+dt+`" data-minlength="8" selected>`) {
		t.Errorf("the plain devices page's form:\n%s", body[strings.Index(body, `id="register"`):])
	}
}

// TestBrowserRegisterOneChecksSecretLength: choosing a device type in the register-one form sets
// the secret's minimum length, so the browser refuses a short secret before sending it.
func TestBrowserRegisterOneChecksSecretLength(t *testing.T) {
	e := newEnv(t, "")
	e.login(t)
	e.createType(t, "Lock")
	long := e.createType(t, "Vault")
	e.post(t, "/devicetypes/"+long, url.Values{"name": {"Vault"}, "min_secret_length": {"20"}})
	ctx := browser(t)
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/login?next=/devices"),
		chromedp.WaitVisible(chromedp.CSS("#email")),
		chromedp.SendKeys(chromedp.CSS("#email"), email),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("form button[type=submit]")),
		chromedp.WaitVisible(chromedp.CSS("#r-type")),
		chromedp.SendKeys(chromedp.CSS("#r-id"), "vault-7"),
		chromedp.SendKeys(chromedp.CSS("#r-secret"), "only-12-long"),
	))
	valid := func() bool {
		t.Helper()
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("r-secret").checkValidity()`))
		must(t, err)
		return ok
	}
	if !valid() {
		t.Fatalf("a 12-character secret is refused for a type whose minimum is 8")
	}
	must(t, chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#r-type"), long),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("r-type").dispatchEvent(new Event("change", {bubbles: true}))`)))
	if valid() {
		t.Errorf("a 12-character secret passes for a type whose minimum is 20")
	}
	if got := text(t, ctx, "#r-secret-help"); !strings.Contains(got, "At least 20 characters") {
		t.Errorf("the help says %q", got)
	}
}
