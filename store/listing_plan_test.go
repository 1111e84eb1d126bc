package store

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// The listings' plans on a database the size of a real one: 30,000 devices, 20,000 of them in
// one prefix range spread over 100 types, the rest of 20 other types; 3,000 batches.
const (
	planDevices = 30000
	planBatches = 3000
	planLimit   = 1001
)

// planTypes are the 100 types the listings are restricted to.
var planTypes = func() []string {
	var types []string
	for i := range 100 {
		types = append(types, fmt.Sprintf("dt_%d", i))
	}
	return types
}()

// planPostgres opens a database of its own on the test's PostgreSQL server, fills it with
// fillForPlans and returns it with the account's ID.
func planPostgres(t *testing.T) (*DB, string) {
	t.Helper()
	s := openForTest(t, pgtest.NewDatabase(t))
	return s, fillForPlans(t, s)
}

// openForTest opens the store at url, closed when the test ends.
func openForTest(t testing.TB, url string) *DB {
	t.Helper()
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fillForPlans writes the devices and batches, and returns the account's ID.
func fillForPlans(t testing.TB, s *DB) string {
	t.Helper()
	ctx := context.Background()
	a := devreg.Account{ID: "acc_plan", Name: "plan"}
	if err := s.CreateAccount(ctx, a, devreg.User{ID: "usr_plan", AccountID: a.ID, Email: "plan@example.test", PasswordHash: "x"},
		devreg.APIKey{ID: "key_plan", AccountID: a.ID, Name: "owner", Scope: devreg.ScopeAdmin, Hash: []byte("h")}); err != nil {
		t.Fatal(err)
	}
	// Two in three devices are of the prefix and of the 100 types, in turn, by ID and by
	// registration.
	devices := `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, key_id, secret_hash, created_at)
		SELECT ?, (SELECT num FROM accounts WHERE id = ?),
			CASE WHEN i % 3 < 2 THEN 'big-' ELSE 'oth-' END || substr(CAST(10000000 + i AS TEXT), 2),
			CASE WHEN i % 3 < 2 THEN 'dt_' || CAST(i % 100 AS TEXT) ELSE 'dt_x' || CAST(i % 20 AS TEXT) END,
			'bat_' || CAST(i / 10 AS TEXT), 'k1', ?, 0 FROM n`
	batches := `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source)
		SELECT 'bat_' || CAST(i AS TEXT), ?, 'dt_' || CAST(i % 120 AS TEXT), 0, 'plan', 'api' FROM n`
	numbers := `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d) `
	if _, pg := s.d.(postgresDialect); pg {
		numbers = `WITH n(i) AS (SELECT generate_series(1, %d)) `
	}
	if _, err := s.h.ExecContext(ctx, fmt.Sprintf(numbers, planDevices)+devices, a.ID, a.ID, []byte{0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.h.ExecContext(ctx, fmt.Sprintf(numbers, planBatches)+batches, a.ID); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

// planListings are the listings of a key restricted to the 100 types whose plans matter.
var planListings = map[string]devreg.DeviceFilter{
	"prefix":                 {Prefix: "big"},
	"prefix-next-page":       {Prefix: "big", After: devreg.Cursor{DeviceID: "big-0015000"}},
	"prefix-enabled":         {Prefix: "big-00", Status: devreg.StatusEnabled},
	"registration-order":     {},
	"registration-next-page": {After: devreg.Cursor{Seq: 15000}},
	"registration-connected": {Connected: new(bool), Status: devreg.StatusEnabled},
	"batch":                  {BatchID: "bat_7"},
	"one-type-registration":  {DeviceTypeID: "dt_7"},
	"newest":                 {Sort: devreg.SortNewest},
	"newest-next-page":       {Sort: devreg.SortNewest, After: devreg.Cursor{Seq: 15000}},
	"one-type-newest":        {Sort: devreg.SortNewest, DeviceTypeID: "dt_7"},
	"id":                     {Sort: devreg.SortID},
	"id-next-page":           {Sort: devreg.SortID, After: devreg.Cursor{DeviceID: "big-0015000"}},
}

// planLastSeenRestricted are listings in last-seen order of a key restricted to planTypes. On
// SQLite they walk the index of last sightings. PostgreSQL, with its statistics, would rather
// read every device below the cursor through a bitmap of that index and sort them (5,000 rows
// read for a page of 1,001 here), so the Operations API, where restricted keys list devices,
// offers no order but registration and device ID order (see TestListingReadsPostgres).
var planLastSeenRestricted = map[string]devreg.DeviceFilter{
	"last-seen":           {Sort: devreg.SortLastSeen},
	"last-seen-next-page": {Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: 15000 * 1000, Seq: 15000}},
	"last-seen-never":     {Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: -1, Seq: 15000}},
}

// planIndex is the index that a listing of a key restricted to planTypes walks.
func planIndex(f devreg.DeviceFilter) string {
	switch {
	case f.BatchID != "":
		return "devices_batch"
	case f.ByID():
		return "devices_id"
	case f.Sort == devreg.SortLastSeen:
		return "devices_seen"
	}
	return "devices_type"
}

// planUnrestricted are the listings of the account's admin, with the index each walks.
var planUnrestricted = map[string]struct {
	f     devreg.DeviceFilter
	index string
}{
	"registration-order":     {devreg.DeviceFilter{}, "devices_account"},
	"registration-next-page": {devreg.DeviceFilter{After: devreg.Cursor{Seq: 15000}}, "devices_account"},
	"newest":                 {devreg.DeviceFilter{Sort: devreg.SortNewest}, "devices_account"},
	"newest-next-page":       {devreg.DeviceFilter{Sort: devreg.SortNewest, After: devreg.Cursor{Seq: 15000}}, "devices_account"},
	"one-type-newest":        {devreg.DeviceFilter{Sort: devreg.SortNewest, DeviceTypeID: "dt_7"}, "devices_type"},
	"batch-newest":           {devreg.DeviceFilter{Sort: devreg.SortNewest, BatchID: "bat_7"}, "devices_batch"},
	"id":                     {devreg.DeviceFilter{Sort: devreg.SortID}, "devices_id"},
	"id-next-page":           {devreg.DeviceFilter{Sort: devreg.SortID, After: devreg.Cursor{DeviceID: "big-0015000"}}, "devices_id"},
	"id-enabled":             {devreg.DeviceFilter{Sort: devreg.SortID, Status: devreg.StatusEnabled}, "devices_id"},
	"last-seen":              {devreg.DeviceFilter{Sort: devreg.SortLastSeen}, "devices_seen"},
	"last-seen-next-page":    {devreg.DeviceFilter{Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: 15000 * 1000, Seq: 15000}}, "devices_seen"},
	"last-seen-never":        {devreg.DeviceFilter{Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: -1, Seq: 15000}}, "devices_seen"},
	"last-seen-enabled":      {devreg.DeviceFilter{Sort: devreg.SortLastSeen, Status: devreg.StatusEnabled}, "devices_seen"},
}

