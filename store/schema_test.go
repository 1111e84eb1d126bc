package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// migrateTo applies the embedded migrations up to version to a database, as a devreg of that
// version did, recording them.
func migrateTo(t *testing.T, db *sql.DB, pg bool, version int) {
	t.Helper()
	files, err := migrationFiles(migrationDir(pg))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaMigrationsTable); err != nil {
		t.Fatal(err)
	}
	for _, m := range files {
		if m.version > version {
			break
		}
		if _, err := db.Exec(m.body); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		insert := `INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)`
		if pg {
			insert = strings.Replace(insert, "?", "$1", 1)
		}
		if _, err := db.Exec(insert, m.version); err != nil {
			t.Fatal(err)
		}
	}
}

// migrationDir is the directory of PostgreSQL's migrations (pg) or SQLite's.
func migrationDir(pg bool) string {
	if pg {
		return postgresMigrations
	}
	return sqliteMigrations
}

// versions are the numbers of a dialect's migrations. They need not run from 1 without a gap:
// work done in parallel takes numbers apart, and one branch may land before another.
func versions(t *testing.T, pg bool) []int {
	t.Helper()
	files, err := migrationFiles(migrationDir(pg))
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for _, m := range files {
		vs = append(vs, m.version)
	}
	return vs
}

// The schema a database of each version should have is derived from the migrations, whatever
// their number: a database left at any version by an older devreg passes the comparison, and
// so does it once this devreg has migrated it the rest of the way, on both databases.
func TestSchemaOfEveryVersion(t *testing.T) {
	ctx := context.Background()
	if last := lastMigration(sqliteMigrations); last < 2 {
		t.Fatalf("%d migrations", last)
	}
	for _, v := range versions(t, false) {
		t.Run(fmt.Sprintf("sqlite/version-%d", v), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "devreg.db")
			raw, err := sql.Open("sqlite", file)
			if err != nil {
				t.Fatal(err)
			}
			migrateTo(t, raw, false, v)
			raw.Close()
			info, err := InspectFile(ctx, file)
			if err != nil || info.SchemaVersion != v {
				t.Fatalf("InspectFile of a database at version %d: %d, %v", v, info.SchemaVersion, err)
			}
			db, err := Open(ctx, "sqlite:"+file)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if r, err := db.CheckSchema(ctx); err != nil || len(r.Problems) > 0 {
				t.Errorf("CheckSchema once migrated from version %d: %v %v", v, r.Problems, err)
			}
		})
	}
	for _, v := range versions(t, true) {
		t.Run(fmt.Sprintf("postgres/version-%d", v), func(t *testing.T) {
			url := pgtest.NewDatabase(t)
			raw, err := sql.Open("pgx", url)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			migrateTo(t, raw, true, v)
			old, err := OpenExisting(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			r, err := old.CheckSchema(ctx)
			old.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 0, false: 1}[v == lastMigration(postgresMigrations)]; len(r.Problems) != want {
				t.Errorf("CheckSchema of a database at version %d: %q, want %d problem(s) (not migrated yet)", v, r.Problems, want)
			}
			db, err := Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if r, err := db.CheckSchema(ctx); err != nil || len(r.Problems) > 0 {
				t.Errorf("CheckSchema once migrated from version %d: %v %v", v, r.Problems, err)
			}
		})
	}
}

// A database in another schema than public, with a name that must be quoted, compares too.
func TestPostgresSchemaNamedOtherwise(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(`CREATE SCHEMA "Devreg Data"`); err != nil {
		t.Fatal(err)
	}
	url += "&search_path=" + strings.ReplaceAll(`"Devreg Data"`, " ", "%20")
	db, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var tables int
	if err := raw.QueryRow(`SELECT count(*) FROM pg_tables WHERE schemaname = 'Devreg Data'`).Scan(&tables); err != nil || tables < 5 {
		t.Fatalf("%d tables in the schema (%v)", tables, err)
	}
	if r, err := db.CheckSchema(ctx); err != nil || len(r.Problems) > 0 {
		t.Errorf("CheckSchema: %v %v", r.Problems, err)
	}
	if _, err := raw.Exec(`CREATE INDEX extra ON "Devreg Data".devices (key_id)`); err != nil {
		t.Fatal(err)
	}
	if r, err := db.CheckSchema(ctx); err != nil || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], `index "extra" on table devices is not part`) {
		t.Errorf("CheckSchema with an index added: %q %v", r.Problems, err)
	}
}
