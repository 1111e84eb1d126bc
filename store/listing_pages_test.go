package store

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// pagedDevice is what the listing test knows of a device it wrote.
type pagedDevice struct {
	account, id, typ, batch, status string
	seen                            int64 // 0: never
	seq                             int64
}

// fillPagedAccounts writes n devices into two accounts, interleaved in registration order, with
// the same device IDs, types and batches in both, a third of them never seen and the others
// seen at times that often tie. It returns them in registration order.
func fillPagedAccounts(t *testing.T, s *DB, n int) []pagedDevice {
	t.Helper()
	ctx := context.Background()
	for _, acc := range []string{"acc_a", "acc_b"} {
		if err := s.CreateAccount(ctx, devreg.Account{ID: acc, Name: acc}, devreg.User{ID: "usr_" + acc, AccountID: acc, Email: acc + "@example.test", PasswordHash: "x"},
			devreg.APIKey{ID: "key_" + acc, AccountID: acc, Name: "owner", Scope: devreg.ScopeAdmin, Hash: []byte(acc)}); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(27, 20))
	var all []pagedDevice
	for i := range n {
		d := pagedDevice{
			account: []string{"acc_a", "acc_b"}[r.IntN(2)],
			id:      fmt.Sprintf("%s-%03d", []string{"p", "q", "pa"}[r.IntN(3)], r.IntN(1000)),
			typ:     fmt.Sprintf("dt_%d", 1+r.IntN(3)),
			batch:   fmt.Sprintf("bat_%d", 1+r.IntN(4)),
			status:  []string{"enabled", "enabled", "disabled"}[r.IntN(3)],
		}
		if r.IntN(3) > 0 {
			d.seen = int64(1+r.IntN(8)) * 1000
		}
		if slices.ContainsFunc(all, func(o pagedDevice) bool { return o.account == d.account && o.id == d.id }) {
			continue
		}
		var seen any
		if d.seen != 0 {
			seen = d.seen
		}
		if _, err := s.h.ExecContext(ctx, `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at, last_seen_at)
			VALUES (?, `+accountNum+`, ?, ?, ?, ?, 'k1', ?, ?, ?)`, d.account, d.account, d.id, d.typ, d.batch, d.status, []byte{0}, i, seen); err != nil {
			t.Fatal(err)
		}
		if err := s.h.QueryRowContext(ctx, `SELECT seq FROM devices WHERE `+oneDevice, d.account, d.id).Scan(&d.seq); err != nil {
			t.Fatal(err)
		}
		all = append(all, d)
	}
	return all
}

// expectedListing is what ListDevices should list of all for account, page after page.
func expectedListing(all []pagedDevice, account string, f devreg.DeviceFilter) []string {
	types, ok := typesOf(f.DeviceTypeID, f.DeviceTypeIDs)
	if !ok {
		return nil
	}
	var match []pagedDevice
	for _, d := range all {
		if d.account != account || types != nil && !slices.Contains(types, d.typ) ||
			f.BatchID != "" && d.batch != f.BatchID || f.Status != "" && d.status != string(f.Status) ||
			f.Connected != nil && *f.Connected != (d.seen != 0) || !strings.HasPrefix(d.id, f.Prefix) {
			continue
		}
		match = append(match, d)
	}
	switch {
	case f.ByID():
		slices.SortFunc(match, func(a, b pagedDevice) int { return strings.Compare(a.id, b.id) })
	case f.Sort == devreg.SortNewest:
		slices.SortFunc(match, func(a, b pagedDevice) int { return cmp.Compare(b.seq, a.seq) })
	case f.Sort == devreg.SortLastSeen:
		// Those seen, latest first; then those never seen, newest first.
		never := func(d pagedDevice) int {
			if d.seen == 0 {
				return 1
			}
			return 0
		}
		slices.SortFunc(match, func(a, b pagedDevice) int {
			return cmp.Or(cmp.Compare(never(a), never(b)), cmp.Compare(b.seen, a.seen), cmp.Compare(b.seq, a.seq))
		})
	default:
		slices.SortFunc(match, func(a, b pagedDevice) int { return cmp.Compare(a.seq, b.seq) })
	}
	ids := []string{}
	for _, d := range match {
		ids = append(ids, d.id)
	}
	return ids
}

