package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// seenEnv is two store handles on one database — two servers — with a service on the first and
// an account, its admin and a device type; and the test's own connection to the database, for
// what the store does not offer. On SQLite, which one server serves, both handles are the same.
type seenEnv struct {
	a, b  *store.DB
	svc   *registry.Service
	acc   devreg.Account
	admin context.Context
	dt    devreg.DeviceType
	raw   *sql.DB
	pg    bool
}

func newSeenEnv(t *testing.T, url string) *seenEnv {
	t.Helper()
	ctx := context.Background()
	e := &seenEnv{pg: store.IsPostgres(url)}
	var err error
	if e.a, err = store.Open(ctx, url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.a.Close() })
	e.b = e.a
	driver, dsn := "sqlite", strings.TrimPrefix(url, "sqlite:")
	if e.pg {
		if e.b, err = store.Open(ctx, url); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.b.Close() })
		driver, dsn = "pgx", url
	}
	if e.raw, err = sql.Open(driver, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.raw.Close() })
	keys, err := credential.LoadOrCreateKeyring(filepath.Join(t.TempDir(), "secret.keys"))
	if err != nil {
		t.Fatal(err)
	}
	e.svc = registry.New(e.a, keys)
	t.Cleanup(e.svc.Close)
	if e.acc, _, err = e.svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner"); err != nil {
		t.Fatal(err)
	}
	e.admin = devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: e.acc.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	if e.dt, err = e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Sensor"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// ids are n device IDs made from prefix.
func ids(prefix string, n int) []string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return list
}

// register registers the devices with secrets made from salt, as opts says, and returns the result.
func (e *seenEnv) register(ctx context.Context, devices []string, salt string, opts devreg.RegisterOptions) (devreg.RegisterResult, error) {
	var list []string
	for _, id := range devices {
		list = append(list, id, "secret-"+salt+"-of-"+id)
	}
	return e.svc.Register(e.admin, e.dt.ID, &entries{list: list}, opts)
}

// checkCounters fails the test unless devreg check finds every batch's and type's count right.
func (e *seenEnv) checkCounters(t *testing.T, when string) {
	t.Helper()
	r, err := e.a.CheckCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Errorf("%s: devreg check: %s", when, strings.Join(r.Problems, "; "))
	}
}

// count runs a query that counts something and returns the count.
func (e *seenEnv) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := e.raw.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// parallel runs each of work in a goroutine of its own and returns their errors.
func parallel(work ...func() error) []error {
	var wg sync.WaitGroup
	errs := make([]error, len(work))
	for i, w := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w()
		}()
	}
	wg.Wait()
	return slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}

// TestMarkSeenFromTwoServers: two servers record that the same 20,000 devices, in four batches,
// were seen and that their credentials were used, each in its own order, at once, several
// times. Each server's writes of the same rows used to take them in another order (a map's)
// and deadlock, and the failed batch was dropped. Every write must succeed, every device's
// last_seen_at and last use must be the latest time, and the batches' connected counts exact.
func TestMarkSeenFromTwoServers(t *testing.T) { pgtest.Each(t, testMarkSeenFromTwoServers) }

