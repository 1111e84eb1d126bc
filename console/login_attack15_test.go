package console_test

import (
	"context"
	"net/url"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestAttack15StrangersCannotFillTheLog: over the console's real login form, a stranger sends
// wrong passwords for the owner's email (in two spellings) and for unknown emails, many times:
// the log gains one login.failure per checked password of the real user, at most the throttle's
// five in its window, and nothing for unknown emails or throttled attempts (also not for the
// owner's right password while throttled).
func TestAttack15StrangersCannotFillTheLog(t *testing.T) {
	pgtest.Each(t, testAttack15StrangersCannotFillTheLog)
}

func testAttack15StrangersCannotFillTheLog(t *testing.T, database string) {
	e := newEnv(t, database)
	admin := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: e.accountID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	count := func(action string) int {
		entries, _, _, err := e.srv.Service.AuditLog(admin, devreg.AuditFilter{Action: action, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	for i := range 4 {
		e.post(t, "/login", url.Values{"email": {"nobody-" + string(rune('a'+i)) + "@acme.test"}, "password": {"wrong password"}})
	}
	for range 12 {
		e.post(t, "/login", url.Values{"email": {email}, "password": {"wrong password"}})
		e.post(t, "/login", url.Values{"email": {"  OWNER@ACME.TEST "}, "password": {"wrong password"}})
	}
	e.post(t, "/login", url.Values{"email": {email}, "password": {password}}) // throttled: refused unchecked
	if n := count("login.failure"); n != 5 {
		t.Errorf("%d login.failure entries after 24 wrong passwords for the owner and 4 for strangers; want 5 (the throttle's)", n)
	}
	if n := count("login.success"); n != 0 {
		t.Errorf("%d login.success entries while the owner's email is throttled", n)
	}
}
