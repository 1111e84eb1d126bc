package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// TestDeleteBatch deletes a (disabled) lot through the API: a register key is refused naming
// the admin scope, another account's and an unknown batch answer 404, the admin's answer counts
// the devices, the batch and its devices are gone, the type's count follows, and one audit entry
// records it.
func TestDeleteBatch(t *testing.T) { pgtest.Each(t, testDeleteBatch) }

func testDeleteBatch(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Lot", 0)
	var csv strings.Builder
	for i := range 20 {
		fmt.Fprintf(&csv, "lot-%02d, secret-of-lot-%02d\n", i, i)
	}
	lot := e.mustRegister(t, e.admin, dt.ID, "", "text/csv", csv.String())
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "keep-1, secret-of-keep-1\nkeep-2, secret-of-keep-2")
	e.mustDo(t, e.admin, "PATCH", "/api/v1/batches/"+lot.BatchID, `{"status": "disabled"}`, 200, nil)

	for _, c := range []struct {
		name, key, id string
		status        int
		says          string
	}{
		{"register key", e.registerKey, lot.BatchID, 403, `scope \"admin\"`},
		{"read key", e.read, lot.BatchID, 403, `scope \"admin\"`},
		{"other account", e.other, lot.BatchID, 404, lot.BatchID},
		{"unknown batch", e.admin, "bat_nosuch", 404, "bat_nosuch"},
	} {
		status, body := e.send(t, req{key: c.key, method: "DELETE", path: "/api/v1/batches/" + c.id})
		if status != c.status || !strings.Contains(string(body), c.says) {
			t.Errorf("%s: %d %s; want %d naming %s", c.name, status, body, c.status, c.says)
		}
	}
	var out struct {
		Deleted int64 `json:"deleted"`
	}
	e.mustDo(t, e.admin, "DELETE", "/api/v1/batches/"+lot.BatchID, "", 200, &out)
	if out.Deleted != 20 {
		t.Errorf("deleted %d, want 20", out.Deleted)
	}
	e.mustDo(t, e.read, "GET", "/api/v1/batches/"+lot.BatchID, "", 404, nil)
	e.mustDo(t, e.read, "GET", "/api/v1/devices/lot-03", "", 404, nil)
	e.mustDo(t, e.admin, "DELETE", "/api/v1/batches/"+lot.BatchID, "", 404, nil)
	if got := e.deviceIDs(t, e.read, "device_type_id="+dt.ID); strings.Join(got, ",") != "keep-1,keep-2" {
		t.Errorf("devices afterwards %v, want keep-1 and keep-2", got)
	}
	if n := e.deviceType(t, e.read, dt.ID).DeviceCount; n != 2 {
		t.Errorf("device_count afterwards %d, want 2", n)
	}
	var audit struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?action=batch.delete", "", 200, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Object.ID != lot.BatchID || fmt.Sprint(audit.Entries[0].Details["deleted"]) != "20" {
		t.Errorf("audit entries batch.delete: %+v; want one of the lot with deleted 20", audit.Entries)
	}
	e.checkData(t)
}

// TestDeleteBatchRacingRequests sends, at the same time, the delete of a lot, a registration that
// replaces half of its devices into a new lot, and logins with check-ins of its devices, as
// separate HTTP requests: the delete and the registration each come wholly before or after the
// other, every request gets a proper answer, and afterwards devreg check finds every counter
// equal to its rows.
func TestDeleteBatchRacingRequests(t *testing.T) { pgtest.Each(t, testDeleteBatchRacingRequests) }

func testDeleteBatchRacingRequests(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Race", 0)
	n := 300
	for round := range 3 {
		var lotCSV, replaceCSV strings.Builder
		for i := range n {
			fmt.Fprintf(&lotCSV, "r%d-%03d, secret-of-r%d-%03d\n", round, i, round, i)
			if i < n/2 {
				fmt.Fprintf(&replaceCSV, "r%d-%03d, new-secret-of-r%d-%03d\n", round, i, round, i)
			}
		}
		lot := e.mustRegister(t, e.admin, dt.ID, "", "text/csv", lotCSV.String())
		var wg sync.WaitGroup
		var deleteStatus, replaceStatus int
		var deleteBody, replaceBody []byte
		errs := make(chan error, n)
		wg.Add(3)
		go func() {
			defer wg.Done()
			deleteStatus, deleteBody = e.call(req{key: e.admin, method: "DELETE", path: "/api/v1/batches/" + lot.BatchID})
		}()
		go func() {
			defer wg.Done()
			replaceStatus, replaceBody = e.call(req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids?on_conflict=replace",
				contentType: "text/csv", body: replaceCSV.String()})
		}()
		go func() {
			defer wg.Done()
			for i := n - 1; i >= n-40; i-- {
				id := fmt.Sprintf("r%d-%03d", round, i)
				if err := e.loginAndCheckIn(id, "secret-of-"+id); err != nil {
					errs <- err
				}
			}
		}()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		var deleted struct {
			Deleted int `json:"deleted"`
		}
		var replaced devreg.RegisterResult
		if deleteStatus != 200 || json.Unmarshal(deleteBody, &deleted) != nil || replaceStatus != 200 || json.Unmarshal(replaceBody, &replaced) != nil {
			t.Fatalf("round %d: delete %d %s, replace %d %s", round, deleteStatus, deleteBody, replaceStatus, replaceBody)
		}
		before := replaced.Replaced == int64(n/2) && deleted.Deleted == n-n/2
		after := replaced.Created == int64(n/2) && deleted.Deleted == n
		if !before && !after {
			t.Errorf("round %d: replace %+v and delete of %d overlapped", round, replaced, deleted.Deleted)
		}
		e.checkData(t)
	}
}

