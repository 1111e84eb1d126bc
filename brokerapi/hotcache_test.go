package brokerapi_test

import (
	"context"
	"devreg/internal/pgtest"
	"testing"

	"devreg"
)

// TestTopicChecksSeeThisServersChangesAtOnce: what a server keeps for topic checks (the broker's
// key, the device's status and type, the type's filters; registry/hotcache.go) is forgotten when
// a change is made through the same server, so the next check applies it, on both databases.
func TestTopicChecksSeeThisServersChangesAtOnce(t *testing.T) {
	pgtest.Each(t, testTopicChecksSeeThisServersChangesAtOnce)
}

func testTopicChecksSeeThisServersChangesAtOnce(t *testing.T, database string) {
	f := newFleet(t, database)
	ctx := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	svc := f.srv.Service
	check := func(topic string) string {
		t.Helper()
		_, got := f.post(t, "/broker/v1/emqx/authz", "application/json", `{"username": "d1", "clientid": "d1", "topic": "`+topic+`", "action": "publish"}`)
		return got
	}
	const allow, deny = `{"result":"allow"}`, `{"result":"deny"}`
	if got := check("devices/d1/up"); got != allow {
		t.Fatalf("a topic of the default filter = %s", got)
	}
	if _, err := svc.UpdateDeviceType(ctx, f.typeID, devreg.DeviceTypeUpdate{MQTTPublish: []string{"telemetry/{device_id}"}}); err != nil {
		t.Fatal(err)
	}
	if got, now := check("devices/d1/up"), check("telemetry/d1"); got != deny || now != allow {
		t.Errorf("after the type's filters changed: the old topic %s, the new one %s; want deny, allow", got, now)
	}

	if _, err := svc.SetDeviceStatus(ctx, "d1", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if got := check("telemetry/d1"); got != deny {
		t.Errorf("a disabled device's publish = %s, want deny", got)
	}
	if _, err := svc.SetDeviceStatus(ctx, "d1", devreg.StatusEnabled); err != nil {
		t.Fatal(err)
	}
	if got := check("telemetry/d1"); got != allow {
		t.Errorf("an enabled device's publish = %s, want allow", got)
	}
	d, err := svc.Device(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetBatchStatus(ctx, d.BatchID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if got := check("telemetry/d1"); got != deny {
		t.Errorf("the publish of a device of a disabled batch = %s, want deny", got)
	}

	keys, err := svc.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Scope == devreg.ScopeBroker {
			if err := svc.DeleteAPIKey(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if status, got := f.post(t, "/broker/v1/emqx/authz", "application/json", `{"username": "d1", "clientid": "d1", "topic": "telemetry/d1", "action": "publish"}`); status != 401 {
		t.Errorf("a deleted broker key's check = %d %s, want 401", status, got)
	}
}
