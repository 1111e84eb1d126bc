package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"

	"devreg"
)

// OpenExisting opens the database at url as it is, without bringing its schema up to date, for
// the commands that look at data rather than serve it (check, backup): they must see the schema
// version as it is, and must not change a database that a server of another version runs on. An
// embedded database that does not exist is an error, not a new database.
func OpenExisting(ctx context.Context, url string) (*DB, error) {
	return open(ctx, url, true)
}

// SchemaVersion returns the schema version this build brings a database to: the number of its
// last migration for the database's dialect.
func (s *DB) SchemaVersion() int { return lastMigration(s.d.migrations()) }

// lastMigration returns the number of the last embedded migration of a dialect, in directory
// dir. (A misnamed migration file fails every Open, in migrate.)
func lastMigration(dir string) int {
	files, _ := migrationFiles(dir)
	if len(files) == 0 {
		return 0
	}
	return files[len(files)-1].version
}

// StoredSchemaVersion returns the schema version of the database: its last migration applied.
func (s *DB) StoredSchemaVersion(ctx context.Context) (int, error) {
	var v sql.NullInt64
	if err := s.h.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version (is this a devreg database?): %w", err)
	}
	return int(v.Int64), nil
}

// ReadSnapshot runs fn on a view of the database frozen at one moment, for checks whose several
// queries must add up while a server keeps writing: a read-only transaction, REPEATABLE READ on
// PostgreSQL (an SQLite transaction reads one snapshot of the write-ahead log from its first
// read on). The view answers the store's reading methods, which query through its handle; it is
// not to be written through or closed.
func (s *DB) ReadSnapshot(ctx context.Context, fn func(view *DB) error) error {
	opts := s.d.snapshot()
	tx, err := s.db.BeginTx(ctx, &opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(&DB{db: s.db, d: s.d, h: handle{q: tx, d: s.d}}); err != nil {
		return err
	}
	return tx.Commit()
}

// CheckResult is what one check of the data found.
type CheckResult struct {
	Name     string   // what was checked: "schema", "counters", "hash keys", "audit log"
	Summary  string   // what was looked at
	Problems []string // what does not add up; none when all is well
}

// CheckSchema checks that the database's schema version is this build's, and that it holds
// exactly the objects (tables, indexes, triggers, views, and on PostgreSQL also functions, rules
// and the like) that devreg's migrations up to its version make.
func (s *DB) CheckSchema(ctx context.Context) (CheckResult, error) {
	r := CheckResult{Name: "schema"}
	stored, err := s.StoredSchemaVersion(ctx)
	if err != nil {
		return r, err
	}
	want := s.SchemaVersion()
	r.Summary = fmt.Sprintf("version %d (this devreg's is %d); its tables, indexes, triggers and views compared with those devreg's migrations make", stored, want)
	switch {
	case stored > want:
		r.Problems = append(r.Problems, fmt.Sprintf("the schema version is %d, but this devreg's is %d: "+
			"a newer devreg release has migrated the database; check it with that release", stored, want))
		return r, nil
	case stored < 1:
		r.Problems = append(r.Problems, fmt.Sprintf("the schema version is %d, which no devreg makes", stored))
		return r, nil
	case stored < want:
		r.Problems = append(r.Problems, fmt.Sprintf("the schema version is %d, but this devreg's is %d: "+
			"the database has not been migrated yet (devreg serve does that when it starts)", stored, want))
	}
	objects, err := s.d.schemaProblems(ctx, s, stored)
	if err != nil {
		return r, fmt.Errorf("compare the schema with devreg's: %w", err)
	}
	r.Problems = append(r.Problems, objects...)
	return r, nil
}

// CheckCounters checks that every counter equals its rows: each device type's device count, and
// each batch's device and connected counts (devices seen at least once), that no enrollment
// group counts fewer devices than enrolled through it, and that every device
// belongs to a device type and a batch that exist, so that some counter counts it.
func (s *DB) CheckCounters(ctx context.Context) (CheckResult, error) {
	r := CheckResult{Name: "counters"}
	var types, batches int64
	if err := s.h.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM device_types), (SELECT count(*) FROM batches)`).Scan(&types, &batches); err != nil {
		return r, err
	}
	r.Summary = fmt.Sprintf("%d device type%s, %d batch%s", types, plural(types, "s"), batches, plural(batches, "es"))
	checks := []struct {
		query  string
		report func(scan func(...any) error) (string, error)
	}{
		{`SELECT t.account_id, t.id, t.device_count, coalesce(c.n, 0) FROM device_types t
			LEFT JOIN (SELECT account_id, device_type_id, count(*) AS n FROM devices GROUP BY account_id, device_type_id) c
			ON c.account_id = t.account_id AND c.device_type_id = t.id
			WHERE t.device_count <> coalesce(c.n, 0) ORDER BY t.account_id, t.id`,
			func(scan func(...any) error) (string, error) {
				var account, id string
				var counter, rows int64
				err := scan(&account, &id, &counter, &rows)
				return fmt.Sprintf("device type %s (account %s): device_count is %d, but %d devices have this type", id, account, counter, rows), err
			}},
		{`SELECT b.account_id, b.id, b.device_count, b.connected_count, coalesce(c.n, 0), coalesce(c.seen, 0) FROM batches b
			LEFT JOIN (SELECT account_id, batch_id, count(*) AS n, count(last_seen_at) AS seen FROM devices GROUP BY account_id, batch_id) c
			ON c.account_id = b.account_id AND c.batch_id = b.id
			WHERE b.device_count <> coalesce(c.n, 0) OR b.connected_count <> coalesce(c.seen, 0) ORDER BY b.account_id, b.id`,
			func(scan func(...any) error) (string, error) {
				var account, id string
				var count, connected, rows, seen int64
				err := scan(&account, &id, &count, &connected, &rows, &seen)
				var wrong []string
				if count != rows {
					wrong = append(wrong, fmt.Sprintf("device_count is %d, but it holds %d devices", count, rows))
				}
				if connected != seen {
					wrong = append(wrong, fmt.Sprintf("connected_count is %d, but %d of its devices have been seen", connected, seen))
				}
				return fmt.Sprintf("batch %s (account %s): %s", id, account, strings.Join(wrong, "; ")), err
			}},
		// enrolled_count counts every device a group registered, also those re-allowed since
		// (reenroll forgets an enrollment, not the count): it is never below the rows.
		{`SELECT g.account_id, g.id, g.enrolled_count, c.n FROM enrollment_groups g
			JOIN (SELECT group_id, count(*) AS n FROM enrollments GROUP BY group_id) c ON c.group_id = g.id
			WHERE g.enrolled_count < c.n ORDER BY g.account_id, g.id`,
			func(scan func(...any) error) (string, error) {
				var account, id string
				var counter, rows int64
				err := scan(&account, &id, &counter, &rows)
				return fmt.Sprintf("enrollment group %s (account %s): enrolled_count is %d, but %d devices enrolled through it", id, account, counter, rows), err
			}},
		{`SELECT d.account_id, d.device_type_id, count(*) FROM devices d
			WHERE NOT EXISTS (SELECT 1 FROM device_types t WHERE t.account_id = d.account_id AND t.id = d.device_type_id)
			GROUP BY d.account_id, d.device_type_id ORDER BY d.account_id, d.device_type_id`,
			func(scan func(...any) error) (string, error) {
				var account, id string
				var n int64
				err := scan(&account, &id, &n)
				return fmt.Sprintf("%d devices of account %s have device type %s, which does not exist", n, account, id), err
			}},
		{`SELECT d.account_id, d.batch_id, count(*) FROM devices d
			WHERE NOT EXISTS (SELECT 1 FROM batches b WHERE b.account_id = d.account_id AND b.id = d.batch_id)
			GROUP BY d.account_id, d.batch_id ORDER BY d.account_id, d.batch_id`,
			func(scan func(...any) error) (string, error) {
				var account, id string
				var n int64
				err := scan(&account, &id, &n)
				return fmt.Sprintf("%d devices of account %s are in batch %s, which does not exist", n, account, id), err
			}},
	}
	for _, c := range checks {
		rows, err := s.h.QueryContext(ctx, c.query)
		if err != nil {
			return r, err
		}
		for rows.Next() {
			problem, err := c.report(rows.Scan)
			if err != nil {
				rows.Close()
				return r, err
			}
			r.Problems = append(r.Problems, problem)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, err
		}
	}
	return r, nil
}

// CheckHashKeys checks that every stored secret hash was made with a key that hasKey knows, the
// keys of the key file keyFile (named in the report); without it, no device whose secret was
// hashed with a missing key can log in.
func (s *DB) CheckHashKeys(ctx context.Context, hasKey func(id string) bool, keyFile string) (CheckResult, error) {
	r := CheckResult{Name: "hash keys"}
	type uses struct{ devices, credentials, groupKeys int64 }
	used := map[string]*uses{}
	for i, q := range []string{
		`SELECT key_id, count(*) FROM devices GROUP BY key_id`,
		`SELECT key_id, count(*) FROM credentials GROUP BY key_id`,
		// Enrollment group keys are sealed with a server key (credential.Seal): without it no
		// group key opens, and the devices flashed with secrets derived from it never enrol.
		`SELECT seal_key_id, count(*) FROM enrollment_group_keys GROUP BY seal_key_id`,
	} {
		rows, err := s.h.QueryContext(ctx, q)
		if err != nil {
			return r, err
		}
		for rows.Next() {
			var id string
			var n int64
			if err := rows.Scan(&id, &n); err != nil {
				rows.Close()
				return r, err
			}
			if used[id] == nil {
				used[id] = &uses{}
			}
			switch i {
			case 0:
				used[id].devices = n
			case 1:
				used[id].credentials = n
			default:
				used[id].groupKeys = n
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return r, err
		}
	}
	// Certificate credentials are fingerprints, which no key made.
	var certs string
	if u := used[devreg.CertificateKeyID]; u != nil {
		certs = fmt.Sprintf("; %d certificate credential%s (fingerprints, no key)", u.devices+u.credentials, plural(u.devices+u.credentials, "s"))
		delete(used, devreg.CertificateKeyID)
	}
	ids := make([]string, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		r.Summary = "no secret hashes stored" + certs
		return r, nil
	}
	r.Summary = fmt.Sprintf("the hashes and sealed group keys use %d key(s), %s, looked up in %s%s", len(ids), strings.Join(ids, ", "), keyFile, certs)
	for _, id := range ids {
		if hasKey(id) {
			continue
		}
		u := used[id]
		if u.devices > 0 || u.credentials > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("key %s is not in %s, but %d device secrets and %d further credentials were hashed with it: "+
				"those devices cannot log in until the key file that holds it is put back", id, keyFile, u.devices, u.credentials))
		}
		if u.groupKeys > 0 {
			r.Problems = append(r.Problems, fmt.Sprintf("key %s is not in %s, but %d enrollment group keys were sealed with it: "+
				"those keys enrol no device until the key file that holds it is put back", id, keyFile, u.groupKeys))
		}
	}
	return r, nil
}

// plural returns suffix unless n is 1.
func plural(n int64, suffix string) string {
	if n == 1 {
		return ""
	}
	return suffix
}
