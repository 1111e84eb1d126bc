package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/store"
	"devreg/store/storetest"
)

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.DB {
		db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}

func TestMigrationsRunOnce(t *testing.T) {
	path := "sqlite:" + filepath.Join(t.TempDir(), "devreg.db")
	for range 2 {
		db, err := store.Open(context.Background(), path)
		if err != nil {
			t.Fatalf("opening an existing database: %v", err)
		}
		db.Close()
	}
}

func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.DB {
		db, err := store.Open(context.Background(), pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	})
}

// Several servers may start at once on one PostgreSQL database: the migrations run once.
func TestPostgresConcurrentMigrations(t *testing.T) {
	url := pgtest.NewDatabase(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := store.Open(context.Background(), url)
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent start: %v", err)
		}
	}
}

// A database that an earlier devreg made keeps its devices across the upgrade: each account's
// devices are found by ID, and an account made after the upgrade gets a number of its own.
func TestUpgradeKeepsDevices(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		var stmts []string
		for _, acc := range []string{"a", "b"} {
			stmts = append(stmts,
				`INSERT INTO accounts (id, name, created_at) VALUES ('acc_`+acc+`', '`+acc+`', 0)`,
				`INSERT INTO device_types (id, account_id, name, device_count, created_at) VALUES ('dt_`+acc+`', 'acc_`+acc+`', 'T', 1, 0)`,
				`INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, device_count) VALUES ('bat_`+acc+`', 'acc_`+acc+`', 'dt_`+acc+`', 0, 'me', 'api', 1)`,
				`INSERT INTO devices (account_id, device_id, device_type_id, batch_id, key_id, secret_hash, created_at) VALUES ('acc_`+acc+`', 'd1', 'dt_`+acc+`', 'bat_`+acc+`', 'k1', '`+acc+`', 0)`)
		}
		oldDatabase(t, url, 3, stmts...)

		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatalf("upgrading: %v", err)
		}
		defer db.Close()
		for _, acc := range []string{"a", "b"} {
			d, err := db.Device(ctx, "acc_"+acc, "d1")
			if err != nil || d.BatchID != "bat_"+acc {
				t.Errorf("device d1 of account %s after the upgrade: %+v, %v", acc, d, err)
			}
		}
		if _, err := db.Device(ctx, "acc_a", "d2"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("unknown device: %v", err)
		}
		err = db.CreateAccount(ctx, devreg.Account{ID: "acc_c", Name: "c"}, devreg.User{ID: "usr_c", AccountID: "acc_c", Email: "c@example.test", PasswordHash: "x"},
			devreg.APIKey{ID: "key_c", AccountID: "acc_c", Name: "o", Scope: devreg.ScopeAdmin, Hash: []byte("hc")})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_c", AccountID: "acc_c", Name: "T"}); err != nil {
			t.Fatal(err)
		}
		res, err := db.Register(ctx, devreg.Registration{AccountID: "acc_c", DeviceTypeID: "dt_c", KeyIDs: []string{"k1"}, Batch: devreg.Batch{ID: "bat_c"}, MayRepeat: true},
			storetest.EntryList{{DeviceID: "d1", Hashes: []byte("hash-of-c")}}, failOnConflict)
		if err != nil || res.Created != 1 {
			t.Errorf("registering d1 in a new account: %+v, %v", res, err)
		}
		if d, err := db.Device(ctx, "acc_b", "d1"); err != nil || d.BatchID != "bat_b" {
			t.Errorf("device d1 of account b after account c registered it: %+v, %v", d, err)
		}
	})
}