func testMarkSeenFromTwoServers(t *testing.T, url string) {
	e := newSeenEnv(t, url)
	ctx := context.Background()
	// SQLite writes one transaction at a time, whoever sends it: it shows that the same writes
	// work there, on fewer devices, which keeps the test short under the race detector.
	batches, perBatch := 4, 5000
	if !e.pg {
		perBatch = 500
	}
	var all []string
	for i := range batches {
		devices := ids(fmt.Sprintf("b%d", i), perBatch)
		if _, err := e.register(ctx, devices, "1", devreg.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
		all = append(all, devices...)
	}
	// Every credential has been used once: later uses move the time on, as broker logins do.
	if _, err := e.raw.Exec(`UPDATE devices SET cred_last_used_at = 1`); err != nil {
		t.Fatal(err)
	}
	uses := func(order []string) []devreg.CredentialUse {
		list := make([]devreg.CredentialUse, len(order))
		for i, id := range order {
			list[i] = devreg.CredentialUse{DeviceID: id, CredentialID: "cr_any", InDevice: true}
		}
		return list
	}
	reversed := slices.Clone(all)
	slices.Reverse(reversed)
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for round := range 2 {
		shuffled := slices.Clone(all)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		ta, tb := t0.Add(time.Duration(2*round)*time.Second), t0.Add(time.Duration(2*round+1)*time.Second)
		for _, err := range parallel(
			func() error { return e.a.MarkSeen(ctx, e.acc.ID, shuffled, ta) },
			func() error { return e.a.MarkCredentialsUsed(ctx, e.acc.ID, uses(reversed), ta) },
			func() error { return e.b.MarkSeen(ctx, e.acc.ID, reversed, tb) },
			func() error { return e.b.MarkCredentialsUsed(ctx, e.acc.ID, uses(shuffled), tb) },
		) {
			t.Errorf("round %d: %v", round+1, err)
		}
		latest := tb.UnixMicro()
		if n := e.count(t, `SELECT count(*) FROM devices WHERE last_seen_at = $1`, latest); n != len(all) {
			t.Errorf("round %d: %d of %d devices have the latest last_seen_at", round+1, n, len(all))
		}
		if n := e.count(t, `SELECT count(*) FROM devices WHERE cred_last_used_at = $1`, latest); n != len(all) {
			t.Errorf("round %d: %d of %d credentials have the latest use", round+1, n, len(all))
		}
		e.checkCounters(t, fmt.Sprintf("round %d", round+1))
		if n := e.count(t, `SELECT sum(connected_count) FROM batches`); n != len(all) {
			t.Errorf("round %d: the batches count %d devices connected, want %d", round+1, n, len(all))
		}
	}
}

// TestMarkSeenRetriesAFailedChunk: a write of devices seen that fails for a passing reason (here
// a deadlock, then a serialization failure, raised by a trigger of the test's) is tried again,
// and what still fails after the last try is named in the error, with how many devices it lost.
func TestMarkSeenRetriesAFailedChunk(t *testing.T) {
	e := newSeenEnv(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	devices := ids("d", 100)
	if _, err := e.register(ctx, devices, "1", devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	// A sequence counts the tries: nextval is not rolled back with the transaction that failed.
	for _, q := range []string{
		`CREATE SEQUENCE tries`,
		`CREATE TABLE failing (code TEXT, times INTEGER)`,
		`INSERT INTO failing VALUES ('40P01', 2)`,
		`CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE f failing;
		BEGIN
			SELECT * INTO f FROM failing;
			IF nextval('tries') <= f.times THEN
				RAISE EXCEPTION 'injected by the test' USING ERRCODE = f.code;
			END IF;
			RETURN NULL;
		END $$`,
		`CREATE TRIGGER fail BEFORE UPDATE ON devices FOR EACH STATEMENT EXECUTE FUNCTION fail()`,
	} {
		if _, err := e.raw.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t1 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	if err := e.a.MarkSeen(ctx, e.acc.ID, devices, t1); err != nil {
		t.Errorf("MarkSeen after two deadlocks: %v, want it tried again until it succeeds", err)
	}
	if n := e.count(t, `SELECT count(*) FROM devices WHERE last_seen_at = $1`, t1.UnixMicro()); n != len(devices) {
		t.Errorf("%d of %d devices seen after two deadlocks", n, len(devices))
	}
	e.checkCounters(t, "after two deadlocks")

	if _, err := e.raw.Exec(`UPDATE failing SET code = '40001', times = 1000; SELECT setval('tries', 1, false)`); err != nil {
		t.Fatal(err)
	}
	t2 := t1.Add(time.Minute)
	err := e.a.MarkSeen(ctx, e.acc.ID, devices, t2)
	if err == nil || !strings.Contains(err.Error(), "100 of 100 devices were not recorded") || !strings.Contains(err.Error(), "40001") {
		t.Errorf("MarkSeen that always fails: %v, want it to say that 100 of 100 devices were not recorded, and why", err)
	}
	if n := e.count(t, `SELECT CAST(last_value AS INTEGER) FROM tries`); n < 2 {
		t.Errorf("a failing write was tried %d times, want it tried again", n)
	}
	if n := e.count(t, `SELECT count(*) FROM devices WHERE last_seen_at = $1`, t1.UnixMicro()); n != len(devices) {
		t.Errorf("%d of %d devices left as they were by a write that failed", n, len(devices))
	}
}

// TestMarkSeenHoldsNoAccountLock: while a write of devices seen waits for a row (another
// transaction holds it), registrations of the same account go on. It used to hold the account's
// lock, which every registration takes, for the whole write: 30 s in one measurement.
func TestMarkSeenHoldsNoAccountLock(t *testing.T) {
	e := newSeenEnv(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	devices := ids("d", 10)
	if _, err := e.register(ctx, devices, "1", devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	holder, err := e.raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	if _, err := holder.Exec(`SELECT 1 FROM devices WHERE device_id = $1 FOR UPDATE`, devices[5]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	seenAt := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	go func() { done <- e.b.MarkSeen(ctx, e.acc.ID, devices, seenAt) }()
	e.waitForLock(t, done, "MarkSeen", "a device's row")
	// This database's only: other tests' databases on the same server take advisory locks too.
	if n := e.count(t, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`); n != 0 {
		holder.Rollback()
		t.Fatalf("a write of devices seen holds %d advisory locks while it waits for a row; want none (the account's lock stops registrations)", n)
	}
	// If MarkSeen held the account's lock, this would wait for it until the deadline.
	regCtx, cancel := context.WithTimeout(e.admin, time.Minute)
	defer cancel()
	var list []string
	for _, id := range ids("new", 100) {
		list = append(list, id, "secret-of-"+id)
	}
	if res, err := e.svc.Register(regCtx, e.dt.ID, &entries{list: list}, devreg.RegisterOptions{}); err != nil || res.Created != 100 {
		t.Errorf("a registration while devices are being marked seen: %+v, %v; want 100 created", res, err)
	}
	select {
	case err := <-done:
		t.Fatalf("MarkSeen returned (%v) while a device's row was held", err)
	default:
	}
	holder.Rollback()
	if err := <-done; err != nil {
		t.Errorf("MarkSeen: %v", err)
	}
	if n := e.count(t, `SELECT count(*) FROM devices WHERE last_seen_at = $1`, seenAt.UnixMicro()); n != len(devices) {
		t.Errorf("%d of %d devices seen", n, len(devices))
	}
	e.checkCounters(t, "after the write")
}

// TestReplaceWhileDevicesAreFirstSeen: a registration that replaces devices (on_conflict=replace)
// while another server records them seen for the first time, and meanwhile first check-ins and
// deletions of some of them: every batch's connected_count must match its devices. The
// registration reads which devices were seen before it locks them; a first sighting written in
// between must still be counted once, in the batch the device ends up in.
func TestReplaceWhileDevicesAreFirstSeen(t *testing.T) {
	pgtest.Each(t, testReplaceWhileDevicesAreFirstSeen)
}

func testReplaceWhileDevicesAreFirstSeen(t *testing.T, url string) {
	e := newSeenEnv(t, url)
	ctx := context.Background()
	n, rounds := 3000, 6
	if !e.pg { // one writer at a time: no race to catch, only the same writes to make work
		n, rounds = 500, 2
	}
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	for round := range rounds {
		devices := ids(fmt.Sprintf("r%d", round), n)
		first, err := e.register(ctx, devices, "1", devreg.RegisterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		shuffled := slices.Clone(devices)
		rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		at := t0.Add(time.Duration(round) * time.Minute)
		for _, err := range parallel(
			func() error {
				res, err := e.register(ctx, devices, "2", devreg.RegisterOptions{OnConflict: devreg.ConflictReplace})
				if err == nil && res.Replaced+res.Created != int64(n) {
					err = fmt.Errorf("replace: %+v, want %d replaced or created", res, n)
				}
				return err
			},
			func() error { return e.b.MarkSeen(ctx, e.acc.ID, shuffled, at) },
			func() error {
				for _, id := range devices[:20] {
					err := e.b.CheckIn(ctx, e.acc.ID, id, first.BatchID, at, nil, nil)
					if code := devreg.ErrorCode(err); err != nil && code != devreg.EUNAUTHORIZED && code != devreg.ENOTFOUND { // registered again first
						return fmt.Errorf("check-in of %s: %w", id, err)
					}
				}
				return nil
			},
			func() error {
				for _, id := range devices[n-20:] {
					if err := e.a.DeleteDevice(ctx, e.acc.ID, id); err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND {
						return fmt.Errorf("delete %s: %w", id, err)
					}
				}
				return nil
			},
		) {
			t.Errorf("round %d: %v", round+1, err)
		}
		e.checkCounters(t, fmt.Sprintf("round %d", round+1))
	}
}
