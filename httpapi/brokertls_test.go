package httpapi_test

import (
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestBrokerTLSKeys: a broker key made with trusts_broker_tls says so in its answer and in the
// listing; every other key says false; only a broker key may have it, and it cannot be changed
// later (a PATCH naming it is refused).
func TestBrokerTLSKeys(t *testing.T) { pgtest.Each(t, testBrokerTLSKeys) }

func testBrokerTLSKeys(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var k devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "rabbitmq tls", "scope": "broker", "trusts_broker_tls": true}`, 201, &k)
	if !k.TrustsBrokerTLS || k.Scope != devreg.ScopeBroker {
		t.Errorf("the new key: %+v", k)
	}
	var keys struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/apikeys", "", 200, &keys)
	for _, kk := range keys.APIKeys {
		if kk.TrustsBrokerTLS != (kk.ID == k.ID) {
			t.Errorf("key %s (%s) lists trusts_broker_tls %v", kk.Name, kk.Scope, kk.TrustsBrokerTLS)
		}
	}
	for _, tc := range []struct {
		name string
		req  req
		want int
		msg  string
	}{
		{"422/register-key", req{key: e.admin, method: "POST", path: "/api/v1/apikeys", body: `{"name": "k", "scope": "register", "trusts_broker_tls": true}`}, 422, "trusts_broker_tls"},
		{"422/admin-key", req{key: e.admin, method: "POST", path: "/api/v1/apikeys", body: `{"name": "k", "scope": "admin", "trusts_broker_tls": true}`}, 422, "trusts_broker_tls"},
		{"400/not-a-boolean", req{key: e.admin, method: "POST", path: "/api/v1/apikeys", body: `{"name": "k", "scope": "broker", "trusts_broker_tls": "yes"}`, invalid: true}, 400, "trusts_broker_tls"},
		{"400/patch", req{key: e.admin, method: "PATCH", path: "/api/v1/apikeys/" + k.ID, body: `{"trusts_broker_tls": false}`, invalid: true}, 400, "trusts_broker_tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.send(t, tc.req)
			if status != tc.want || !strings.Contains(decodeError(t, b).Error.Message, tc.msg) {
				t.Errorf("= %d %s, want %d naming %s", status, b, tc.want, tc.msg)
			}
		})
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/apikeys", "", 200, &keys)
	if len(keys.APIKeys) != 4 { // the owner's, the register and read keys of newEnv, and k
		t.Errorf("%d keys after the refusals, want 4", len(keys.APIKeys))
	}
}
