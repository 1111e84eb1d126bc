package registry_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/registry"
)

// tokenOf is the token of a one-time link.
func tokenOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil || u.Path != "/invitation" || u.Query().Get("token") == "" {
		t.Fatalf("link %q is not a one-time link", link)
	}
	return u.Query().Get("token")
}

// TestUsers invites a user, who sets its password once through the link and logs in with the
// role it was given; an admin changes the role (the user's next request runs with it), forces a
// reset (its sessions end, its old password and link stop working) and removes it; the last
// admin stays; emails and roles are checked; every change is audited.
func TestUsers(t *testing.T) { pgtest.Each(t, testUsers) }

func testUsers(t *testing.T, dbURL string) {
	svc, _ := registry.OpenTestService(t, dbURL)
	a, admin := makerA(t, svc)
	svc.PublicURL = "https://devreg.example.com"
	ctx := context.Background()

	for _, tc := range []struct{ name, email, role, code string }{
		{"bad-email", "not an email", "developer", devreg.EINVALID},
		{"unknown-role", "x@a.example", "owner", devreg.EINVALID},
		{"taken-email", "OWNER@a.example", "developer", devreg.ECONFLICT},
	} {
		if _, _, err := svc.CreateUser(admin, registry.NewUser{Email: tc.email, Role: devreg.Role(tc.role)}); devreg.ErrorCode(err) != tc.code {
			t.Errorf("%s: err = %v, want %s", tc.name, err, tc.code)
		}
	}
	u, link, err := svc.CreateUser(admin, registry.NewUser{Email: " Dev@A.example ", Role: devreg.RoleDeveloper})
	if err != nil {
		t.Fatal(err)
	}
	if u.Email != "dev@a.example" || !strings.HasPrefix(link, "https://devreg.example.com/invitation?token=") {
		t.Fatalf("CreateUser = %+v, %q", u, link)
	}
	token := tokenOf(t, link)
	for _, pw := range []string{"", "no such user"} { // "no such user" is what an unknown email's work checks
		if _, err := svc.Login(ctx, "dev@a.example", pw); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
			t.Errorf("an invited user logs in with %q before setting a password: %v", pw, err)
		}
	}
	if got, err := svc.LinkUser(ctx, token); err != nil || got.ID != u.ID {
		t.Errorf("LinkUser = %+v, %v", got, err)
	}
	if _, err := svc.UseLink(ctx, token, "short"); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("a short password: %v", err)
	}
	if _, err := svc.UseLink(ctx, token, "dev-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.UseLink(ctx, token, "other-password"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("the link used again: %v, want not found", err)
	}
	session, err := svc.Login(ctx, "dev@a.example", "dev-password")
	if err != nil {
		t.Fatal(err)
	}
	c, err := svc.SessionCaller(ctx, session)
	if err != nil || c.Scope != devreg.ScopeRead || c.UserID != u.ID {
		t.Fatalf("the developer's caller = %+v, %v", c, err)
	}
	dev := devreg.NewContextWithCaller(ctx, c)
	if _, err := svc.CreateDeviceType(dev, devreg.DeviceType{Name: "by a developer"}); devreg.ErrorCode(err) != devreg.EFORBIDDEN ||
		!strings.Contains(err.Error(), "role operations") {
		t.Errorf("a developer creates a device type: %v", err)
	}
	if _, _, err := svc.CreateUser(dev, registry.NewUser{Email: "mine@a.example", Role: devreg.RoleAdmin}); devreg.ErrorCode(err) != devreg.EFORBIDDEN {
		t.Errorf("a developer invites an admin: %v", err)
	}
	role := devreg.RoleOperations
	if _, _, err := svc.UpdateUser(dev, u.ID, registry.UserUpdate{Role: &role}); devreg.ErrorCode(err) != devreg.EFORBIDDEN {
		t.Errorf("a developer promotes itself: %v", err)
	}

	// Promoted, the session's next request runs as operations.
	if _, _, err := svc.UpdateUser(admin, u.ID, registry.UserUpdate{Role: &role}); err != nil {
		t.Fatal(err)
	}
	if c, err := svc.SessionCaller(ctx, session); err != nil || c.Scope != devreg.ScopeRegister {
		t.Errorf("after the change of role, the caller = %+v, %v", c, err)
	}
	// The user changes its own password: the current one is needed, the session stays.
	c, _ = svc.SessionCaller(ctx, session)
	me := devreg.NewContextWithCaller(ctx, c)
	if err := svc.ChangePassword(me, session, "wrong-password", "new-dev-password"); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("ChangePassword with a wrong current one: %v", err)
	}
	if err := svc.ChangePassword(me, session, "dev-password", "new-dev-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SessionCaller(ctx, session); err != nil {
		t.Errorf("the session that changed the password ended: %v", err)
	}
	// A forced reset ends the session and the password; the new link sets a new one.
	_, link, err = svc.UpdateUser(admin, u.ID, registry.UserUpdate{ResetPassword: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SessionCaller(ctx, session); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("a reset user's session: %v", err)
	}
	if _, err := svc.Login(ctx, "dev@a.example", "new-dev-password"); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("the password before the reset: %v", err)
	}
	if _, err := svc.UseLink(ctx, tokenOf(t, link), "reset-password"); err != nil {
		t.Fatal(err)
	}
	if session, err = svc.Login(ctx, "dev@a.example", "reset-password"); err != nil {
		t.Fatal(err)
	}
	// Demoted, its session ends at once; logged in again, it works as a developer.
	demoted := devreg.RoleDeveloper
	if _, _, err := svc.UpdateUser(admin, u.ID, registry.UserUpdate{Role: &demoted}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SessionCaller(ctx, session); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("a demoted user's session: %v", err)
	}
	if session, err = svc.Login(ctx, "dev@a.example", "reset-password"); err != nil {
		t.Fatal(err)
	}
	if c, err := svc.SessionCaller(ctx, session); err != nil || c.Scope != devreg.ScopeRead {
		t.Errorf("logged in again after the demotion, the caller = %+v, %v", c, err)
	}
	// Removed, its session ends at once.
	if err := svc.DeleteUser(admin, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SessionCaller(ctx, session); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("a removed user's session: %v", err)
	}

	// The owner is the last admin: it can be neither demoted nor removed.
	users, err := svc.ListUsers(admin)
	if err != nil || len(users) != 1 {
		t.Fatalf("ListUsers = %+v, %v", users, err)
	}
	owner := users[0]
	if owner.Role != devreg.RoleAdmin || owner.LastLoginAt != nil {
		t.Errorf("the owner = %+v", owner)
	}
	if _, _, err := svc.UpdateUser(admin, owner.ID, registry.UserUpdate{Role: &role}); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("demoting the last admin: %v", err)
	}
	if err := svc.DeleteUser(admin, owner.ID); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("removing the last admin: %v", err)
	}

	entries, _, _, err := svc.AuditLog(admin, devreg.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "user.") {
			actions = append([]string{e.Action}, actions...)
		}
	}
	want := "user.create user.password_set user.update user.password_change user.password_reset user.password_set user.update user.delete"
	if got := strings.Join(actions, " "); got != want {
		t.Errorf("audit: %s\nwant   %s", got, want)
	}
	_ = a
}