// pagedListing lists page after page of limit devices, each from the cursor the registry makes
// of the previous page's last device.
func pagedListing(t *testing.T, s *DB, account string, f devreg.DeviceFilter, limit int) []string {
	t.Helper()
	f.Limit = limit
	ids := []string{}
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("%+v: more than 1000 pages", f)
		}
		page, err := s.ListDevices(context.Background(), account, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		for _, d := range page {
			ids = append(ids, d.DeviceID)
		}
		if len(page) < limit {
			return ids
		}
		last := page[len(page)-1]
		switch {
		case f.ByID():
			f.After = devreg.Cursor{DeviceID: last.DeviceID}
		case f.Sort == devreg.SortLastSeen:
			seen := int64(-1)
			if last.LastSeenAt != nil {
				seen = last.LastSeenAt.UnixMicro()
			}
			f.After = devreg.Cursor{SeenAt: seen, Seq: last.Seq}
		default:
			f.After = devreg.Cursor{Seq: last.Seq}
		}
	}
}

// Every order and filter lists each of the account's matching devices once, in the order's
// order, page after page of any size, and none of the other account's: the listing indexes are
// keyed by the account's number, and in last-seen order those never seen follow those seen
// within a page and across pages.
func TestListingPagesTwoAccounts(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		s := openForTest(t, url)
		all := fillPagedAccounts(t, s, 160)
		yes, no := true, false
		var filters []devreg.DeviceFilter
		for _, sort := range []devreg.DeviceSort{devreg.SortRegistered, devreg.SortNewest, devreg.SortID, devreg.SortLastSeen} {
			for _, f := range []devreg.DeviceFilter{
				{},
				{DeviceTypeID: "dt_2"},
				{DeviceTypeIDs: []string{"dt_3", "dt_1"}},
				{DeviceTypeIDs: []string{"dt_2"}},
				{DeviceTypeIDs: []string{"dt_3", "dt_1", "dt_none"}, DeviceTypeID: "dt_1"},
				{DeviceTypeIDs: []string{"dt_3"}, DeviceTypeID: "dt_1"},
				{DeviceTypeIDs: []string{}},
				{BatchID: "bat_2"},
				{BatchID: "bat_3", DeviceTypeIDs: []string{"dt_1", "dt_2"}},
				{Status: devreg.StatusEnabled},
				{Status: devreg.StatusDisabled, DeviceTypeIDs: []string{"dt_1", "dt_2"}},
				{Connected: &yes},
				{Connected: &no},
				{Connected: &no, DeviceTypeIDs: []string{"dt_1", "dt_2"}},
				{Connected: &yes, BatchID: "bat_1"},
				{Connected: &no, BatchID: "bat_4", Status: devreg.StatusEnabled},
			} {
				f.Sort = sort
				filters = append(filters, f)
			}
		}
		for _, prefix := range []string{"p", "pa-", "q-1"} {
			filters = append(filters, devreg.DeviceFilter{Prefix: prefix}, devreg.DeviceFilter{Prefix: prefix, DeviceTypeIDs: []string{"dt_1", "dt_3"}},
				devreg.DeviceFilter{Prefix: prefix, Connected: &no}, devreg.DeviceFilter{Prefix: prefix, BatchID: "bat_1"})
		}
		for _, f := range filters {
			for _, account := range []string{"acc_a", "acc_b"} {
				want := expectedListing(all, account, f)
				for _, limit := range []int{1, 3, 7, 1000} {
					if got := pagedListing(t, s, account, f, limit); !slices.Equal(got, want) {
						t.Errorf("%s %+v, pages of %d:\n got %q\nwant %q", account, f, limit, got, want)
					}
				}
			}
		}
	})
}

