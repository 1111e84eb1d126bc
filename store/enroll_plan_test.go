package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devreg"
)

// TestEnrollLooksUpItsIDsPostgres: an enrollment transaction finds which of its device IDs are
// registered, enrolled before or allowed by looking each up in its table's key, whether or not
// PostgreSQL has statistics of the tables yet (it has none of enrollments while a group's first
// devices enrol, nor of devices right after a large registration). Asked for device_id = ANY,
// it read every row of the account for each transaction, which the account's first connections
// all wait for: 4 ms for 30 IDs among 10,000 rows. Counted by the database itself.
func TestEnrollLooksUpItsIDsPostgres(t *testing.T) {
	ctx := context.Background()
	s, acc := planPostgres(t)
	dt := devreg.DeviceType{ID: "dt_enrol", AccountID: acc, Name: "enrol"}
	if err := s.CreateDeviceType(ctx, dt); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	g := devreg.EnrollmentGroup{ID: "eg_plan", AccountID: acc, DeviceTypeID: dt.ID, Name: "plan", IDPattern: "^new-.*$", MaxDevices: 1000,
		MaxPerHour: 1000, Status: devreg.StatusEnabled, AllowList: true, CreatedAt: now,
		Keys: []devreg.EnrollmentKey{{ID: "k", CreatedAt: now, SealKeyID: "s", Sealed: []byte("x")}}}
	if err := s.CreateEnrollmentGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	// As many enrolled before and allowed as there are devices, none of them the new ones.
	for _, fill := range []string{
		`INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at) SELECT (SELECT num FROM accounts WHERE id = $1), 'big-' || i, 'eg_gone', 0 FROM generate_series(1, $2) i`,
		`INSERT INTO enrollment_allowed_ids (group_id, device_id) SELECT 'eg_plan', 'old-' || $1 || i FROM generate_series(1, $2) i`,
	} {
		if _, err := s.db.ExecContext(ctx, fill, acc, planDevices); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO enrollment_allowed_ids (group_id, device_id) SELECT 'eg_plan', 'new-' || i FROM generate_series(1, 60) i`); err != nil {
		t.Fatal(err)
	}
	read := rowsRead(t, s)
	for round := range 2 { // the second with the statistics of ANALYZE
		if round == 1 {
			if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		var es []devreg.Enrollment
		for i := range 30 {
			id := fmt.Sprintf("new-%d", 30*round+i+1)
			es = append(es, devreg.Enrollment{AccountID: acc, GroupID: g.ID, IDPattern: g.IDPattern, KeyID: "k", HourKey: "enroll:plan",
				DeviceID: id, HashKeyID: "k1", SecretHash: []byte{1}, Now: now, Batch: devreg.Batch{ID: fmt.Sprintf("bat_enrol_%d", round)}})
		}
		before := map[string]int64{}
		tables := []string{"devices", "enrollments", "enrollment_allowed_ids"}
		for _, table := range tables {
			before[table] = read(table)
		}
		results, err := s.Enroll(ctx, es)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range results {
			if !r.Registered {
				t.Fatalf("round %d: %s was not registered: %+v", round, es[i].DeviceID, r)
			}
		}
		for _, table := range tables {
			if n, most := read(table)-before[table], int64(2*len(es)+10); n > most {
				t.Errorf("round %d: enrolling %d devices read %d rows of %s (%d of them in the account); want at most %d",
					round, len(es), n, table, planDevices, most)
			}
		}
	}
}
