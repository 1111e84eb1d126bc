package console_test

import (
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestUploadProblemsGroupedAndDownloaded: a refused upload's page counts its problems by kind
// (1,500 short secrets are one line) and offers every problem as a CSV file, in entry order,
// entries and lines counted from 1, although the page lists only the first 1,000; the download
// registers nothing.
func TestUploadProblemsGroupedAndDownloaded(t *testing.T) {
	pgtest.Each(t, testUploadProblemsGroupedAndDownloaded)
}

func testUploadProblemsGroupedAndDownloaded(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	var file strings.Builder
	file.WriteString("=SUM(A1), a-long-secret-0\n") // entry 1: a bad ID a spreadsheet would run
	file.WriteString("twice-1, a-long-secret-1\n")  // entry 2
	for i := range 700 {                            // entries 3–702
		fmt.Fprintf(&file, "short-%04d, short\n", i)
	}
	file.WriteString("twice-1, a-long-secret-1\n") // entry 703: a repeat, found by another check than the rest
	for i := 700; i < 1500; i++ {                  // entries 704–1503
		fmt.Fprintf(&file, "short-%04d, short\n", i)
	}
	status, page := e.upload(t, map[string]string{"device_type_id": dt}, "lot-7.csv", file.String())
	for _, want := range []string{"1,502 problems of 3 kinds", `id="problem-groups"`, "1,500 ×", "entries 3 to 1,503 (lines 3 to 1,503), not all between",
		"device ID is listed more than once", "entry 703 (line 703)", "The first 1000 of 1,502 problems", `action="/devices/upload/problems"`,
		`name="device_type_id" value="` + dt + `"`, `name="on_conflict" value=""`} {
		if !strings.Contains(page, want) {
			t.Errorf("the refused upload's page (%d) lacks %q", status, want)
		}
	}

	resp, body := e.uploadTo(t, "/devices/upload/problems", map[string]string{"device_type_id": dt}, "lot-7.csv", file.String())
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		resp.Header.Get("Content-Disposition") != `attachment; filename=problems-lot-7.csv` {
		t.Fatalf("download = %d %q %q:\n%.300s", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), body)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1503 || strings.Join(rows[0], ",") != "entry,line,device_id,problem" {
		t.Fatalf("%d rows, header %q; want a header and 1,502 problems", len(rows), rows[0])
	}
	last := 0
	for _, r := range rows[1:] {
		n, _ := strconv.Atoi(r[0])
		if n <= last || r[1] != r[0] { // one entry a line
			t.Fatalf("row %q after entry %d: not in entry order, or its line is not its entry's", r, last)
		}
		last = n
	}
	if r := rows[1]; r[0] != "1" || r[2] != "'=SUM(A1)" || !strings.Contains(r[3], "device ID contains '='") {
		t.Errorf("first row %q, want entry 1 with its ID kept from running as a formula", r)
	}
	if r := rows[702]; r[0] != "703" || r[2] != "twice-1" || !strings.Contains(r[3], "listed more than once; first at index 1 (line 2)") {
		t.Errorf("row of entry 703 = %q, want the repeat", r)
	}
	if r := rows[1502]; r[0] != "1503" || r[2] != "short-1499" || !strings.Contains(r[3], "secret") {
		t.Errorf("last row = %q, want entry 1503's short secret", r)
	}
	if _, body := e.get(t, "/devices?prefix=twice-"); strings.Contains(body, "twice-1") {
		t.Errorf("the download registered a device")
	}

	// Conflicts are problems too; a file that has none now says so and registers nothing.
	e.upload(t, map[string]string{"device_type_id": dt}, "one.csv", "lock-1, a-long-secret-1")
	resp, body = e.uploadTo(t, "/devices/upload/problems", map[string]string{"device_type_id": dt}, "again.csv", "lock-1, another-secret-1\nlock-2, a-long-secret-2")
	if rows, _ := csv.NewReader(strings.NewReader(body)).ReadAll(); resp.StatusCode != 200 || len(rows) != 2 || rows[1][2] != "lock-1" ||
		!strings.Contains(rows[1][3], "already registered with a different secret") {
		t.Errorf("conflicts download = %d:\n%s", resp.StatusCode, body)
	}
	resp, body = e.uploadTo(t, "/devices/upload/problems", map[string]string{"device_type_id": dt}, "fine.csv", "lock-3, a-long-secret-3")
	if resp.StatusCode != 200 || !strings.Contains(body, "The file has no problems now; nothing was registered.") {
		t.Errorf("a file without problems = %d:\n%.500s", resp.StatusCode, body)
	}
	if _, body := e.get(t, "/devices?prefix=lock-"); strings.Contains(body, "lock-3") || strings.Contains(body, "lock-2") {
		t.Errorf("a download registered devices")
	}
}
