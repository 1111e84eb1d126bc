package console_test

import (
	"regexp"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestPagesOfferWhatTheRoleMayDo: a developer sees no button that changes anything; an operations
// user may disable and delete the lots they registered and nothing else; an administrator sees
// every action. (The service refuses the rest regardless: TestWhoMayChangeABatch.)
func TestPagesOfferWhatTheRoleMayDo(t *testing.T) { pgtest.Each(t, testPagesOfferWhatTheRoleMayDo) }

func testPagesOfferWhatTheRoleMayDo(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	adminLot := e.uploadLot(t, dt, "lock-1, a-long-secret-1")
	_, opsClient := e.invite(t, "ops@acme.test", "operations")
	_, devClient := e.invite(t, "dev@acme.test", "developer")
	ops, dev := *e, *e
	ops.http, dev.http = opsClient, devClient
	opsLot := ops.uploadLot(t, dt, "lock-2, a-long-secret-2")

	adminOnly := map[string][]string{ // page: what only an administrator is offered there
		"/devices/lock-1":      {"Disable device", "Delete device…", `aria-label="Disable credential`, `aria-label="Delete credential`, "Add this secret", "Add this certificate"},
		"/devices":             {"Disable selected", "Delete selected…", `class="pick"`},
		"/devicetypes":         {`href="/devicetypes/` + dt + `/edit"`, `href="/devicetypes/` + dt + `/cas"`},
		"/batches/" + adminLot: {"Disable batch", "Delete lot…", "Revoke device-made credentials"},
		"/batches/" + opsLot:   {"Revoke device-made credentials"},
	}
	ownLot := []string{"Disable batch", "Delete lot…"}
	for _, tc := range []struct {
		role string
		e    *env
	}{{"admin", e}, {"operations", &ops}, {"developer", &dev}} {
		for page, actions := range adminOnly {
			status, body := tc.e.get(t, page)
			if status != 200 {
				t.Fatalf("%s: %s = %d", tc.role, page, status)
			}
			for _, a := range actions {
				if offered := strings.Contains(body, a); offered != (tc.role == "admin") {
					t.Errorf("%s: %s offers %q: %v", tc.role, page, a, offered)
				}
			}
		}
		_, body := tc.e.get(t, "/batches/"+opsLot)
		for _, a := range ownLot {
			if offered := strings.Contains(body, a); offered != (tc.role != "developer") {
				t.Errorf("%s: the operations user's own lot offers %q: %v", tc.role, a, offered)
			}
		}
	}
	if _, body := ops.get(t, "/batches/"+adminLot); !regexp.MustCompile(`You may disable or delete only the lots you registered yourself; this one was registered by [^<]*owner@acme.test`).MatchString(body) {
		t.Errorf("the operations user is not told why another's lot cannot be changed:\n%s", body)
	}
	if _, body := dev.get(t, "/devices/lock-1"); !strings.Contains(body, "Only an administrator may disable or delete a device") {
		t.Errorf("the developer is not told why the device page offers no actions")
	}
}
