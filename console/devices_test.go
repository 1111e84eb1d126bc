package console_test

import (
	"encoding/csv"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
)

// TestDevicesListTools: the Devices page's totals, newest lot, times, export and bulk changes
// through HTTP: counts say whether they are exact or capped, the export has the CLI's columns and
// the filter's devices, a bulk change names every device it refused and audits each change, a
// bulk delete asks first, and a selection larger than a page is refused.
func TestDevicesListTools(t *testing.T) { pgtest.Each(t, testDevicesListTools) }

func testDevicesListTools(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	e.upload(t, map[string]string{"device_type_id": dt}, "first.csv", "lock-a, secret-lock-a, lock-b, secret-lock-b, lock-c, secret-lock-c")
	e.upload(t, map[string]string{"device_type_id": dt}, "second.csv", "lock-d, secret-lock-d, lock-e, secret-lock-e")

	_, body := e.get(t, "/devices")
	if !strings.Contains(body, "5 devices in all 1 device types.") || !strings.Contains(body, `id="newest-lot"`) ||
		!strings.Contains(body, "2 devices") || !strings.Contains(body, `<time datetime="`) || !strings.Contains(body, "just now</time>") {
		t.Errorf("the Devices page lacks its total, newest lot or relative times:\n%s", body)
	}

	status, body := e.post(t, "/devices/bulk", url.Values{"action": {"disable"}, "device_id": {"lock-a", "lock-d", "no-such-lock"}, "back": {"sort=newest"}})
	if status != 200 || !strings.Contains(body, "Disabled 2 of 3 devices") || !strings.Contains(body, "<code>no-such-lock</code>") ||
		!strings.Contains(body, "no device no-such-lock") {
		t.Errorf("bulk disable with a missing device = %d:\n%s", status, body)
	}
	_, body = e.get(t, "/devices?status=disabled")
	if !strings.Contains(body, "5 devices in all 1 device types; 2 match the filters.") || !strings.Contains(body, "lock-a") || strings.Contains(body, "lock-b") {
		t.Errorf("disabled devices:\n%s", body)
	}
	_, body = e.get(t, "/audit")
	if n := strings.Count(body, "device.update"); n < 2 {
		t.Errorf("the audit shows %d device updates, want one per device disabled", n)
	}

	// A delete asks first, naming the count; only the confirmed form deletes.
	status, body = e.post(t, "/devices/bulk", url.Values{"action": {"delete"}, "device_id": {"lock-a", "lock-b"}})
	if status != 200 || !strings.Contains(body, "Delete 2 devices?") || !strings.Contains(body, `name="confirm" value="yes"`) {
		t.Errorf("bulk delete without confirmation = %d:\n%s", status, body)
	}
	if status, _ := e.get(t, "/devices/lock-a"); status != 200 {
		t.Errorf("lock-a was deleted before the confirmation")
	}
	_, body = e.post(t, "/devices/bulk", url.Values{"action": {"delete"}, "confirm": {"yes"}, "device_id": {"lock-a", "lock-b"}, "back": {"prefix=lock"}})
	if !strings.Contains(body, "Deleted 2 devices.") {
		t.Errorf("confirmed bulk delete:\n%s", body)
	}
	if status, _ := e.get(t, "/devices/lock-b"); status != 404 {
		t.Errorf("lock-b after the bulk delete = %d, want 404", status)
	}
	too := url.Values{"action": {"disable"}}
	for i := range devreg.DefaultPageSize + 1 {
		too.Add("device_id", fmt.Sprintf("lock-%d", i))
	}
	if status, body := e.post(t, "/devices/bulk", too); status != 400 || !strings.Contains(body, "at most 100") {
		t.Errorf("a selection of 101 = %d:\n%s", status, body)
	}

	resp, err := e.http.Get(e.url + "/devices/export.csv?sort=id&status=enabled")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rows, err := csv.NewReader(resp.Body).ReadAll()
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export = %d %q, %v", resp.StatusCode, resp.Header, err)
	}
	var ids []string
	for _, r := range rows[1:] {
		ids = append(ids, r[0])
	}
	if diff := cmp.Diff(devreg.DeviceExportColumns, rows[0]); diff != "" {
		t.Errorf("export header (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"lock-c", "lock-e"}, ids); diff != "" {
		t.Errorf("exported enabled devices in ID order (-want +got):\n%s", diff)
	}
	if status, body := e.get(t, "/devices/export.csv?sort=random"); status != 400 || !strings.Contains(body, "sort must be") {
		t.Errorf("export with an unknown order = %d:\n%s", status, body)
	}
}
