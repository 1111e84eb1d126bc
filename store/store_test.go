package store_test

import (
	"context"
	"path/filepath"
	"testing"

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
