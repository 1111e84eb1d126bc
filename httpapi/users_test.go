package httpapi_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"devreg/internal/pgtest"
)

type apiUser struct {
	ID            string  `json:"id"`
	Email         string  `json:"email"`
	Role          string  `json:"role"`
	CreatedAt     string  `json:"created_at"`
	LastLoginAt   *string `json:"last_login_at"`
	InvitationURL string  `json:"invitation_url"`
}

// TestUsersAPI invites, lists, changes and removes users through the API, as the contract
// says, and refuses what it must, each refusal naming what was wrong.
func TestUsersAPI(t *testing.T) { pgtest.Each(t, testUsersAPI) }

func testUsersAPI(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var u apiUser
	e.mustDo(t, e.admin, "POST", "/api/v1/users", `{"email": "Dana@Acme.test", "role": "operations"}`, 201, &u)
	if u.ID == "" || u.Email != "dana@acme.test" || u.Role != "operations" || u.LastLoginAt != nil ||
		!strings.HasPrefix(u.InvitationURL, e.srv.PublicURL()+"/invitation?token=") {
		t.Errorf("POST /users = %+v", u)
	}
	for _, tc := range []struct {
		name, key, method, path, body string
		status                        int
		says                          string
	}{
		{"unknown-role", e.admin, "POST", "/api/v1/users", `{"email": "x@acme.test", "role": "owner"}`, 422, "admin, operations or developer"},
		{"bad-email", e.admin, "POST", "/api/v1/users", `{"email": "x", "role": "developer"}`, 422, "not an email address"},
		{"taken-email", e.admin, "POST", "/api/v1/users", `{"email": "owner@other.test", "role": "developer"}`, 409, "already exists"},
		{"register-key-invites", e.registerKey, "POST", "/api/v1/users", `{"email": "y@acme.test", "role": "admin"}`, 403, `or higher`},
		{"read-key-lists", e.read, "GET", "/api/v1/users", "", 403, `or higher`},
		{"other-account-changes", e.other, "PATCH", "/api/v1/users/" + u.ID, `{"role": "admin"}`, 404, "no user"},
		{"other-account-removes", e.other, "DELETE", "/api/v1/users/" + u.ID, "", 404, "no user"},
		{"unknown-role-update", e.admin, "PATCH", "/api/v1/users/" + u.ID, `{"role": "root"}`, 422, "admin, operations or developer"},
		{"nothing-to-change", e.admin, "PATCH", "/api/v1/users/" + u.ID, `{}`, 422, "nothing to change"},
	} {
		status, body := e.send(t, req{key: tc.key, method: tc.method, path: tc.path, body: tc.body})
		if status != tc.status || !strings.Contains(string(body), tc.says) {
			t.Errorf("%s: %d %s, want %d saying %q", tc.name, status, body, tc.status, tc.says)
		}
	}
	var list struct{ Users []apiUser }
	e.mustDo(t, e.admin, "GET", "/api/v1/users", "", 200, &list)
	if len(list.Users) != 2 || list.Users[0].Email != "owner@acme.test" || list.Users[0].Role != "admin" || list.Users[1].ID != u.ID {
		t.Errorf("GET /users = %+v", list.Users)
	}
	var changed apiUser
	e.mustDo(t, e.admin, "PATCH", "/api/v1/users/"+u.ID, `{"role": "developer"}`, 200, &changed)
	if changed.Role != "developer" || changed.InvitationURL != "" {
		t.Errorf("PATCH role = %+v", changed)
	}
	e.mustDo(t, e.admin, "PATCH", "/api/v1/users/"+u.ID, `{"reset_password": true}`, 200, &changed)
	if changed.Role != "developer" || !strings.Contains(changed.InvitationURL, "/invitation?token=") || changed.InvitationURL == u.InvitationURL {
		t.Errorf("PATCH reset_password = %+v", changed)
	}
	owner := list.Users[0].ID
	status, body := e.send(t, req{key: e.admin, method: "PATCH", path: "/api/v1/users/" + owner, body: `{"role": "operations"}`})
	if status != 409 || !strings.Contains(string(body), "last admin") {
		t.Errorf("demoting the last admin: %d %s", status, body)
	}
	status, body = e.send(t, req{key: e.admin, method: "DELETE", path: "/api/v1/users/" + owner})
	if status != 409 || !strings.Contains(string(body), "last admin") {
		t.Errorf("removing the last admin: %d %s", status, body)
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/users/"+u.ID, "", 204, nil)
	e.mustDo(t, e.admin, "DELETE", "/api/v1/users/"+u.ID, "", 404, nil)

	var audit struct {
		Entries []struct{ Action string } `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit", "", 200, &audit)
	var actions []string
	for _, en := range audit.Entries {
		if strings.HasPrefix(en.Action, "user.") {
			actions = append(actions, en.Action)
		}
	}
	if got, want := strings.Join(actions, " "), "user.delete user.password_reset user.update user.create"; got != want {
		t.Errorf("audit, newest first: %s, want %s", got, want)
	}
}

// TestLastAdminUnderParallelRequests has the account's two admins demoted, and then removed, by
// two requests sent at once, many times: exactly one admin remains each time, and the other
// request is told why.
func TestLastAdminUnderParallelRequests(t *testing.T) {
	pgtest.Each(t, testLastAdminUnderParallelRequests)
}

func testLastAdminUnderParallelRequests(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var list struct{ Users []apiUser }
	e.mustDo(t, e.admin, "GET", "/api/v1/users", "", 200, &list)
	owner := list.Users[0].ID
	admins := func() (n int) {
		var list struct{ Users []apiUser }
		e.mustDo(t, e.admin, "GET", "/api/v1/users", "", 200, &list)
		for _, u := range list.Users {
			if u.Role == "admin" {
				n++
			}
		}
		return n
	}
	parallel := func(method string, ids []string, body string) []int {
		statuses := make([]int, len(ids))
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hr, _ := http.NewRequest(method, e.url+"/api/v1/users/"+id, strings.NewReader(body))
				hr.Header.Set("Authorization", "Bearer "+e.admin)
				if body != "" {
					hr.Header.Set("Content-Type", "application/json")
				}
				resp, err := e.http.Do(hr)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}()
		}
		wg.Wait()
		return statuses
	}
	for round := range 8 {
		var second apiUser
		e.mustDo(t, e.admin, "POST", "/api/v1/users", `{"email": "admin`+string(rune('a'+round))+`@acme.test", "role": "admin"}`, 201, &second)
		ids := []string{owner, second.ID}
		got := parallel("PATCH", ids, `{"role": "developer"}`)
		if n := admins(); n != 1 || !(got[0] == 200 && got[1] == 409 || got[0] == 409 && got[1] == 200) {
			t.Fatalf("round %d: both admins demoted at once: %v, %d admins remain", round, got, n)
		}
		for _, id := range ids {
			e.mustDo(t, e.admin, "PATCH", "/api/v1/users/"+id, `{"role": "admin"}`, 200, nil)
		}
		got = parallel("DELETE", ids, "")
		if n := admins(); n != 1 || !(got[0] == 204 && got[1] == 409 || got[0] == 409 && got[1] == 204) {
			t.Fatalf("round %d: both admins removed at once: %v, %d admins remain", round, got, n)
		}
		if got[0] == 204 {
			// The owner is gone: the second admin is the one to keep demoting.
			owner = second.ID
		}
	}
}
