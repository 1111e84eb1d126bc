package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"devreg/client"
	"devreg/internal/pgtest"
)

// TestChangesReachEveryServerWithinASecond: two servers on one PostgreSQL database keep what
// topic checks read for a moment (registry/hotcache.go): the broker's key, the device's status
// and type, the type's topic filters. A change made through one server holds there at once and
// on the other within a second: new topic filters, a disabled device, a deleted broker key; a
// disabled device's login is refused by both at once.
func TestChangesReachEveryServerWithinASecond(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", "--database", db)
	url1, _ := serve(t, dir, "--database", db)
	url2, _ := serve(t, dir, "--database", db)
	c := client.New(url1, acme.APIKey)
	name := "Meter"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot(0, 2, "secret")), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	broker := newAPIKey(t, url1, acme.APIKey, "broker", "broker")

	// check asks server url whether device may publish to topic: its status and answer.
	check := func(url, device, topic string) (int, string) {
		t.Helper()
		body := `{"username": "` + device + `", "clientid": "` + device + `", "topic": "` + topic + `", "action": "publish"}`
		req, _ := http.NewRequest("POST", url+"/broker/v1/emqx/authz", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+broker)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	allows := func(url, device, topic string) bool {
		status, body := check(url, device, topic)
		return status == 200 && strings.Contains(body, `"allow"`)
	}
	// within waits for cond on url, at most a second after the change.
	within := func(what, url string, cond func() bool) {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > time.Second {
				t.Errorf("%s: %s still held the old answer a second after the change", what, url)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("%s: held on %s after %s", what, url, time.Since(start).Round(time.Millisecond))
	}
	admin := func(method, path, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest(method, url1+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+acme.APIKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d, want %d", method, path, resp.StatusCode, want)
		}
	}

	for _, url := range []string{url1, url2} { // both servers now keep the key and the type
		if !allows(url, "unit-00000", "devices/unit-00000/up") || !allows(url, "unit-00001", "devices/unit-00001/up") {
			t.Fatalf("%s refuses a topic of the type's default filter", url)
		}
	}

	admin("PATCH", "/api/v1/devicetypes/"+dt.ID, `{"mqtt_publish": ["telemetry/{device_id}"]}`, 200)
	if allows(url1, "unit-00000", "devices/unit-00000/up") || !allows(url1, "unit-00000", "telemetry/unit-00000") {
		t.Error("the server that changed the filters still applies the old ones")
	}
	within("new topic filters", url2, func() bool {
		return !allows(url2, "unit-00000", "devices/unit-00000/up") && allows(url2, "unit-00000", "telemetry/unit-00000")
	})

	for _, url := range []string{url1, url2} { // both servers keep the device now
		if !allows(url, "unit-00001", "telemetry/unit-00001") {
			t.Fatalf("%s refuses a topic of the type's new filter", url)
		}
	}
	admin("PATCH", "/api/v1/devices/unit-00001", `{"status": "disabled"}`, 200)
	if allows(url1, "unit-00001", "telemetry/unit-00001") {
		t.Error("the server that disabled the device lets it publish")
	}
	for _, url := range []string{url1, url2} {
		body := `{"username": "unit-00001", "clientid": "unit-00001", "password": "secret-00001"}`
		req, _ := http.NewRequest("POST", url+"/broker/v1/emqx/authn", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+broker)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), `"allow"`) {
			t.Errorf("%s lets a disabled device log in: %s", url, b)
		}
	}
	within("disabled device", url2, func() bool { return !allows(url2, "unit-00001", "telemetry/unit-00001") })

	keys, err := c.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "broker" {
			if err := c.DeleteAPIKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if status, _ := check(url1, "unit-00000", "telemetry/unit-00000"); status != 401 {
		t.Errorf("the server that deleted the broker key answers its broker with %d, want 401", status)
	}
	within("deleted broker key", url2, func() bool {
		status, _ := check(url2, "unit-00000", "telemetry/unit-00000")
		return status == 401
	})
}
