package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"devreg/internal/pgtest"
	"devreg/store"
)

// openServerOn starts a server on database (a URL of pgtest.Each), and returns it with a
// connection of the test's own to the same database.
func openServerOn(t *testing.T, database string, cfg Config) (*Server, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	cfg.Addr, cfg.DataDir, cfg.Database, cfg.Logger = "127.0.0.1:0", t.TempDir(), database, slog.New(slog.DiscardHandler)
	driver, dsn := "sqlite", "file:"+strings.TrimPrefix(database, "sqlite:")
	if store.IsPostgres(database) {
		driver, dsn = "pgx", database
	}
	srv, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(ctx) })
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return srv, db
}

func getBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyz checks that /readyz answers 200 without credentials while the database answers and
// carries every migration, 503 naming the missing migration when one is not applied, and 503
// once the database is gone; on both databases.
func TestReadyz(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		srv, db := openServerOn(t, database, Config{})
		status, body := getBody(t, srv.URL()+"/readyz")
		if status != 200 || strings.TrimSpace(body) != `{"status":"ready"}` {
			t.Fatalf("GET /readyz = %d %s; want 200 {\"status\":\"ready\"}", status, body)
		}
		// A migration this build carries is missing: not ready, and the answer says so.
		var last int
		if err := db.QueryRow(`SELECT max(version) FROM schema_migrations`).Scan(&last); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`DELETE FROM schema_migrations WHERE version = ` + itoa(last)); err != nil {
			t.Fatal(err)
		}
		status, body = getBody(t, srv.URL()+"/readyz")
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal([]byte(body), &e)
		if status != 503 || e.Error.Code != "unavailable" || !strings.Contains(e.Error.Message, "migrations (up to version "+itoa(last)+")") {
			t.Fatalf("GET /readyz with migration %d removed = %d %s; want 503 naming the migrations", last, status, body)
		}
		// A newer devreg's migration beside all of ours: still ready (a rolling upgrade).
		if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (` + itoa(last) + `, 0), (` + itoa(last+1000) + `, 0)`); err != nil {
			t.Fatal(err)
		}
		if status, body = getBody(t, srv.URL()+"/readyz"); status != 200 {
			t.Fatalf("GET /readyz with a newer migration applied = %d %s; want 200", status, body)
		}
		// The database is gone.
		srv.db.Close()
		status, body = getBody(t, srv.URL()+"/readyz")
		json.Unmarshal([]byte(body), &e)
		if status != 503 || e.Error.Message != "the database does not answer" {
			t.Fatalf("GET /readyz with the database closed = %d %s; want 503, the database does not answer (and no more)", status, body)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
