package httpapi_test

import (
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestAPIKeyNamesUnique: a key name an account has already is 409, when a key is made and when
// one is renamed, and the refusal names it; nothing changes.
func TestAPIKeyNamesUnique(t *testing.T) { pgtest.Each(t, testAPIKeyNamesUnique) }

func testAPIKeyNamesUnique(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var a, b devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line-3 station", "scope": "register"}`, 201, &a)
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line-4 station", "scope": "register"}`, 201, &b)
	for _, tc := range []struct {
		name string
		req  req
	}{
		{"409/create", req{key: e.admin, method: "POST", path: "/api/v1/apikeys", body: `{"name": "line-3 station", "scope": "read"}`}},
		{"409/rename", req{key: e.admin, method: "PATCH", path: "/api/v1/apikeys/" + b.ID, body: `{"name": "line-3 station"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.send(t, tc.req)
			if status != 409 || !strings.Contains(decodeError(t, body).Error.Message, `API key named "line-3 station" already`) {
				t.Errorf("= %d %s, want 409 naming the name", status, body)
			}
		})
	}
	var keys struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/apikeys", "", 200, &keys)
	names := map[string]int{}
	for _, k := range keys.APIKeys {
		names[k.Name]++
	}
	if names["line-3 station"] != 1 || names["line-4 station"] != 1 {
		t.Errorf("key names after the refusals: %v", names)
	}
}
