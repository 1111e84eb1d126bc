package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

// TestCredentialsRevokeCLI runs "devreg credentials revoke" for a device and for a batch,
// "devices import --credentials reset" and "devicetypes create --max-rotations-per-hour" against
// the real server, on each database.
func TestCredentialsRevokeCLI(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testCredentialsRevokeCLI(t, "--database", url) })
}

func testCredentialsRevokeCLI(t *testing.T, dbArgs ...string) {
	ctx := context.Background()
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	url, _ := serve(t, dir, dbArgs...)
	c := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + acme.APIKey}}

	code, out, errOut := c.run(t, "", "devicetypes", "create", "--name", "Lock", "--max-rotations-per-hour", "7")
	var dt devreg.DeviceType
	if code != 0 || json.Unmarshal([]byte(out), &dt) != nil || dt.MaxRotationsPerHour == nil || *dt.MaxRotationsPerHour != 7 {
		t.Fatalf("devicetypes create --max-rotations-per-hour 7 = %d %s %s", code, out, errOut)
	}
	if code, _, errOut := c.run(t, "", "devicetypes", "create", "--name", "Lock 2", "--max-rotations-per-hour", "0"); code != 1 || !strings.Contains(errOut, "max_rotations_per_hour must be between 1 and 1000") {
		t.Errorf("devicetypes create --max-rotations-per-hour 0 = %d %s", code, errOut)
	}
	lot := filepath.Join(dir, "lot.csv")
	if err := os.WriteFile(lot, []byte("d-1, factory-secret-1\nd-2, factory-secret-2\nd-3, factory-secret-3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = c.run(t, "", "devices", "import", "--device-type", dt.ID, lot)
	var res devreg.RegisterResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Created != 3 {
		t.Fatalf("devices import = %d %s %s", code, out, errOut)
	}
	for _, id := range []string{"d-1", "d-2", "d-3"} {
		rot, err := client.RotateCredential(ctx, nil, url, acme.AccountID, id, "factory-secret-"+id[2:])
		if err != nil {
			t.Fatalf("rotate %s: %v", id, err)
		}
		if _, err := client.DeviceToken(ctx, nil, url, acme.AccountID, id, rot.Secret, ""); err != nil {
			t.Fatal(err)
		}
	}

	for _, args := range [][]string{
		{"credentials", "revoke", "--device", "d-1"},
		{"credentials", "revoke", "--source", "api", "--device", "d-1"},
		{"credentials", "revoke", "--source", "device"},
		{"credentials", "revoke", "--source", "device", "--device", "d-1", "--batch", res.BatchID},
		{"devices", "import", "--device-type", dt.ID, "--credentials", "reset", lot},
	} {
		if code, _, errOut := c.run(t, "", args...); code != 2 || !strings.HasPrefix(errOut, "devreg: ") {
			t.Errorf("%s = %d %s; want a usage error (2)", strings.Join(args, " "), code, errOut)
		}
	}
	code, out, errOut = c.run(t, "", "credentials", "revoke", "--source", "device", "--device", "d-1")
	if code != 0 || strings.Join(strings.Fields(out), " ") != `{ "deleted": 1 }` {
		t.Errorf("credentials revoke --device d-1 = %d %s %s", code, out, errOut)
	}
	code, out, errOut = c.run(t, "", "credentials", "revoke", "--source", "device", "--batch", res.BatchID)
	var r devreg.BatchRevocation
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Devices != 3 || r.Deleted != 2 || r.DevicesChanged != 2 || r.DevicesLeft != 0 {
		t.Errorf("credentials revoke --batch = %d %s %s", code, out, errOut)
	}

	// d-3 rotates again; the factory file with --credentials reset takes every device back to its
	// factory secret alone, without the end the rotations gave it.
	if _, err := client.RotateCredential(ctx, nil, url, acme.AccountID, "d-3", "factory-secret-3"); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = c.run(t, "", "devices", "import", "--device-type", dt.ID, "--on-conflict", "replace", "--credentials", "reset", lot)
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Replaced != 3 || res.DeviceCredentialsDropped != 1 {
		t.Errorf("devices import --credentials reset = %d %s %s", code, out, errOut)
	}
}
