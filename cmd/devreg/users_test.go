package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestUsersCommands manages an account's users offline, on the server's data: adds a user with
// an invitation link and one with a password from stdin, lists them, changes a role, refuses to
// demote or remove the last admin, removes a user, and sets a locked-out owner's password from
// stdin, with which the owner then logs in to the running server.
func TestUsersCommands(t *testing.T) {
	pgtest.Each(t, testUsersCommands)
}

func testUsersCommands(t *testing.T, database string) {
	dir := t.TempDir()
	dbArgs := []string{"--database", database}
	acme := createAccount(t, dir, "Acme", "owner@acme.test", dbArgs...)
	run := func(stdin string, args ...string) (int, string, string) {
		t.Helper()
		return cli{dir: dir}.run(t, stdin, append(args, dbArgs...)...)
	}
	code, out, errOut := run("", "users", "add", "--account", acme.AccountID, "--email", "dana@acme.test", "--role", "developer",
		"--public-url", "https://devreg.acme.test/")
	var added struct {
		Role          string `json:"role"`
		InvitationURL string `json:"invitation_url"`
	}
	json.Unmarshal([]byte(out), &added)
	if code != 0 || added.Role != "developer" || !strings.HasPrefix(added.InvitationURL, "https://devreg.acme.test/invitation?token=") {
		t.Fatalf("users add = %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run("a long password\n", "users", "add", "--account", acme.AccountID, "--email", "ops@acme.test", "--role", "operations", "--password-stdin"); code != 0 ||
		strings.Contains(out, "invitation_url") {
		t.Fatalf("users add --password-stdin = %d %s %s", code, out, errOut)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		says string
	}{
		{"no-account", []string{"users", "list"}, 2, "--account is required"},
		{"unknown-account", []string{"users", "list", "--account", "acc_nope"}, 1, "no account acc_nope"},
		{"unknown-role", []string{"users", "add", "--account", acme.AccountID, "--email", "x@acme.test", "--role", "owner"}, 1, "admin, operations or developer"},
		{"unknown-user", []string{"users", "remove", "--account", acme.AccountID, "--email", "nobody@acme.test"}, 1, "has no user nobody@acme.test"},
		{"demote-last-admin", []string{"users", "set-role", "--account", acme.AccountID, "--email", "owner@acme.test", "--role", "developer"}, 1, "last admin"},
		{"remove-last-admin", []string{"users", "remove", "--account", acme.AccountID, "--email", "owner@acme.test"}, 1, "last admin"},
	} {
		if code, out, errOut := run("", tc.args...); code != tc.code || !strings.Contains(out+errOut, tc.says) {
			t.Errorf("%s: exit %d %s %s, want %d saying %q", tc.name, code, out, errOut, tc.code, tc.says)
		}
	}
	if code, out, errOut := run("", "users", "set-role", "--account", acme.AccountID, "--email", "dana@acme.test", "--role", "admin"); code != 0 || !strings.Contains(out, "dana@acme.test is now admin") {
		t.Errorf("users set-role = %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run("", "users", "remove", "--account", acme.AccountID, "--email", "ops@acme.test"); code != 0 || !strings.Contains(out, "removed") {
		t.Errorf("users remove = %d %s %s", code, out, errOut)
	}
	code, out, errOut = run("", "users", "list", "--account", acme.AccountID)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.Contains(lines[1], "owner@acme.test") || !strings.Contains(lines[1], "admin") ||
		!strings.Contains(lines[2], "dana@acme.test") || !strings.Contains(lines[2], "never") {
		t.Errorf("users list = %d:\n%s%s", code, out, errOut)
	}

	// The locked-out owner.
	if code, out, errOut := run("short\n", "users", "reset-password", "--email", "owner@acme.test"); code != 1 || !strings.Contains(errOut, "at least 8") {
		t.Errorf("a short password: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := run("back in at last\n", "users", "reset-password", "--email", "Owner@Acme.test"); code != 0 || !strings.Contains(out, "owner@acme.test is set") {
		t.Fatalf("users reset-password = %d %s %s", code, out, errOut)
	}
	base, _ := serve(t, dir, dbArgs...)
	login := func(password string) int {
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.PostForm(base+"/login", url.Values{"email": {"owner@acme.test"}, "password": {password}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := login("correct horse battery"); got != http.StatusUnauthorized {
		t.Errorf("the old password logs in: %d", got)
	}
	if got := login("back in at last"); got != http.StatusSeeOther {
		t.Errorf("the new password: %d, want 303 to the console", got)
	}
}
