package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/store"
	"devreg/store/storetest"
)

// TestPostgresRevocationWaitsForRegistration: on PostgreSQL, a registration reads its caller's
// key again just before it commits and holds the key's row until then, so a revocation that
// comes between the two waits for the commit, and is after it: no registration commits under a
// key already deleted. Both write paths: new devices written at once (Direct), and a staged
// registration (Apply).
func TestPostgresRevocationWaitsForRegistration(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	db, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	watch, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()

	acc := devreg.Account{ID: "acc_r", Name: "r", CreatedAt: time.Now()}
	owner := devreg.APIKey{ID: "key_owner", AccountID: acc.ID, Name: "owner", Scope: devreg.ScopeAdmin, Hash: credential.HashAPIKey("drk_owner")}
	if err := db.CreateAccount(ctx, acc, devreg.User{ID: "usr_r", AccountID: acc.ID, Email: "r@example.test", PasswordHash: "x"}, owner); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_r", AccountID: acc.ID, Name: "T", MinSecretLength: 8}); err != nil {
		t.Fatal(err)
	}
	hashKey := credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}

	for _, path := range []string{"direct", "staged"} {
		t.Run(path, func(t *testing.T) {
			key := devreg.APIKey{ID: "key_" + path, AccountID: acc.ID, Name: path, Scope: devreg.ScopeRegister, Hash: credential.HashAPIKey("drk_" + path)}
			if err := db.CreateAPIKey(ctx, key); err != nil {
				t.Fatal(err)
			}
			var entries storetest.EntryList
			for i := range 10 {
				id := fmt.Sprintf("%s-%d", path, i)
				entries = append(entries, devreg.StagedEntry{Index: i, DeviceID: id, Hashes: credential.Hash(hashKey, acc.ID, id, "secret-"+id)})
			}
			deleted := make(chan error, 1)
			waited := false
			plan := devreg.RegistrationPlan{AccountID: acc.ID, DeviceTypeID: "dt_r", KeyIDs: []string{hashKey.ID}, OnConflict: devreg.ConflictFail,
				Batch: devreg.Batch{ID: "bat_" + path, DeviceTypeID: "dt_r", CreatedAt: time.Now(), Source: devreg.SourceAPI},
				KeyID: key.ID,
				Recheck: func(k devreg.APIKey, found bool) error {
					if !found || k.ID != key.ID || k.Scope != devreg.ScopeRegister {
						return fmt.Errorf("the key as read again: %+v, found %v", k, found)
					}
					// The key is revoked now, between the check and the commit.
					go func() { deleted <- db.DeleteAPIKey(ctx, acc.ID, key.ID) }()
					for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
						select {
						case err := <-deleted:
							deleted <- err // for the end of the test
							t.Errorf("the key was deleted (%v) between the registration's check and its commit", err)
							return nil
						default:
						}
						var n int
						if err := watch.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
							AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM api_keys%'`).Scan(&n); err != nil {
							t.Error(err)
							return nil
						}
						if n > 0 {
							waited = true
							return nil
						}
					}
					t.Error("the delete neither ended nor waited for a lock in 10s")
					return nil
				},
			}

			st, err := db.NewStage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var res devreg.RegisterResult
			if path == "direct" {
				var done bool
				res, done, err = st.Direct(ctx, plan, entries, []string{entries[0].DeviceID})
				if !done && err == nil {
					t.Fatal("Direct did not register new devices")
				}
			} else {
				if err = st.Add(ctx, entries); err == nil {
					res, err = st.Apply(ctx, plan)
				}
			}
			if err != nil || res.Created != int64(len(entries)) {
				t.Fatalf("registration = %+v, %v", res, err)
			}
			if err := <-deleted; err != nil {
				t.Errorf("the delete after the commit: %v", err)
			}
			if !waited {
				t.Error("the delete did not wait for the registration's commit")
			}
			if _, err := db.APIKey(ctx, acc.ID, key.ID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
				t.Errorf("the key after the delete: %v", err)
			}
		})
	}
}