// seeForPlans marks a fifth of the devices seen, a hundred in every five hundred, at times that
// tie in pairs.
func seeForPlans(t *testing.T, s *DB) {
	t.Helper()
	if _, err := s.h.ExecContext(context.Background(), `UPDATE devices SET last_seen_at = (seq / 2) * 2000 WHERE (seq / 100) % 5 = 0`); err != nil {
		t.Fatal(err)
	}
}

// interleaveForPlans registers as many devices as the plans' account has in another account,
// interleaved with them in registration order: a walk of the table in registration order (seq
// is SQLite's rowid) reads them too.
func interleaveForPlans(t *testing.T, s *DB) {
	t.Helper()
	ctx := context.Background()
	a := devreg.Account{ID: "acc_other", Name: "other"}
	if err := s.CreateAccount(ctx, a, devreg.User{ID: "usr_other", AccountID: a.ID, Email: "other@example.test", PasswordHash: "x"},
		devreg.APIKey{ID: "key_other", AccountID: a.ID, Name: "owner", Scope: devreg.ScopeAdmin, Hash: []byte("h2")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.h.ExecContext(ctx, `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, key_id, secret_hash, created_at, last_seen_at)
		SELECT ?, (SELECT num FROM accounts WHERE id = ?), 'x' || device_id, 'dt_o', 'bat_o', 'k1', secret_hash, 0, last_seen_at
		FROM devices ORDER BY seq`, a.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	renumbering := []string{
		`UPDATE devices SET seq = -seq`,
		`UPDATE devices SET seq = -2 * seq WHERE account_id = 'acc_plan'`,
		`UPDATE devices SET seq = -2 * (seq + ` + fmt.Sprint(planDevices) + `) + 1 WHERE account_id = 'acc_other'`,
	}
	if _, pg := s.d.(postgresDialect); pg { // seq is GENERATED ALWAYS there
		renumbering = append(append([]string{`ALTER TABLE devices ALTER COLUMN seq SET GENERATED BY DEFAULT`}, renumbering...),
			`ALTER TABLE devices ALTER COLUMN seq SET GENERATED ALWAYS`)
	}
	for _, renumber := range renumbering {
		if _, err := s.h.ExecContext(ctx, renumber); err != nil {
			t.Fatal(err)
		}
	}
}

// TestListingPlansSQLite: SQLite lists a page for a set of 100 types by walking one index in
// the listing's order (or one per type, merged), never by sorting what it found, with and
// without the statistics of ANALYZE.
func TestListingPlansSQLite(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	acc := fillForPlans(t, s)
	seeForPlans(t, s)
	interleaveForPlans(t, s)
	plan := func(q string, args []any) []string {
		rows, err := s.h.QueryContext(ctx, `EXPLAIN QUERY PLAN `+q, args...)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var lines []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, detail)
		}
		return lines
	}
	check := func(name string, lines []string, index string) {
		walks := 0
		for _, l := range lines {
			switch {
			case strings.Contains(l, "TEMP B-TREE") || strings.HasPrefix(l, "SCAN devices") || strings.HasPrefix(l, "SCAN batches"):
				t.Errorf("%s: %q in the plan:\n%s", name, l, strings.Join(lines, "\n"))
			case strings.HasPrefix(l, "SEARCH devices") || strings.HasPrefix(l, "SEARCH batches"):
				walks++
				// The account's index in registration order is the table's order too (seq is its
				// rowid), which SQLite may walk instead, reading other accounts' rows in passing.
				rowid := index == "devices_account" && strings.Contains(l, "USING INTEGER PRIMARY KEY")
				if !strings.Contains(l, "USING INDEX "+index+" ") && !rowid {
					t.Errorf("%s: %q, want a walk of %s", name, l, index)
				}
			}
		}
		if walks == 0 {
			t.Errorf("%s: no walk in the plan:\n%s", name, strings.Join(lines, "\n"))
		}
	}
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		// One type of a prefix is a walk of the prefix's range too (there is no index of types
		// by device ID); with statistics, SQLite would rather skip-scan the type index and sort.
		listings := maps.Clone(planListings)
		listings["one-type-prefix"] = devreg.DeviceFilter{DeviceTypeID: "dt_7", Prefix: "big-001"}
		maps.Copy(listings, planLastSeenRestricted)
		for name, f := range listings {
			f.DeviceTypeIDs, f.Limit = planTypes, planLimit
			q, args, _ := s.devicesQuery(acc, f)
			check(fmt.Sprintf("%s (analyzed %v)", name, analyzed), plan(q, args), planIndex(f))
		}
		for name, l := range planUnrestricted {
			f := l.f
			f.Limit = planLimit
			q, args, _ := s.devicesQuery(acc, f)
			check(fmt.Sprintf("unrestricted %s (analyzed %v)", name, analyzed), plan(q, args), l.index)
		}
		q, args, _ := s.batchesQuery(acc, devreg.BatchFilter{DeviceTypeIDs: planTypes, Limit: planLimit})
		check(fmt.Sprintf("batches (analyzed %v)", analyzed), plan(q, args), "batches_type")
	}
}