// TestListingNeverSeenReadsPostgres: in last-seen order, the page where the devices seen end and
// those never seen begin reads about a page of rows, also in an account whose devices have
// nearly all been seen (a fleet in the field). Every listing in last-seen order that reaches the
// end of the devices seen has such a page.
func TestListingNeverSeenReadsPostgres(t *testing.T) {
	ctx := context.Background()
	s, acc := planPostgres(t)
	// All but ten devices seen.
	if _, err := s.h.ExecContext(ctx, `UPDATE devices SET last_seen_at = seq * 1000 WHERE seq % 3000 <> 7`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	read := rowsRead(t, s)
	var oldest devreg.Device // the device seen longest ago: the last of those seen
	if err := s.h.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE last_seen_at IS NOT NULL ORDER BY last_seen_at, seq LIMIT 1`).Scan(
		&oldest.Seq, &oldest.DeviceID, &oldest.DeviceTypeID, &oldest.Status, &oldest.BatchID, new(int64), new(int64), new(*string), new(*string)); err != nil {
		t.Fatal(err)
	}
	var seenAt int64
	if err := s.h.QueryRowContext(ctx, `SELECT last_seen_at FROM devices WHERE seq = ?`, oldest.Seq).Scan(&seenAt); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]devreg.DeviceFilter{
		"after the last seen":        {Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: seenAt, Seq: oldest.Seq}},
		"never seen":                 {Sort: devreg.SortLastSeen, After: devreg.Cursor{SeenAt: -1, Seq: planDevices + 1}},
		"never connected":            {Connected: new(bool)},
		"last seen, never connected": {Sort: devreg.SortLastSeen, Connected: new(bool)},
	} {
		f.Limit = planLimit
		before := read("devices")
		page, err := s.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		if n := read("devices") - before; n > planLimit+1 || len(page) != 10 {
			t.Errorf("%s: %d devices listed, %d rows read; want 10 listed, at most %d read", name, len(page), n, planLimit+1)
		}
	}
}

// A cursor into the devices never seen (one of a last-seen listing without the connection
// filter, passed on with connected=true) lists none under connected=true: those devices never
// connected. The walk of those never seen must not set the filter aside.
func TestListingConnectedNeverCursor(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		all := fillPagedAccounts(t, s, 40)
		yes := true
		for _, f := range []devreg.DeviceFilter{
			{Sort: devreg.SortLastSeen, Connected: &yes, After: devreg.Cursor{SeenAt: -1, Seq: all[len(all)-1].seq + 1}},
			{Sort: devreg.SortLastSeen, Connected: &yes, After: devreg.Cursor{SeenAt: -1}},
			{Sort: devreg.SortLastSeen, Connected: &yes, After: devreg.Cursor{SeenAt: -1}, DeviceTypeIDs: []string{"dt_1", "dt_2"}},
		} {
			f.Limit = 100
			page, err := s.ListDevices(ctx, "acc_a", f)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page {
				if d.LastSeenAt == nil {
					t.Errorf("%+v: device %s, never seen, listed", f, d.DeviceID)
				}
			}
		}
	})
}

// DeleteBatch, RevokeBatchCredentials and DeleteDeviceType find the devices of the account
// they are asked for by its number, and only those: another account's devices that name the
// same batch and type (the two accounts' rows interleave) are neither counted nor touched.
func TestBatchWritesKeepToTheAccount(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		all := fillPagedAccounts(t, s, 80)
		count := func(account, batch, typ string) (n int64) {
			for _, d := range all {
				if d.account == account && (batch == "" || d.batch == batch) && (typ == "" || d.typ == typ) {
					n++
				}
			}
			return n
		}
		stored := func(account, batch string) (n int64) {
			if err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE account_id = ? AND batch_id = ?`, account, batch).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if _, err := s.h.ExecContext(ctx, `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source) VALUES ('bat_2', 'acc_a', 'dt_1', 0, 'me', 'api')`); err != nil {
			t.Fatal(err)
		}
		// A type of account a that only account b's devices name.
		if _, err := s.h.ExecContext(ctx, `INSERT INTO device_types (id, account_id, name, created_at) VALUES ('dt_3', 'acc_a', 'three', 0)`); err != nil {
			t.Fatal(err)
		}
		if _, err := s.h.ExecContext(ctx, `UPDATE devices SET device_type_id = 'dt_9' WHERE account_id = 'acc_a' AND device_type_id = 'dt_3'`); err != nil {
			t.Fatal(err)
		}
		if count("acc_b", "", "dt_3") == 0 || count("acc_a", "bat_2", "dt_1") == 0 || count("acc_b", "bat_2", "") == 0 {
			t.Fatal("the accounts do not share batch and type")
		}

		r, _, err := s.RevokeBatchCredentials(ctx, "acc_a", "dt_1", "bat_2", time.Now(), func(devreg.BatchRevocation) *devreg.AuditEntry { return nil })
		if err != nil || r.Devices != count("acc_a", "bat_2", "dt_1") {
			t.Errorf("revoking account a's batch: %d devices, %v; want %d", r.Devices, err, count("acc_a", "bat_2", "dt_1"))
		}
		if err := s.DeleteDeviceType(ctx, "acc_a", "dt_3"); err != nil {
			t.Errorf("deleting account a's type that only account b's devices name: %v", err)
		}
		n, err := s.DeleteBatch(ctx, "acc_a", "bat_2", time.Now(), func(int64) *devreg.AuditEntry {
			return &devreg.AuditEntry{ID: "aud_1", AccountID: "acc_a", Time: time.Now(), Actor: devreg.AuditActor{Type: devreg.ActorUser, ID: "me"}, Action: "batch.delete"}
		})
		if want := count("acc_a", "bat_2", ""); err != nil || n != want {
			t.Errorf("deleting account a's batch: %d devices, %v; want %d", n, err, want)
		}
		if got, want := stored("acc_b", "bat_2"), count("acc_b", "bat_2", ""); got != want {
			t.Errorf("account b's devices naming the batch after account a's went: %d, want %d", got, want)
		}
		if got := stored("acc_a", "bat_2"); got != 0 {
			t.Errorf("account a's devices of the deleted batch: %d left", got)
		}
	})
}
