package console_test

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestBatchNameAndDelete uploads a named lot, finds its name in the batch list and on its page,
// and deletes it through the confirmation page, which names the count; the batch and its
// devices are gone afterwards, and an unknown batch answers 404.
func TestBatchNameAndDelete(t *testing.T) { pgtest.Each(t, testBatchNameAndDelete) }

func testBatchNameAndDelete(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Plug")
	var csv strings.Builder
	for i := range 1200 {
		fmt.Fprintf(&csv, "p-%04d, secret-of-plug-%04d\n", i, i)
	}
	status, body := e.upload(t, map[string]string{"device_type_id": dt, "batch_name": "Lot 42"}, "plugs.csv", csv.String())
	if status != 200 || !strings.Contains(body, "Upload complete") {
		t.Fatalf("upload = %d:\n%s", status, body)
	}
	_, body = e.get(t, "/batches")
	if !strings.Contains(body, "<td>Lot 42</td>") {
		t.Errorf("the batch list does not show the name:\n%s", body)
	}
	batch := regexp.MustCompile(`/batches/(bat_[A-Za-z0-9]+)`).FindStringSubmatch(body)[1]
	if _, body := e.get(t, "/batches/"+batch); !strings.Contains(body, "Lot 42") || !strings.Contains(body, `href="/batches/`+batch+`/delete"`) {
		t.Errorf("the batch page shows no name or no delete link:\n%s", body)
	}
	if _, body := e.get(t, "/batches/"+batch+"/delete"); !strings.Contains(body, `Delete 1,200 devices of lot Lot 42 (<code class="hash">`+batch+`</code>)?`) {
		t.Errorf("the confirmation does not name the count and the lot:\n%s", body)
	}
	if status, _ := e.post(t, "/batches/bat_nosuch/delete", url.Values{}); status != 404 {
		t.Errorf("deleting an unknown batch: %d, want 404", status)
	}
	status, body = e.post(t, "/batches/"+batch+"/delete", url.Values{})
	if status != 200 || !strings.Contains(body, "Batch "+batch+" deleted, with its 1,200 devices.") {
		t.Errorf("delete = %d:\n%s", status, body)
	}
	if status, _ := e.get(t, "/batches/"+batch); status != 404 {
		t.Errorf("the deleted batch's page: %d, want 404", status)
	}
	if status, _ := e.get(t, "/devices/p-0001"); status != 404 {
		t.Errorf("a deleted device's page: %d, want 404", status)
	}
}
