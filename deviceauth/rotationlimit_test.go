package deviceauth_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// auditEntries returns the account's audit entries with the given action, newest first, through
// the Operations API.
func (e *env) auditEntries(t *testing.T, action string) []devreg.AuditEntry {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+"/api/v1/audit?"+url.Values{"action": {action}, "limit": {"1000"}}.Encode(), nil)
	req.Header.Set("Authorization", "Bearer "+e.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("audit listing = %d, %v", resp.StatusCode, err)
	}
	return out.Entries
}

// rotateInParallel sends n rotations with the same secret at once, over HTTP, and returns how
// many were answered with each status, and the answers refused with 429.
func (e *env) rotateInParallel(t *testing.T, n int, deviceID, secret string) (map[int]int, []map[string]any, []http.Header) {
	t.Helper()
	var mu sync.Mutex
	statuses := map[int]int{}
	var limited []map[string]any
	var headers []http.Header
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			status, body, header := e.rotate(t, deviceID, secret, "")
			mu.Lock()
			defer mu.Unlock()
			statuses[status]++
			if status == http.StatusTooManyRequests {
				limited, headers = append(limited, body), append(headers, header)
			}
		})
	}
	close(start)
	wg.Wait()
	return statuses, limited, headers
}

// TestRotationLimit: a device may rotate its secret itself five times an hour. Of 20 parallel
// rotations with the same valid secret exactly 5 succeed, the other 15 get 429 rate_limited with
// the seconds left in the hour, and the audit log holds exactly 5 rotations; an hour later the
// device may rotate again. (Before the limit, all 20 rotated, each an audit entry.)
func TestRotationLimit(t *testing.T) { pgtest.Each(t, testRotationLimit) }

func testRotationLimit(t *testing.T, database string) {
	e := newEnv(t, database)
	statuses, limited, headers := e.rotateInParallel(t, 20, "device1", "secretfordevice1")
	if statuses[http.StatusCreated] != devreg.DefaultMaxRotationsPerHour || statuses[http.StatusTooManyRequests] != 20-devreg.DefaultMaxRotationsPerHour {
		t.Fatalf("20 parallel rotations were answered %v; want 5 × 201 and 15 × 429", statuses)
	}
	for i, body := range limited {
		if body["error"] != "rate_limited" || body["error_description"] == nil || headers[i].Get("Retry-After") != "3600" {
			t.Errorf("a rotation beyond the limit = %v, Retry-After %q; want rate_limited and 3600 (the clock stands still)", body, headers[i].Get("Retry-After"))
		}
	}
	if n := len(e.auditEntries(t, "credential.rotate")); n != devreg.DefaultMaxRotationsPerHour {
		t.Errorf("the audit log holds %d rotations; want 5", n)
	}

	// Strangers cannot spend a device's rotations: a wrong secret is a 401, as always.
	if status, body, _ := e.rotate(t, "device2", "wrong-secret!", ""); status != http.StatusUnauthorized || body["error"] != "invalid_client" {
		t.Errorf("a rotation with a wrong secret = %d %v; want 401 invalid_client", status, body)
	}
	// Other devices have rotations of their own.
	if status, body, _ := e.rotate(t, "device2", "secretfordevice2", ""); status != http.StatusCreated {
		t.Errorf("another device's rotation = %d %v; want 201", status, body)
	}

	// With 10 minutes gone, 50 are left to wait; an hour after the first, the window is over.
	e.clock.Add(10 * time.Minute)
	if status, _, header := e.rotate(t, "device1", "secretfordevice1", ""); status != http.StatusTooManyRequests || header.Get("Retry-After") != strconv.Itoa(50*60) {
		t.Errorf("a rotation 10 minutes on = %d, Retry-After %q; want 429 and 3000", status, header.Get("Retry-After"))
	}
	e.clock.Add(50 * time.Minute)
	if status, body, _ := e.rotate(t, "device1", "secretfordevice1", ""); status != http.StatusCreated {
		t.Errorf("a rotation an hour later = %d %v; want 201", status, body)
	}
}

// TestRotationLimitPerType: a device type sets its own limit (max_rotations_per_hour, 1 to 1000)
// with POST and PATCH; the limit in force is the type's when the device rotates.
func TestRotationLimitPerType(t *testing.T) { pgtest.Each(t, testRotationLimitPerType) }

func testRotationLimitPerType(t *testing.T, database string) {
	e := newEnv(t, database)
	ctx := context.Background()
	typ, err := e.admin.DeviceType(ctx, e.typeID)
	if err != nil || typ.MaxRotationsPerHour == nil || *typ.MaxRotationsPerHour != devreg.DefaultMaxRotationsPerHour {
		t.Fatalf("a new type's max_rotations_per_hour = %v (%v); want 5", typ.MaxRotationsPerHour, err)
	}
	for _, bad := range []int{0, 1001} {
		if _, err := e.admin.UpdateDeviceType(ctx, e.typeID, client.DeviceTypeInput{MaxRotationsPerHour: &bad}); !client.IsCode(err, devreg.EINVALID) {
			t.Errorf("max_rotations_per_hour %d: %v; want 422 invalid", bad, err)
		}
	}
	name, twenty := "Gateway", 20
	gateway, err := e.admin.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name, MaxRotationsPerHour: &twenty})
	if err != nil || *gateway.MaxRotationsPerHour != 20 {
		t.Fatalf("create a type with max_rotations_per_hour 20: %+v, %v", gateway, err)
	}
	if _, err := e.admin.Register(ctx, gateway.ID, []client.Credential{{DeviceID: "gw1", Secret: "secret-of-gw1"}}, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	statuses, _, _ := e.rotateInParallel(t, 25, "gw1", "secret-of-gw1")
	if statuses[http.StatusCreated] != 20 || statuses[http.StatusTooManyRequests] != 5 {
		t.Errorf("25 parallel rotations under a limit of 20 were answered %v; want 20 × 201 and 5 × 429", statuses)
	}

	two := 2
	if typ, err := e.admin.UpdateDeviceType(ctx, e.typeID, client.DeviceTypeInput{MaxRotationsPerHour: &two}); err != nil || *typ.MaxRotationsPerHour != 2 {
		t.Fatalf("PATCH max_rotations_per_hour 2: %+v, %v", typ, err)
	}
	statuses, _, _ = e.rotateInParallel(t, 6, "device1", "secretfordevice1")
	if statuses[http.StatusCreated] != 2 || statuses[http.StatusTooManyRequests] != 4 {
		t.Errorf("6 parallel rotations under a limit of 2 were answered %v; want 2 × 201 and 4 × 429", statuses)
	}
	var changed bool
	for _, entry := range e.auditEntries(t, "devicetype.update") {
		o, _ := entry.Details["old"].(map[string]any)
		n, _ := entry.Details["new"].(map[string]any)
		if o["max_rotations_per_hour"] == float64(5) && n["max_rotations_per_hour"] == float64(2) {
			changed = true
		}
	}
	if !changed {
		t.Errorf("the audit log does not record max_rotations_per_hour going from 5 to 2")
	}
}
