package httpapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
)

// TestDeviceTypeTopics sets a device type's MQTT topic filters through the API: defaults, own
// filters, a PATCH of one list, and the refusals of filters MQTT would not take.
func TestDeviceTypeTopics(t *testing.T) { pgtest.Each(t, testDeviceTypeTopics) }

func testDeviceTypeTopics(t *testing.T, database string) {
	e := newEnv(t, database, 1<<20)
	var dt devreg.DeviceType
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "T1"}`, 201, &dt)
	if diff := cmp.Diff([2][]string{{"devices/{device_id}/#"}, {"devices/{device_id}/#"}}, [2][]string{dt.MQTTPublish, dt.MQTTSubscribe}); diff != "" {
		t.Errorf("default topics (-want +got):\n%s", diff)
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes",
		`{"name": "T2", "mqtt_publish": ["telemetry/{account_id}/{device_id}", "devices/{device_id}/up/#"], "mqtt_subscribe": ["devices/{device_id}/cmd/+"]}`, 201, &dt)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"mqtt_subscribe": ["devices/{device_id}/cmd/#", "fleet/{device_type_id}/broadcast"]}`, 200, nil)
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes/"+dt.ID, "", 200, &dt)
	want := [2][]string{{"telemetry/{account_id}/{device_id}", "devices/{device_id}/up/#"}, {"devices/{device_id}/cmd/#", "fleet/{device_type_id}/broadcast"}}
	if diff := cmp.Diff(want, [2][]string{dt.MQTTPublish, dt.MQTTSubscribe}); diff != "" {
		t.Errorf("topics after POST and PATCH (-want +got):\n%s", diff)
	}
	for _, tc := range []struct{ name, body, says string }{
		{"hash-not-last", `{"mqtt_publish": ["devices/#/up"]}`, "'#' may only be the last level"},
		{"plus-inside-level", `{"mqtt_subscribe": ["devices/d+/up"]}`, "'+' must be a level of its own"},
		{"unknown-placeholder", `{"mqtt_publish": ["devices/{serial}/up"]}`, "{serial}"},
		{"empty-filter", `{"mqtt_publish": [""]}`, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.admin, method: "PATCH", path: "/api/v1/devicetypes/" + dt.ID, body: tc.body, invalid: strings.Contains(tc.body, `""`)})
			if eb := decodeError(t, b); status != 422 || !strings.Contains(eb.Error.Message, tc.says) {
				t.Errorf("PATCH %s = %d %s, want 422 saying %q", tc.body, status, b, tc.says)
			}
		})
	}
}

// TestBrokerKeyAnswersOnlyAtBrokerEndpoints creates a key of scope broker: every call of the
// Operations API, and token introspection, refuses it with 403.
func TestBrokerKeyAnswersOnlyAtBrokerEndpoints(t *testing.T) { pgtest.Each(t, testBrokerKey) }

func testBrokerKey(t *testing.T, database string) {
	e := newEnv(t, database, 1<<20)
	var key struct{ Key, Scope string }
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "emqx", "scope": "broker"}`, 201, &key)
	if key.Scope != "broker" {
		t.Fatalf("created key has scope %q", key.Scope)
	}
	var dt devreg.DeviceType
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "T1"}`, 201, &dt)
	for _, r := range []req{
		{method: "GET", path: "/api/v1/devicetypes"},
		{method: "POST", path: "/api/v1/devicetypes", body: `{"name": "T2"}`},
		{method: "GET", path: "/api/v1/devices"},
		{method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids", contentType: "text/csv", body: "d1, secretfordevice1"},
		{method: "GET", path: "/api/v1/batches"},
		{method: "GET", path: "/api/v1/apikeys"},
	} {
		r.key = key.Key
		status, b := e.send(t, r)
		if eb := decodeError(t, b); status != 403 || !strings.Contains(eb.Error.Message, "broker endpoints") {
			t.Errorf("%s %s with a broker key = %d %s, want 403 pointing to the broker endpoints", r.method, r.path, status, b)
		}
	}
	hreq, _ := http.NewRequest("POST", e.url+"/device/v1/introspect", strings.NewReader("token=x.y.z"))
	hreq.Header.Set("Authorization", "Bearer "+key.Key)
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "insufficient_scope") {
		t.Errorf("introspection with a broker key = %d %s, want 403 insufficient_scope", resp.StatusCode, b)
	}
}
