// Package pgtest gives tests their own PostgreSQL database on the server that
// DEVREG_TEST_POSTGRES names (for example postgres://postgres@127.0.0.1:5432/postgres), created
// for the test and dropped after it, so that runs on a shared server never meet; and with Each,
// runs a test on both databases devreg keeps its data in.
package pgtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"devreg/credential"
)

// EnvVar names the server the PostgreSQL tests use.
const EnvVar = "DEVREG_TEST_POSTGRES"

// Each runs test twice, as the subtests "sqlite" and "postgres" (the names -run selects, as in
// -run 'TestX/postgres'), each time with the URL of a new, empty database of its own:
//
//   - "sqlite": "sqlite:DIR/devreg.db" in a new temporary directory of the subtest. That is no
//     server's data directory: a server on it (server.Config.Database, devreg --database) keeps
//     its key files in a DataDir of its own, and a test that reads the SQLite files takes their
//     path from the URL.
//   - "postgres": a database of NewDatabase, so skipped without DEVREG_TEST_POSTGRES on a
//     developer's machine and failed under CI.
//
// store.Open and server.Config.Database take either URL as it is; store.IsPostgres tells them
// apart. A test that needs another database of the same kind uses NewDatabaseLike.
func Each(t *testing.T, test func(t *testing.T, url string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, newSQLite(t)) })
	t.Run("postgres", func(t *testing.T) { test(t, NewDatabase(t)) })
}

// NewDatabaseLike returns the URL of a new, empty database of the kind url is (as Each makes
// them): an SQLite database in a new temporary directory, or a PostgreSQL database of
// NewDatabase.
func NewDatabaseLike(t testing.TB, url string) string {
	t.Helper()
	if strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") {
		return NewDatabase(t)
	}
	return newSQLite(t)
}

// newSQLite returns the URL of a new SQLite database in a new temporary directory of the test.
func newSQLite(t testing.TB) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "devreg.db")
}

// ServerURL returns the server URL from the environment. Without one the test is skipped on a
// developer's machine, but fails under CI (CI set), which must never pass with PostgreSQL untested.
func ServerURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvVar)
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: CI must run the PostgreSQL tests", EnvVar)
		}
		t.Skipf("%s is not set; set it to a PostgreSQL server URL to run the PostgreSQL tests", EnvVar)
	}
	return u
}

// NewDatabase creates an empty database for the test and returns its URL. options are added to
// the CREATE DATABASE statement (such as a locale: the server's default collation may not be
// the one a user's database has).
func NewDatabase(t testing.TB, options ...string) string {
	t.Helper()
	server := ServerURL(t)
	admin, err := sql.Open("pgx", server)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := "devreg_test_" + strings.ToLower(credential.RandomString(12))
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, strings.Join(append([]string{"CREATE DATABASE", name}, options...), " ")); err != nil {
		t.Fatalf("create test database on %s: %v", EnvVar, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", server)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}
