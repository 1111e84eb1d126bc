package main

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"strings"
	"testing"

	"devreg/client"
	"devreg/internal/pgtest"
	"devreg/store"
)

// TestAuditVerify: changes made through a running server are in a chain that `devreg audit
// verify` accepts, with the head the export reports; an entry edited in the database directly
// makes it exit 1 naming the entry; a chain cut short is caught against the head kept before.
func TestAuditVerify(t *testing.T) {
	pgtest.Each(t, testAuditVerify)
}

func testAuditVerify(t *testing.T, database string) {
	ctx := context.Background()
	dir := t.TempDir()
	dbArgs := []string{"--database", database}
	driver, dsn := "sqlite", strings.TrimPrefix(database, "sqlite:")
	if store.IsPostgres(database) {
		driver, dsn = "pgx", database
	}
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	url, _ := serve(t, dir, dbArgs...)
	c := client.New(url, acme.APIKey)
	for _, name := range []string{"Thermostat", "Valve", "Meter"} {
		if _, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name}); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/audit/export", nil)
	req.Header.Set("Authorization", "Bearer "+acme.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	head := resp.Header.Get("Audit-Head")
	if resp.StatusCode != 200 || strings.Count(string(body), "\n") != 4 || !strings.HasPrefix(head, "4:") {
		t.Fatalf("export: %d, head %q, %d lines:\n%s", resp.StatusCode, head, strings.Count(string(body), "\n"), body)
	}
	verify := func(args ...string) (int, string) {
		t.Helper()
		code, stdout, stderr := cli{dir: dir}.run(t, "", append(append([]string{"audit", "verify"}, dbArgs...), args...)...)
		return code, stdout + stderr
	}
	if code, out := verify("--head", head); code != 0 || !strings.Contains(out, "every chain verifies") {
		t.Fatalf("verify of an untouched log = %d:\n%s", code, out)
	}
	if code, out := verify("--head", "4:"+strings.Repeat("ab", 32)); code != 1 || !strings.Contains(out, "cut short or recomputed") {
		t.Errorf("verify against a head that is not in the chain = %d:\n%s", code, out)
	}
	if code, out := verify("--head", "nonsense"); code != 2 || !strings.Contains(out, "SEQ:HASH") {
		t.Errorf("verify with a malformed head = %d:\n%s", code, out)
	}

	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	q := `UPDATE audit_log SET entry = replace(entry, 'Valve', 'Valves') WHERE seq = 3`
	if _, err := raw.Exec(q); err != nil {
		t.Fatal(err)
	}
	if code, out := verify(); code != 1 || !strings.Contains(out, "entry 3: changed") {
		t.Errorf("verify after an entry was edited = %d:\n%s", code, out)
	}
	if _, err := raw.Exec(`UPDATE audit_log SET entry = replace(entry, 'Valves', 'Valve') WHERE seq = 3`); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`DELETE FROM audit_log WHERE seq = 4`, `UPDATE audit_heads SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if code, out := verify(); code != 0 {
		t.Errorf("a chain cut short with its head verifies without a head kept elsewhere, as expected; got %d:\n%s", code, out)
	}
	if code, out := verify("--head", head); code != 1 || !strings.Contains(out, "cut short or recomputed") {
		t.Errorf("verify of a chain cut short against the head kept before = %d:\n%s", code, out)
	}
}