// A database made by the release before the listing indexes were keyed by the account's number
// (migration 20) lists each account's devices, and only those, in every order after the upgrade.
func TestUpgradeListsEachAccountsDevices(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		var stmts []string
		for i, acc := range []string{"a", "b"} {
			num := fmt.Sprint(i + 1)
			stmts = append(stmts,
				`INSERT INTO accounts (id, name, created_at, num) VALUES ('acc_`+acc+`', '`+acc+`', 0, `+num+`)`,
				`INSERT INTO device_types (id, account_id, name, device_count, created_at) VALUES ('dt_`+acc+`', 'acc_`+acc+`', 'T', 3, 0)`,
				`INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, device_count, connected_count) VALUES ('bat_`+acc+`', 'acc_`+acc+`', 'dt_`+acc+`', 0, 'me', 'api', 3, 1)`)
			for j, seen := range []string{"NULL", "5", "NULL"} {
				stmts = append(stmts, `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, key_id, secret_hash, created_at, last_seen_at)
					VALUES ('acc_`+acc+`', `+num+`, '`+acc+fmt.Sprint(j)+`', 'dt_`+acc+`', 'bat_`+acc+`', 'k1', '`+acc+fmt.Sprint(j)+`', 0, `+seen+`)`)
			}
		}
		oldDatabase(t, url, 19, stmts...)

		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatalf("upgrading: %v", err)
		}
		defer db.Close()
		for name, tc := range map[string]struct {
			f    devreg.DeviceFilter
			want string
		}{
			"registration order":   {devreg.DeviceFilter{}, "a0 a1 a2"},
			"newest first":         {devreg.DeviceFilter{Sort: devreg.SortNewest}, "a2 a1 a0"},
			"last seen":            {devreg.DeviceFilter{Sort: devreg.SortLastSeen}, "a1 a2 a0"},
			"device ID order":      {devreg.DeviceFilter{Sort: devreg.SortID}, "a0 a1 a2"},
			"type":                 {devreg.DeviceFilter{DeviceTypeID: "dt_a"}, "a0 a1 a2"},
			"batch":                {devreg.DeviceFilter{BatchID: "bat_a"}, "a0 a1 a2"},
			"other account's type": {devreg.DeviceFilter{DeviceTypeID: "dt_b"}, ""},
		} {
			tc.f.Limit = 10
			devices, err := db.ListDevices(ctx, "acc_a", tc.f)
			var ids []string
			for _, d := range devices {
				ids = append(ids, d.DeviceID)
			}
			if got := strings.Join(ids, " "); err != nil || got != tc.want {
				t.Errorf("%s: %q, %v; want %q", name, got, err, tc.want)
			}
		}
		if n, err := db.DeleteBatch(ctx, "acc_b", "bat_b", time.Now(), func(int64) *devreg.AuditEntry {
			return &devreg.AuditEntry{ID: "aud_1", AccountID: "acc_b", Time: time.Now(), Actor: devreg.AuditActor{Type: devreg.ActorUser, ID: "me"}, Action: "batch.delete"}
		}); err != nil || n != 3 {
			t.Errorf("deleting account b's batch: %d devices, %v; want 3", n, err)
		}
		if devices, err := db.ListDevices(ctx, "acc_a", devreg.DeviceFilter{Limit: 10}); err != nil || len(devices) != 3 {
			t.Errorf("account a's devices after b's batch went: %d, %v; want 3", len(devices), err)
		}
	})
}

// A database made by the release before several credentials per device keeps every device's
// secret as its first credential: a registration credential, created with the device, that its
// secret still matches.
func TestUpgradeCarriesSecretsOver(t *testing.T) {
	key := credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		created := time.Date(2026, 10, 1, 8, 0, 0, 0, time.UTC)
		hash := credential.Hash(key, "acc_a", "d1", "secret-of-d1")
		oldDatabase(t, url, 5,
			`INSERT INTO accounts (id, name, created_at, num) VALUES ('acc_a', 'a', 0, 1)`,
			`INSERT INTO device_types (id, account_id, name, device_count, created_at) VALUES ('dt_a', 'acc_a', 'T', 1, 0)`,
			`INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, device_count) VALUES ('bat_a', 'acc_a', 'dt_a', 0, 'me', 'api', 1)`,
			fmt.Sprintf(`INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, key_id, secret_hash, created_at)
					SELECT 'acc_a', num, 'd1', 'dt_a', 'bat_a', 'k1', %s, %d FROM accounts WHERE id = 'acc_a'`, hexLiteral(url, hash), created.UnixMicro()))

		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatalf("upgrading: %v", err)
		}
		defer db.Close()
		d, err := db.DeviceAuth(ctx, "acc_a", "d1")
		if err != nil {
			t.Fatal(err)
		}
		keys, _ := credential.NewKeyring(key)
		if len(d.Credentials) != 1 {
			t.Fatalf("credentials after the upgrade: %+v", d.Credentials)
		}
		c := d.Credentials[0]
		if c.Source != devreg.CredentialFromRegistration || c.Status != devreg.StatusEnabled || !c.CreatedAt.Equal(created) ||
			c.NotBefore != nil || c.NotAfter != nil || c.LastUsedAt != nil || !c.ValidAt(time.Now()) {
			t.Errorf("the device's first credential after the upgrade: %+v", c.Credential)
		}
		if !keys.Verify(c.KeyID, c.Hash, "acc_a", "d1", "secret-of-d1") {
			t.Errorf("the device's secret does not match its first credential after the upgrade")
		}
		dt, err := db.DeviceType(ctx, "acc_a", "dt_a")
		if err != nil || dt.RotationGraceSeconds == nil || *dt.RotationGraceSeconds != devreg.DefaultRotationGraceSeconds {
			t.Errorf("device type after the upgrade: %+v, %v; want the default rotation grace", dt, err)
		}
	})
}

