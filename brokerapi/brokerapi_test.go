package brokerapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/passwordtest"
	"devreg/internal/pgtest"
	"devreg/server"
)

// fleet is a real server with registered devices and a broker key.
type fleet struct {
	url, account, brokerKey, adminKey, token string
	srv                                      *server.Server
	dataDir, database, typeID                string
}

type entries []devreg.DeviceEntry

func (l *entries) Next() (devreg.DeviceEntry, error) {
	if len(*l) == 0 {
		return devreg.DeviceEntry{}, io.EOF
	}
	e := (*l)[0]
	*l = (*l)[1:]
	return e, nil
}

func newFleet(t *testing.T, database string) fleet {
	t.Helper()
	ctx := context.Background()
	dataDir := t.TempDir()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: dataDir, Database: database, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv.Service.HashPassword = passwordtest.Hash
	go srv.Serve()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections() // else Shutdown waits 5 s for connections never used
		srv.Shutdown(context.Background())
	})
	acc, admin, err := srv.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	actx := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	dt, err := srv.Service.CreateDeviceType(actx, devreg.DeviceType{Name: "Sensor", MQTTSubscribe: []string{"devices/{device_id}/cmd/#", "fleet/{device_type_id}/broadcast"}})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range []string{"d1", "AA:BB:CC:00:00:01", "off", "dot.ted"} {
		l := entries{{Index: 0, DeviceID: d, Secret: "secretfor" + strings.ReplaceAll(d, ":", "")}}
		if _, err := srv.Service.Register(actx, dt.ID, &l, devreg.RegisterOptions{}); err != nil {
			t.Fatalf("register %d: %v", i, err)
		}
	}
	if _, err := srv.Service.SetDeviceStatus(actx, "off", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	k, err := srv.Service.CreateAPIKey(actx, devreg.NewAPIKey{Name: "emqx", Scope: devreg.ScopeBroker})
	if err != nil {
		t.Fatal(err)
	}
	f := fleet{url: srv.URL(), account: acc.ID, brokerKey: k.Key, adminKey: admin, srv: srv, dataDir: dataDir, database: database, typeID: dt.ID}
	resp, err := http.PostForm(f.url+"/device/v1/token", url.Values{"grant_type": {"client_credentials"}, "account_id": {acc.ID},
		"client_id": {"d1"}, "client_secret": {"secretford1"}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if f.token = tok.AccessToken; f.token == "" {
		t.Fatal("no device token")
	}
	return f
}

// post sends a broker's request with the broker key as Basic password (as RabbitMQ and
// mosquitto-go-auth carry it in the URL's user-info) or as a bearer token.
func (f fleet) post(t *testing.T, path, contentType, body string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.SetBasicAuth("broker", f.brokerKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestEMQX sends the requests EMQX 5's HTTP authenticator and authorizer send with the body
// templates of the README ({"username": "${username}", "password": "${password}", "clientid":
// "${clientid}", "peerhost": "${peerhost}"} and {"username": "${username}", "clientid":
// "${clientid}", "topic": "${topic}", "action": "${action}"}, as EMQX's documentation of HTTP
// authentication and authorization shows them).
func TestEMQX(t *testing.T) { pgtest.Each(t, testEMQX) }

func testEMQX(t *testing.T, database string) {
	f := newFleet(t, database)
	authn := func(user, pass, client string) string {
		_, b := f.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": user, "password": pass, "clientid": client, "peerhost": "10.0.0.7"}))
		return b
	}
	for _, tc := range []struct {
		name, user, pass, client, want string
	}{
		{"allow/secret", "d1", "secretford1", "d1", `"result":"allow"`},
		{"allow/account-qualified", "d1@" + f.account, "secretford1", "d1", `"result":"allow"`},
		{"allow/mac-address-id", "AA:BB:CC:00:00:01", "secretforAABBCC000001", "AA:BB:CC:00:00:01", `"result":"allow"`},
		{"allow/token", "d1", f.token, "d1", `"expire_at":`},
		{"deny/wrong-secret", "AA:BB:CC:00:00:01", "not-the-secret", "AA:BB:CC:00:00:01", `"result":"deny"`},
		{"deny/unknown-device", "nobody", "secretfornobody", "nobody", `"result":"deny"`},
		{"deny/disabled-device", "off", "secretforoff", "off", `"result":"deny"`},
		{"deny/other-client-id", "d1", "secretford1", "AA:BB:CC:00:00:01", `"result":"deny"`},
		{"deny/other-account", "d1@acc_someoneelse", "secretford1", "d1", `"result":"deny"`},
		{"deny/token-of-another-device", "AA:BB:CC:00:00:01", f.token, "AA:BB:CC:00:00:01", `"result":"deny"`},
		{"deny/forged-token", "d1", f.token[:len(f.token)-4] + "AAAA", "d1", `"result":"deny"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := authn(tc.user, tc.pass, tc.client); !strings.Contains(got, tc.want) || !strings.Contains(got, `"is_superuser":false`) {
				t.Errorf("authn = %s, want %s", got, tc.want)
			}
		})
	}
	authz := func(user, client, topic, action string) string {
		_, b := f.post(t, "/broker/v1/emqx/authz", "application/json", js(map[string]string{"username": user, "clientid": client, "topic": topic, "action": action}))
		return b
	}
	for _, tc := range []struct{ name, topic, action, want string }{
		{"allow/publish-own", "devices/d1/up", "publish", "allow"},
		{"allow/subscribe-own-cmd", "devices/d1/cmd/+", "subscribe", "allow"},
		{"deny/placeholder-in-topic", "fleet/{device_type_id}/broadcast", "subscribe", "deny"}, // placeholders are the type's, not for devices to send
		{"deny/publish-other-device", "devices/AA:BB:CC:00:00:01/up", "publish", "deny"},
		{"deny/subscribe-all-devices", "devices/#", "subscribe", "deny"},
		{"deny/subscribe-wildcard-device", "devices/+/cmd", "subscribe", "deny"},
		{"deny/subscribe-own-up", "devices/d1/up", "subscribe", "deny"}, // only cmd/# is subscribable for this type
		{"deny/publish-wildcard", "devices/d1/+", "publish", "deny"},
		{"deny/odd-action", "devices/d1/up", "all", "deny"},
	} {
		t.Run("authz/"+tc.name, func(t *testing.T) {
			if got := authz("d1", "d1", tc.topic, tc.action); got != `{"result":"`+tc.want+`"}` {
				t.Errorf("authz %s %s = %s, want %s", tc.action, tc.topic, got, tc.want)
			}
		})
	}
	if got := authz("off", "off", "devices/off/up", "publish"); got != `{"result":"deny"}` {
		t.Errorf("a disabled device's publish = %s", got)
	}

	t.Run("throttle-and-token", func(t *testing.T) {
		for range 10 {
			authn("d1", "wrong-guess-12345", "d1")
		}
		if got := authn("d1", "secretford1", "d1"); !strings.Contains(got, `"deny"`) {
			t.Errorf("the right secret after 10 failures = %s, want deny", got)
		}
		if got := authn("d1", f.token, "d1"); !strings.Contains(got, `"allow"`) {
			t.Errorf("a valid token while the device is throttled = %s, want allow", got)
		}
	})
	t.Run("keys", func(t *testing.T) {
		req, _ := http.NewRequest("POST", f.url+"/broker/v1/emqx/authn", strings.NewReader(`{"username":"d1","password":"x","clientid":"d1"}`))
		req.Header.Set("Authorization", "Bearer "+f.adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("an admin key at a broker endpoint = %d, want 403", resp.StatusCode)
		}
		resp, err = http.Post(f.url+"/broker/v1/emqx/authn", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("no key at a broker endpoint = %d, want 401", resp.StatusCode)
		}
	})
}

// TestMosquittoGoAuth sends what mosquitto-go-auth's HTTP backend sends with
// auth_opt_http_params_mode json and auth_opt_http_response_mode json (its README, "HTTP"):
// {"username", "password", "clientid"} to the user URI, {"username"} to the superuser URI and
// {"username", "clientid", "topic", "acc"} to the ACL URI.
func TestMosquittoGoAuth(t *testing.T) { pgtest.Each(t, testMosquitto) }

func testMosquitto(t *testing.T, database string) {
	f := newFleet(t, database)
	for _, tc := range []struct{ name, path, body, want string }{
		{"user/allow", "/broker/v1/mosquitto/user", `{"username": "d1", "password": "secretford1", "clientid": "d1"}`, `{"error":"","ok":true}`},
		{"user/allow-token", "/broker/v1/mosquitto/user", js(map[string]string{"username": "d1", "password": f.token, "clientid": "d1"}), `{"error":"","ok":true}`},
		{"user/deny", "/broker/v1/mosquitto/user", `{"username": "d1", "password": "wrong-secret", "clientid": "d1"}`, `"ok":false`},
		{"superuser/never", "/broker/v1/mosquitto/superuser", `{"username": "d1"}`, `"ok":false`},
		{"acl/read-cmd", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "d1", "topic": "devices/d1/cmd/reboot", "acc": 1}`, `"ok":true`},
		{"acl/subscribe-cmd", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "d1", "topic": "devices/d1/cmd/#", "acc": 4}`, `"ok":true`},
		{"acl/write-up", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "d1", "topic": "devices/d1/up", "acc": 2}`, `"ok":true`},
		{"acl/readwrite-up-needs-both", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "d1", "topic": "devices/d1/up", "acc": 3}`, `"ok":false`},
		{"acl/write-other", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "d1", "topic": "devices/d2/up", "acc": 2}`, `"ok":false`},
		{"acl/other-client", "/broker/v1/mosquitto/acl", `{"username": "d1", "clientid": "intruder", "topic": "devices/d1/up", "acc": 2}`, `"ok":false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, got := f.post(t, tc.path, "application/json", tc.body); status != 200 || !strings.Contains(got, tc.want) {
				t.Errorf("%s = %d %s, want %s", tc.path, status, got, tc.want)
			}
		})
	}
}

// TestVerneMQ sends VerneMQ's webhooks as its documentation shows them ("Webhooks", the
// example payloads of auth_on_register, auth_on_publish and auth_on_subscribe).
func TestVerneMQ(t *testing.T) { pgtest.Each(t, testVerneMQ) }

func testVerneMQ(t *testing.T, database string) {
	f := newFleet(t, database)
	ok, no := `{"result":"ok"}`, `{"result":{"error":"not_allowed"}}`
	register := func(user, pass, client string) string {
		return fmt.Sprintf(`{"peer_addr": "127.0.0.1", "peer_port": 8888, "username": %q, "password": %q, "mountpoint": "", "client_id": %q, "clean_session": false}`, user, pass, client)
	}
	for _, tc := range []struct{ name, hook, body, want string }{
		{"register/allow", "auth_on_register", register("d1", "secretford1", "d1"), ok},
		{"register/deny", "auth_on_register", register("d1", "wrong-secret", "d1"), no},
		{"register/other-client", "auth_on_register", register("d1", "secretford1", "clientid"), no},
		{"publish/own", "auth_on_publish", `{"username": "d1", "client_id": "d1", "mountpoint": "", "qos": 1, "topic": "devices/d1/up", "payload": "aGVsbG8=", "retain": false}`, ok},
		{"publish/other", "auth_on_publish", `{"username": "d1", "client_id": "d1", "mountpoint": "", "qos": 1, "topic": "a/b", "payload": "aGVsbG8=", "retain": false}`, no},
		{"subscribe/all-allowed", "auth_on_subscribe", `{"client_id": "d1", "mountpoint": "", "username": "d1", "topics": [{"topic": "devices/d1/cmd/a", "qos": 1}, {"topic": "devices/d1/cmd/+", "qos": 2}]}`, ok},
		{"subscribe/one-refused", "auth_on_subscribe", `{"client_id": "d1", "mountpoint": "", "username": "d1", "topics": [{"topic": "devices/d1/cmd/a", "qos": 1}, {"topic": "c/d", "qos": 2}]}`, no},
		{"unknown-hook", "on_deliver", `{"username": "d1", "client_id": "d1", "mountpoint": "", "topic": "a/b", "payload": "hello"}`, no},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, got := f.post(t, "/broker/v1/vernemq", "application/json", tc.body, "vernemq-hook", tc.hook); status != 200 || got != tc.want {
				t.Errorf("%s = %d %s, want %s", tc.hook, status, got, tc.want)
			}
		})
	}
}

// TestRabbitMQ sends what rabbitmq_auth_backend_http sends with auth_http.http_method = post
// (its README: user_path gets username and password, vhost_path username, vhost and ip,
// resource_path username, vhost, resource, name and permission, topic_path those and
// routing_key, with the MQTT plugin's variable_map.client_id).
func TestRabbitMQ(t *testing.T) { pgtest.Each(t, testRabbitMQ) }

func testRabbitMQ(t *testing.T, database string) {
	f := newFleet(t, database)
	for _, tc := range []struct {
		name, path string
		form       url.Values
		want       string
	}{
		{"user/allow", "/broker/v1/rabbitmq/user", url.Values{"username": {"d1"}, "password": {"secretford1"}}, "allow"},
		{"user/allow-mac-id", "/broker/v1/rabbitmq/user", url.Values{"username": {"AA:BB:CC:00:00:01"}, "password": {"secretforAABBCC000001"}}, "allow"},
		{"user/deny-wrong", "/broker/v1/rabbitmq/user", url.Values{"username": {"d1"}, "password": {"nope-nope"}}, "deny"},
		{"user/deny-dotted-id", "/broker/v1/rabbitmq/user", url.Values{"username": {"dot.ted"}, "password": {"secretfordot.ted"}}, "deny"},
		{"vhost/allow", "/broker/v1/rabbitmq/vhost", url.Values{"username": {"d1"}, "vhost": {"/"}, "ip": {"10.0.0.7"}}, "allow"},
		{"vhost/deny", "/broker/v1/rabbitmq/vhost", url.Values{"username": {"d1"}, "vhost": {"other"}, "ip": {"10.0.0.7"}}, "deny"},
		{"resource/exchange", "/broker/v1/rabbitmq/resource", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"exchange"}, "name": {"amq.topic"}, "permission": {"write"}}, "allow"},
		{"resource/other-exchange", "/broker/v1/rabbitmq/resource", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"exchange"}, "name": {"amq.direct"}, "permission": {"write"}}, "deny"},
		{"resource/own-queue", "/broker/v1/rabbitmq/resource", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"queue"}, "name": {"mqtt-subscription-d1qos1"}, "permission": {"configure"}}, "allow"},
		{"resource/other-queue", "/broker/v1/rabbitmq/resource", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"queue"}, "name": {"mqtt-subscription-d2qos1"}, "permission": {"read"}}, "deny"},
		{"topic/publish-own", "/broker/v1/rabbitmq/topic", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"topic"}, "name": {"amq.topic"}, "permission": {"write"}, "routing_key": {"devices.d1.up"}, "variable_map.client_id": {"d1"}}, "allow"},
		{"topic/publish-other", "/broker/v1/rabbitmq/topic", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"topic"}, "name": {"amq.topic"}, "permission": {"write"}, "routing_key": {"devices.d2.up"}, "variable_map.client_id": {"d1"}}, "deny"},
		{"topic/subscribe-own", "/broker/v1/rabbitmq/topic", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"topic"}, "name": {"amq.topic"}, "permission": {"read"}, "routing_key": {"devices.d1.cmd.*"}, "variable_map.client_id": {"d1"}}, "allow"},
		{"topic/subscribe-all", "/broker/v1/rabbitmq/topic", url.Values{"username": {"d1"}, "vhost": {"/"}, "resource": {"topic"}, "name": {"amq.topic"}, "permission": {"read"}, "routing_key": {"devices.#"}, "variable_map.client_id": {"d1"}}, "deny"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if status, got := f.post(t, tc.path, "application/x-www-form-urlencoded", tc.form.Encode()); status != 200 || got != tc.want {
				t.Errorf("%s = %d %q, want %q", tc.path, status, got, tc.want)
			}
		})
	}
}

// TestBrokerLoginsAreSeen lets devices in through a broker, many times and in parallel: each
// counts as seen (last_seen_at), and as connected in its batch once, written together.
func TestBrokerLoginsAreSeen(t *testing.T) { pgtest.Each(t, testBrokerLoginsAreSeen) }

func testBrokerLoginsAreSeen(t *testing.T, database string) {
	f := newFleet(t, database)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user, pass := "d1", "secretford1"
			if i%2 == 1 {
				user, pass = "AA:BB:CC:00:00:01", "secretforAABBCC000001"
			}
			f.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": user, "password": pass, "clientid": user}))
		}()
	}
	wg.Wait()
	f.srv.Service.Close() // writes what is pending at once, as a shutdown does
	ctx := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeRead, Name: "test", Source: devreg.SourceAPI})
	for _, id := range []string{"d1", "AA:BB:CC:00:00:01"} {
		d, err := f.srv.Service.Device(ctx, id)
		if err != nil || d.LastSeenAt == nil {
			t.Fatalf("%s after broker logins: %+v, %v; want last_seen_at set", id, d, err)
		}
		b, err := f.srv.Service.Batch(ctx, d.BatchID)
		if err != nil || b.ConnectedCount != 1 || b.DeviceCount != 1 {
			t.Errorf("batch of %s: %+v, %v; want 1 connected of 1", id, b, err)
		}
	}
	if d, _ := f.srv.Service.Device(ctx, "off"); d.LastSeenAt != nil {
		t.Errorf("a device that was never let in is seen: %+v", d)
	}
}

// TestBrokerChecksInMetrics checks that /metrics counts broker checks by broker and answer.
func TestBrokerChecksInMetrics(t *testing.T) {
	f := newFleet(t, "")
	f.post(t, "/broker/v1/emqx/authn", "application/json", `{"username": "d1", "password": "secretford1", "clientid": "d1"}`)
	f.post(t, "/broker/v1/emqx/authz", "application/json", `{"username": "d1", "clientid": "d1", "topic": "a/b", "action": "x-`+strings.Repeat("z", 50)+`"}`)
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`devreg_broker_checks_total{answer="allow",broker="emqx",check="login"} 1`, `devreg_broker_checks_total{answer="deny",broker="emqx",check="other"} 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestOtherScopesRefusedEverywhere asks every broker endpoint with keys of the other scopes, and
// checks that topic checks follow a disabled batch at once.
func TestOtherScopesRefusedEverywhere(t *testing.T) {
	f := newFleet(t, "")
	for _, path := range []string{"/broker/v1/rabbitmq/vhost", "/broker/v1/rabbitmq/resource", "/broker/v1/mosquitto/superuser", "/broker/v1/emqx/authz", "/broker/v1/vernemq"} {
		req, _ := http.NewRequest("POST", f.url+path, strings.NewReader("username=d1&vhost=/&resource=exchange&name=amq.topic&permission=write"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("admin", f.adminKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || strings.Contains(string(b), "allow") {
			t.Errorf("%s with an admin key = %d %s, want 403", path, resp.StatusCode, b)
		}
		if resp.Header.Get("RateLimit-Limit") == "" {
			t.Errorf("%s: the answer to an admin key carries no RateLimit-Limit; every answer to such a key is counted", path)
		}
	}
	// A broker key is never limited, and is not told of a limit.
	req, _ := http.NewRequest("POST", f.url+"/broker/v1/emqx/authn", strings.NewReader(`{"username": "d1", "password": "secretford1", "clientid": "d1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+f.brokerKey)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode != 200 || resp.Header.Get("RateLimit-Limit") != "" {
		t.Errorf("a broker key's answer: %d, RateLimit-Limit %q", resp.StatusCode, resp.Header.Get("RateLimit-Limit"))
	}
	ctx := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	d, err := f.srv.Service.Device(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.Service.SetBatchStatus(ctx, d.BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if _, got := f.post(t, "/broker/v1/emqx/authz", "application/json", `{"username": "d1", "clientid": "d1", "topic": "devices/d1/up", "action": "publish"}`); got != `{"result":"deny"}` {
		t.Errorf("a publish of a device of a disabled batch = %s, want deny", got)
	}
}
