package store

import (
	"context"
	"database/sql"
	"sync"

	"devreg"
)

// embeddedMigrations is how many migrations of each dialect (by their directory) this build
// carries and the highest version among them, read once: readiness checks compare the database
// with them on every call.
var embeddedMigrations = sync.OnceValues(func() (map[string][2]int, error) {
	out := map[string][2]int{} // count, highest
	for _, dir := range []string{sqliteMigrations, postgresMigrations} {
		files, err := migrationFiles(dir)
		if err != nil {
			return out, err
		}
		var n [2]int
		for _, m := range files {
			n[0]++
			n[1] = max(n[1], m.version)
		}
		out[dir] = n
	}
	return out, nil
})

// Ready checks that the database answers and that every migration this build carries has been
// applied to it: one query, so that a load balancer may ask often. A database migrated further
// by a newer devreg (a rolling upgrade) is ready for this one too, since it holds every table
// this build uses. The error says which of the two failed; callers bound ctx (a database that
// does not answer must not hold the check for long).
func (s *DB) Ready(ctx context.Context) error {
	all, err := embeddedMigrations()
	if err != nil {
		return err
	}
	want := all[s.d.migrations()]
	var applied int
	if err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version <= ?`, want[1]).Scan(&applied); err != nil {
		// The cause (which may name the database's host) goes to the log only: anyone may ask.
		return &devreg.Error{Code: devreg.EUNAVAILABLE, Message: "the database does not answer", Err: err}
	}
	if applied != want[0] {
		return devreg.Errorf(devreg.EUNAVAILABLE, "the database has %d of this devreg's %d migrations (up to version %d); start devreg once more to apply the rest",
			applied, want[0], want[1])
	}
	return nil
}

// Stats returns the connection pool's figures, for /metrics.
func (s *DB) Stats() sql.DBStats { return s.db.Stats() }

// AuditEntryCount returns how many audit entries all accounts' chains hold together: the sum of
// their heads' sequence numbers, one row per account rather than one per entry.
func (s *DB) AuditEntryCount(ctx context.Context) (int64, error) {
	var n int64
	err := s.h.QueryRowContext(ctx, `SELECT COALESCE(SUM(seq), 0) FROM audit_heads`).Scan(&n)
	return n, err
}