// TestLinkGuessesAreThrottled sends links that are not valid from one address: after the
// throttle's allowance, even a valid link is refused until the window passes.
func TestLinkGuessesAreThrottled(t *testing.T) { pgtest.Each(t, testLinkGuessesAreThrottled) }

func testLinkGuessesAreThrottled(t *testing.T, dbURL string) {
	svc, _ := registry.OpenTestService(t, dbURL)
	_, admin := makerA(t, svc)
	_, link, err := svc.CreateUser(admin, registry.NewUser{Email: "dev@a.example", Role: devreg.RoleDeveloper})
	if err != nil {
		t.Fatal(err)
	}
	ctx := devreg.NewContextWithClientIP(context.Background(), "192.0.2.7")
	var last error
	for i := range 11 {
		_, last = svc.UseLink(ctx, "guess-"+string(rune('a'+i)), "a-password")
	}
	if devreg.ErrorCode(last) != devreg.ERATELIMITED {
		t.Errorf("the 11th wrong link: %v, want rate limited", last)
	}
	if _, err := svc.UseLink(ctx, tokenOf(t, link), "a-password"); devreg.ErrorCode(err) != devreg.ERATELIMITED {
		t.Errorf("a valid link after the guesses: %v, want rate limited", err)
	}
	other := devreg.NewContextWithClientIP(context.Background(), "192.0.2.8")
	if _, err := svc.UseLink(other, tokenOf(t, link), "a-password"); err != nil {
		t.Errorf("the valid link from another address: %v", err)
	}
}