// call is send for a goroutine of the test's own: it reports trouble in the status (0) and body.
func (e *env) call(r req) (int, []byte) {
	hr, err := http.NewRequest(r.method, e.url+r.path, strings.NewReader(r.body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	hr.Header.Set("Authorization", "Bearer "+r.key)
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	resp, err := e.http.Do(hr)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// loginAndCheckIn gets a token for a device and checks in with it, as a device does; a device
// that is gone (deleted, or registered again with another secret) may be refused, with 401.
func (e *env) loginAndCheckIn(deviceID, secret string) error {
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {e.accountID}, "client_id": {deviceID}, "client_secret": {secret}}
	resp, err := http.PostForm(e.url+"/device/v1/token", form)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == 401 {
		return nil
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &tok) != nil {
		return fmt.Errorf("token for %s: %d %s", deviceID, resp.StatusCode, body)
	}
	hr, err := http.NewRequest("POST", e.url+"/device/v1/checkin", strings.NewReader(`{"firmware_version": "1.0"}`))
	if err != nil {
		return err
	}
	hr.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	hr.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(hr)
	if err != nil {
		return err
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 && resp.StatusCode != 401 && resp.StatusCode != 404 {
		return fmt.Errorf("check-in of %s: %d %s", deviceID, resp.StatusCode, body)
	}
	return nil
}

// checkData fails the test unless devreg check finds the counters right.
func (e *env) checkData(t *testing.T) {
	t.Helper()
	db, err := store.OpenExisting(context.Background(), e.database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := db.CheckCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Errorf("devreg check: %s", strings.Join(r.Problems, "; "))
	}
}

// TestBatchName names a batch with ?batch_name= (trimmed), shows it in the batch and the
// listing, and refuses a name that is too long or holds a control or invisible character with
// 400 naming batch_name, registering nothing.
func TestBatchName(t *testing.T) { pgtest.Each(t, testBatchName) }

func testBatchName(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Named", 0)
	res := e.mustRegister(t, e.registerKey, dt.ID, "batch_name="+url.QueryEscape(" Lot 42 — line 3 "), "text/csv", "n-1, secret-of-n-1")
	var b devreg.Batch
	e.mustDo(t, e.read, "GET", "/api/v1/batches/"+res.BatchID, "", 200, &b)
	if b.Name != "Lot 42 — line 3" {
		t.Errorf("batch name %q, want %q", b.Name, "Lot 42 — line 3")
	}
	var list struct {
		Batches []devreg.Batch `json:"batches"`
	}
	e.mustDo(t, e.read, "GET", "/api/v1/batches?device_type_id="+dt.ID, "", 200, &list)
	if len(list.Batches) != 1 || list.Batches[0].Name != "Lot 42 — line 3" {
		t.Errorf("listing: %+v", list.Batches)
	}
	for name, q := range map[string]string{
		"too long":   strings.Repeat("x", 101),
		"control":    "lot\x01",
		"zero-width": "lot\u200b42",
	} {
		status, body := e.send(t, req{key: e.admin, method: "PUT", path: "/api/v1/devicetypes/" + dt.ID + "/device_ids?batch_name=" + url.QueryEscape(q),
			contentType: "text/csv", body: "n-2, secret-of-n-2", invalid: name != "zero-width"})
		if status != 400 || !strings.Contains(string(body), "batch_name") {
			t.Errorf("%s: %d %s; want 400 naming batch_name", name, status, body)
		}
	}
	e.mustDo(t, e.read, "GET", "/api/v1/devices/n-2", "", 404, nil)
}
