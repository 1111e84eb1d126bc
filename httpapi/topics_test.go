package httpapi_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
)

// TestDeviceTypeTopics sets a device type's MQTT topic filters through the API: defaults, own
// filters, a PATCH of one list, and the refusals of filters MQTT would not take.
func TestDeviceTypeTopics(t *testing.T) { forEachStore(t, testDeviceTypeTopics) }

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