// oldDatabase makes the new database at url (of pgtest.Each) what the release with the first n
// migrations left, and runs stmts in it.
func oldDatabase(t *testing.T, url string, n int, stmts ...string) {
	t.Helper()
	dialect, driver, dsn := "sqlite", "sqlite", strings.TrimPrefix(url, "sqlite:")
	if store.IsPostgres(url) {
		dialect, driver, dsn = "postgres", "pgx", url
	}
	old, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	names, err := filepath.Glob(filepath.Join("migrations", dialect, "*.sql"))
	if err != nil || len(names) < n {
		t.Fatalf("migrations: %v, %v", names, err)
	}
	all := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)`}
	for v, name := range names[:n] {
		body, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, string(body), fmt.Sprintf(`INSERT INTO schema_migrations VALUES (%d, 0)`, v+1))
	}
	for _, s := range append(all, stmts...) {
		if _, err := old.ExecContext(context.Background(), s); err != nil {
			t.Fatalf("%v\n%s", err, s)
		}
	}
}

// hexLiteral writes b as a blob literal of the database at url.
func hexLiteral(url string, b []byte) string {
	if store.IsPostgres(url) {
		return fmt.Sprintf(`'\x%x'::bytea`, b)
	}
	return fmt.Sprintf(`X'%x'`, b)
}

// A registration's pages reach the SQLite database file soon after it commits, not only when
// some later write comes along: backups of the file and the log's size depend on it.
func TestSQLiteCheckpointsAfterRegistration(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "devreg.db")
	db, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.CreateAccount(ctx, devreg.Account{ID: "acc_a", Name: "a"}, devreg.User{ID: "usr_a", AccountID: "acc_a", Email: "a@example.test", PasswordHash: "x"},
		devreg.APIKey{ID: "key_a", AccountID: "acc_a", Name: "o", Scope: devreg.ScopeAdmin, Hash: []byte("ha")})
	if err == nil {
		err = db.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_a", AccountID: "acc_a", Name: "T"})
	}
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var entries storetest.EntryList
	for i := range 5000 {
		entries = append(entries, devreg.StagedEntry{Index: i, DeviceID: fmt.Sprintf("dev-%05d", i), Hashes: make([]byte, 32)})
	}
	reg := devreg.Registration{AccountID: "acc_a", DeviceTypeID: "dt_a", KeyIDs: []string{"k1"}, Batch: devreg.Batch{ID: "bat_a"}, MayRepeat: true}
	if _, err := db.Register(ctx, reg, entries, failOnConflict); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		after, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if after.Size() >= before.Size()+5000*100 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file is %d bytes 10 s after registering 5000 devices (%d before)", after.Size(), before.Size())
		}
	}
}

// failOnConflict decides a registration as on_conflict=fail does.
func failOnConflict(f devreg.Found) (devreg.Decision, error) {
	if f.Repeats+f.Conflicting+f.TakenNew > 0 {
		return devreg.Decision{}, fmt.Errorf("%d repeats, %d conflicts, %d certificates of other devices", f.Repeats, f.Conflicting, f.TakenNew)
	}
	return devreg.Decision{}, nil
}
