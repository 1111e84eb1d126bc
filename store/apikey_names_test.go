package store_test

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// A database made before key names were unique keeps every key across the upgrade: of keys that
// share a name in an account the oldest keeps it and each later one gets its ID added. Names in
// other accounts are left alone, and from then on a name that is taken is refused, when a key
// is made and when one is renamed.
func TestUpgradeMakesKeyNamesUnique(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		stmts := []string{
			`INSERT INTO accounts (id, name, created_at, num) VALUES ('acc_a', 'a', 0, 1)`,
			`INSERT INTO accounts (id, name, created_at, num) VALUES ('acc_b', 'b', 0, 2)`,
		}
		for _, k := range []struct {
			id, account, name string
			created           int
		}{
			{"key_3", "acc_a", "station", 30},
			{"key_1", "acc_a", "station", 10},
			{"key_2", "acc_a", "station", 20},
			{"key_4", "acc_a", "owner", 5},
			{"key_5", "acc_b", "station", 40},
		} {
			stmts = append(stmts, `INSERT INTO api_keys (id, account_id, name, scope, key_hash, created_at) VALUES ('`+k.id+`', '`+k.account+`', '`+k.name+`', 'admin', '`+k.id+`', `+strconv.Itoa(k.created)+`)`)
		}
		oldDatabase(t, url, 14, stmts...)
		db, err := store.Open(ctx, url)
		if err != nil {
			t.Fatalf("upgrading: %v", err)
		}
		defer db.Close()
		names := func(account string) []string {
			t.Helper()
			keys, err := db.ListAPIKeys(ctx, account)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, k := range keys {
				out = append(out, k.ID+"="+k.Name)
			}
			slices.Sort(out)
			return out
		}
		want := []string{"key_1=station", "key_2=station (key_2)", "key_3=station (key_3)", "key_4=owner"}
		if diff := cmp.Diff(want, names("acc_a")); diff != "" {
			t.Errorf("account a's keys after the upgrade (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"key_5=station"}, names("acc_b")); diff != "" {
			t.Errorf("account b's keys after the upgrade (-want +got):\n%s", diff)
		}

		err = db.CreateAPIKey(ctx, devreg.APIKey{ID: "key_6", AccountID: "acc_a", Name: "station", Scope: devreg.ScopeRead, Hash: []byte("h6")})
		if devreg.ErrorCode(err) != devreg.ECONFLICT {
			t.Errorf("a new key named as an old one: %v, want a conflict", err)
		}
		k, err := db.APIKey(ctx, "acc_a", "key_4")
		if err != nil {
			t.Fatal(err)
		}
		k.Name = "station (key_2)"
		if err := db.UpdateAPIKey(ctx, k); devreg.ErrorCode(err) != devreg.ECONFLICT {
			t.Errorf("renaming a key to a name taken: %v, want a conflict", err)
		}
		if err := db.CreateAPIKey(ctx, devreg.APIKey{ID: "key_7", AccountID: "acc_b", Name: "owner", Scope: devreg.ScopeRead, Hash: []byte("h7")}); err != nil {
			t.Errorf("a name taken in another account: %v", err)
		}
	})
}
