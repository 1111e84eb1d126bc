package store_test

import (
	"context"
	"path/filepath"
	"testing"

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