// TestListingReadsPostgres: with the statistics of ANALYZE, PostgreSQL reads about a page of
// rows to list a page for a set of 100 types, not a page (or every row) of each type: counted
// by the database itself (pg_stat_user_tables) over the store's one connection.
func TestListingReadsPostgres(t *testing.T) {
	ctx := context.Background()
	s, acc := planPostgres(t)
	seeForPlans(t, s)
	if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	read := rowsRead(t, s)
	// A page, the row that tells whether there is another, and one row more per type merged.
	most := int64(planLimit + len(planTypes) + 1)
	for name, f := range planListings {
		f.DeviceTypeIDs, f.Limit = planTypes, planLimit
		// A walk of another index than the types' reads the devices of other types in passing
		// (a third of them here), and one with a condition on the connection those it does
		// not list (a fifth).
		most := most
		if planIndex(f) != "devices_type" && f.BatchID == "" || f.Connected != nil {
			most = planLimit * 3 / 2
		}
		before := read("devices")
		page, err := s.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		if n := read("devices") - before; n > most || len(page) == 0 {
			t.Errorf("%s: %d devices listed, %d rows read; want at most %d", name, len(page), n, most)
		}
	}
	for name, l := range planUnrestricted {
		f := l.f
		f.Limit = planLimit
		before := read("devices")
		page, err := s.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		// Status is a condition of the walk: all devices are enabled here.
		if n := read("devices") - before; n > planLimit+1 || len(page) == 0 {
			t.Errorf("unrestricted %s: %d devices listed, %d rows read; want at most %d", name, len(page), n, planLimit+1)
		}
	}
	before := read("batches")
	batches, _, err := s.ListBatches(ctx, acc, devreg.BatchFilter{DeviceTypeIDs: planTypes, Limit: planLimit})
	if err != nil {
		t.Fatal(err)
	}
	if n := read("batches") - before; n > most || len(batches) != planLimit {
		t.Errorf("batches: %d listed, %d rows read; want at most %d", len(batches), n, most)
	}
}

// rowsRead limits s to one connection and returns what tells how many rows of a table that
// connection has read so far, as PostgreSQL counts them (pg_stat_user_tables): the backend
// whose counters are flushed and read is then the one that ran the statements measured.
func rowsRead(t *testing.T, s *DB) func(table string) int64 {
	ctx := context.Background()
	s.db.SetMaxOpenConns(1)
	return func(table string) int64 {
		t.Helper()
		// The backend sends its counters when the statement that asks it to ends.
		if _, err := s.db.ExecContext(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := s.db.QueryRowContext(ctx, `SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relname = $1`,
			table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
}
