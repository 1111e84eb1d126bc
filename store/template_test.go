package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMigratedTemplateIsTheMigratedSchema: a new SQLite database that starts as the migrated
// template (UseMigratedTemplate, for tests elsewhere) has the schema, the recorded migrations and
// the schema check of one that the migrations made, and takes writes.
func TestMigratedTemplateIsTheMigratedSchema(t *testing.T) {
	ctx := context.Background()
	image, err := templateImage()
	if err != nil {
		t.Fatal(err)
	}
	migrated, err := openImage(ctx, "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"), false, nil)
	if err == nil {
		defer migrated.Close()
	}
	copied, err2 := openImage(ctx, "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"), false, image)
	if err != nil || err2 != nil {
		t.Fatal(err, err2)
	}
	defer copied.Close()
	describe := func(s *DB) (rows []string) {
		t.Helper()
		for _, q := range []string{
			`SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master ORDER BY type, name`,
			`SELECT 'migration ' || version FROM schema_migrations ORDER BY version`,
		} {
			r, err := s.h.QueryContext(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for r.Next() {
				var row string
				if err := r.Scan(&row); err != nil {
					t.Fatal(err)
				}
				rows = append(rows, row)
			}
			r.Close()
		}
		return rows
	}
	want := describe(migrated)
	if len(want) < 40 {
		t.Fatalf("the migrated database describes itself in %d rows", len(want))
	}
	if diff := cmp.Diff(want, describe(copied)); diff != "" {
		t.Errorf("the template's copy differs from a migrated database (-migrated +copy):\n%s", diff)
	}
	if r, err := copied.CheckSchema(ctx); err != nil || len(r.Problems) > 0 {
		t.Errorf("devreg check of the template's copy: %v, %v", r.Problems, err)
	}
	if _, err := copied.h.ExecContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES ('k', 0, 1)`); err != nil {
		t.Errorf("a write to the template's copy: %v", err)
	}
}

// TestMigratedTemplateOpenedTwiceAtOnce: opens of one new file at once, each with the template,
// all find a whole database (the image is linked into place whole, never read half written).
func TestMigratedTemplateOpenedTwiceAtOnce(t *testing.T) {
	ctx := context.Background()
	image, err := templateImage()
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		url := "sqlite:" + filepath.Join(t.TempDir(), "devreg.db")
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				s, err := openImage(ctx, url, false, image)
				if err == nil {
					var r CheckResult
					if r, err = s.CheckSchema(ctx); err == nil && len(r.Problems) > 0 {
						err = fmt.Errorf("%v", r.Problems)
					}
					s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("one of four opens of a new file at once: %v", err)
			}
		}
	}
}
