package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// TestAuditOverTheAPI: the listing and the export answer as the document says, the export's
// lines chain up to the head it names, and only an admin key reads them.
func TestAuditOverTheAPI(t *testing.T) { pgtest.Each(t, testAuditOverTheAPI) }

func testAuditOverTheAPI(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var typ struct {
		ID string `json:"id"`
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "Sensor"}`, 201, &typ)
	e.mustDo(t, e.admin, "PUT", "/api/v1/devicetypes/"+typ.ID+"/device_ids", `{"devices": [{"device_id": "d1", "secret": "secret-of-d1"}]}`, 200, nil)
	type auditPage struct {
		Entries    []devreg.AuditEntry `json:"entries"`
		NextCursor string              `json:"next_cursor"`
		Head       devreg.AuditHead    `json:"head"`
	}
	var seqs []int64
	cursor := ""
	for {
		var page auditPage
		e.mustDo(t, e.admin, "GET", "/api/v1/audit?limit=2&cursor="+cursor, "", 200, &page)
		if len(page.Entries) == 0 || len(page.Entries) > 2 || page.Head.Seq != 5 {
			t.Fatalf("a page: %+v", page)
		}
		if seqs == nil && (page.Entries[0].Action != "devices.register" || page.Head.Hash != page.Entries[0].Hash) {
			t.Errorf("the newest entry %+v, head %+v", page.Entries[0], page.Head)
		}
		for _, en := range page.Entries {
			seqs = append(seqs, en.Seq)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if fmt.Sprint(seqs) != "[5 4 3 2 1]" {
		t.Errorf("entries paged by two: %v, want 5 down to 1", seqs)
	}
	for _, key := range []string{e.registerKey, e.read} {
		if status, _ := e.send(t, req{key: key, method: "GET", path: "/api/v1/audit"}); status != 403 {
			t.Errorf("the audit log to a key below admin: %d", status)
		}
	}
	if status, _ := e.send(t, req{key: e.admin, method: "GET", path: "/api/v1/audit?since=yesterday", invalid: true}); status != 400 {
		t.Errorf("a malformed since: %d", status)
	}

	hr, _ := http.NewRequest("GET", e.url+"/api/v1/audit/export", nil)
	hr.Header.Set("Authorization", "Bearer "+e.admin)
	resp, err := e.http.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head, err := devreg.ParseAuditHead(resp.Header.Get("Audit-Head"))
	if err != nil || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("export headers: %v, %v", resp.Header, err)
	}
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw)
	prev := devreg.GenesisHash
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	for _, line := range lines {
		var entry devreg.AuditEntry
		if err := jsonUnmarshal(line, &entry); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		canonical, err := entry.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		if got := devreg.ChainHash(prev, canonical); got != entry.Hash {
			t.Fatalf("entry %d's hash does not follow from the line and the one before", entry.Seq)
		}
		prev = entry.Hash
	}
	if int64(len(lines)) != head.Seq || prev != head.Hash {
		t.Errorf("the export has %d lines ending at %s; its head is %+v", len(lines), prev, head)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
