package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
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
// key again in the transaction that writes, for its decide, and holds the key's row until the
// commit, so a revocation that comes between the two waits for the commit, and is after it: no
// registration commits under a key already deleted. Both write paths: new devices written at once, and a staged registration.
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
			reg := devreg.Registration{AccountID: acc.ID, DeviceTypeID: "dt_r", KeyIDs: []string{hashKey.ID},
				Batch: devreg.Batch{ID: "bat_" + path, DeviceTypeID: "dt_r", CreatedAt: time.Now(), Source: devreg.SourceAPI},
				KeyID: key.ID, Sample: []string{entries[0].DeviceID}, MayRepeat: path == "staged"}
			recheck := func(k *devreg.APIKey) error {
				if k == nil || k.ID != key.ID || k.Scope != devreg.ScopeRegister {
					return fmt.Errorf("the key as read again: %+v", k)
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
			}

			tctx, timings := devreg.NewContextWithTimings(ctx)
			res, err := db.Register(tctx, reg, entries, func(f devreg.Found) (devreg.Decision, error) {
				return devreg.Decision{}, recheck(f.Caller)
			})
			if err != nil || res.Created != int64(len(entries)) {
				t.Fatalf("registration = %+v, %v", res, err)
			}
			if staged := strings.Contains(timings.Header(), "stage;"); staged != (path == "staged") {
				t.Fatalf("the registration took the stage: %v (%s)", staged, timings.Header())
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
