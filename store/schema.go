package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"devreg/credential"
)

// A database is devreg's only if it holds exactly the objects devreg's migrations made: a trigger,
// view or index added to a file is code that runs inside every devreg that opens it (a trigger
// that zeroes the login throttle's counts, one that puts deleted API keys back), and neither the
// integrity check nor the row counts see it. The expected schema is not listed by hand: it is
// what the embedded migrations up to the database's version make in a scratch database, so it
// follows every migration added. A migration, once released, must therefore never change, not
// even a comment inside a CREATE TABLE: SQLite keeps the statement's text as it was written.

// schemaObject is one object of a database's schema, as its catalog describes it.
type schemaObject struct {
	Type  string // "table", "index", "trigger", "view", ...
	Table string // the table an index, trigger, constraint, rule or policy belongs to; "" for others
	Name  string
	Def   string // its definition: the SQL SQLite keeps, or PostgreSQL's description of it
}

func (o schemaObject) key() string { return o.Type + "\x00" + o.Table + "\x00" + o.Name }

// String names the object the way a report does: `trigger "t" on table failures`.
func (o schemaObject) String() string {
	s := fmt.Sprintf("%s %q", o.Type, o.Name)
	if o.Table != "" {
		s += " on table " + o.Table
	}
	return s
}

// querier runs a query on a database, connection or transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// compareSchema returns, for each object of have that want lacks, each of want that have lacks,
// and each whose definition differs, a sentence naming it. Objects of tolerated may be in have
// or not, as long as they are as tolerated has them.
func compareSchema(have, want, tolerated []schemaObject, version int) []string {
	index := func(objs []schemaObject) map[string]schemaObject {
		m := make(map[string]schemaObject, len(objs))
		for _, o := range objs {
			m[o.key()] = o
		}
		return m
	}
	h, w, t := index(have), index(want), index(tolerated)
	keys := make([]string, 0, len(h)+len(w))
	for k := range h {
		keys = append(keys, k)
	}
	for k := range w {
		if _, ok := h[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var problems []string
	for _, k := range keys {
		got, inHave := h[k]
		exp, inWant := w[k]
		if !inWant {
			exp, inWant = t[k]
			if !inWant {
				problems = append(problems, fmt.Sprintf("%s is not part of devreg's schema (version %d)", got, version))
				continue
			}
		}
		switch {
		case !inHave:
			problems = append(problems, fmt.Sprintf("%s is missing: devreg's schema (version %d) has it", exp, version))
		case got.Def != exp.Def:
			problems = append(problems, fmt.Sprintf("%s differs from devreg's schema (version %d): %s", got, version, firstDifference(got.Def, exp.Def)))
		}
	}
	return problems
}

// firstDifference shows where two definitions part: a little of each around the first character
// that differs, with runs of white space shown as one space.
func firstDifference(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	around := func(s string) string {
		from, to := max(0, i-40), min(len(s), i+40)
		out := strings.Join(strings.Fields(s[from:to]), " ")
		if from > 0 {
			out = "…" + out
		}
		if to < len(s) {
			out += "…"
		}
		return strconv.Quote(out)
	}
	return "it has " + around(got) + " where devreg's has " + around(want)
}

// checkMigrationRows checks that schema_migrations lists exactly the embedded migrations up to
// version: with one missing, devreg would run it again over a schema that has it already.
func checkMigrationRows(ctx context.Context, q querier, dir string, version int) ([]string, error) {
	files, err := migrationFiles(dir)
	if err != nil {
		return nil, err
	}
	var want []int
	for _, m := range files {
		if m.version <= version {
			want = append(want, m.version)
		}
	}
	have, err := column[int](ctx, q, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	if slices.Equal(have, want) {
		return nil, nil
	}
	return []string{fmt.Sprintf("schema_migrations lists the versions %s, but devreg's migrations up to version %d are %s",
		joinInts(have), version, joinInts(want))}, nil
}

func joinInts(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// SQLite.

// readSQLiteSchema reads the objects of an SQLite database's schema: the rows of sqlite_schema,
// whose sql column is the statement that made each object, kept by SQLite as it was written
// (ALTER TABLE edits it the same way each time).
func readSQLiteSchema(ctx context.Context, q querier) ([]schemaObject, error) {
	rows, err := q.QueryContext(ctx, `SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema`)
	if err != nil {
		return nil, fmt.Errorf("read the schema: %w", err)
	}
	defer rows.Close()
	var objs []schemaObject
	for rows.Next() {
		var o schemaObject
		if err := rows.Scan(&o.Type, &o.Name, &o.Table, &o.Def); err != nil {
			return nil, err
		}
		if o.Type == "table" || o.Type == "view" {
			o.Table = "" // its own name
		}
		objs = append(objs, o)
	}
	return objs, rows.Err()
}

// expectedSQLiteSchema returns the schema that devreg's SQLite migrations up to version make, in
// a database in memory, and the tables SQLite adds by itself that a database may also have: the
// statistics tables of ANALYZE (which the sqlite3 shell or PRAGMA optimize may have run), as this
// SQLite makes them.
func expectedSQLiteSchema(ctx context.Context, version int) (want, tolerated []schemaObject, err error) {
	files, err := migrationFiles(sqliteMigrations)
	if err != nil {
		return nil, nil, err
	}
	db, err := sql.Open("sqlite", "file:expected?mode=memory")
	if err != nil {
		return nil, nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // each connection has a database in memory of its own
	if _, err := db.ExecContext(ctx, schemaMigrationsTable); err != nil {
		return nil, nil, err
	}
	for _, m := range files {
		if m.version > version {
			break
		}
		if _, err := db.ExecContext(ctx, m.body); err != nil {
			return nil, nil, fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	if want, err = readSQLiteSchema(ctx, db); err != nil {
		return nil, nil, err
	}
	if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
		return nil, nil, err
	}
	after, err := readSQLiteSchema(ctx, db)
	if err != nil {
		return nil, nil, err
	}
	for _, o := range after {
		if strings.HasPrefix(o.Name, "sqlite_stat") {
			tolerated = append(tolerated, o)
		}
	}
	return want, tolerated, nil
}

// sqliteSchemaProblems compares the schema of an SQLite database at version with devreg's.
func sqliteSchemaProblems(ctx context.Context, q querier, version int) ([]string, error) {
	problems, err := checkMigrationRows(ctx, q, sqliteMigrations, version)
	if err != nil {
		return nil, err
	}
	have, err := readSQLiteSchema(ctx, q)
	if err != nil {
		return nil, err
	}
	want, tolerated, err := expectedSQLiteSchema(ctx, version)
	if err != nil {
		return nil, fmt.Errorf("make devreg's schema (version %d) to compare with: %w", version, err)
	}
	return append(problems, compareSchema(have, want, tolerated, version)...), nil
}

// PostgreSQL.

// pgSchemaQueries describe the objects of one schema ($1) of a PostgreSQL database: what
// devreg's migrations make (tables with their columns, sequences, indexes, constraints) and what
// could run code or change what a query sees (triggers, rules, views, policies, functions,
// operators, types, tables inheriting from devreg's). PostgreSQL writes the definitions
// (pg_get_indexdef and the like) the same way for the same object. NOT NULL shows in the
// column, not as a constraint: PostgreSQL 18 names those constraints, older releases do not.
var pgSchemaQueries = []string{
	`SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'f' THEN 'foreign table'
			WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' WHEN 'c' THEN 'composite type'
			ELSE 'relation' END, '', c.relname,
		concat_ws(E'\n',
			(SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod))
				|| coalesce((SELECT ' COLLATE ' || quote_ident(co.collname) FROM pg_collation co JOIN pg_type ty ON ty.oid = a.atttypid
					WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation), '')
				|| CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
				|| coalesce((SELECT CASE WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED'
					ELSE ' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid) END
					FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum), '')
				|| CASE a.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END,
				', ' ORDER BY a.attnum)
				FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
			CASE c.relpersistence WHEN 'u' THEN 'UNLOGGED' WHEN 't' THEN 'TEMPORARY' END,
			CASE WHEN c.relrowsecurity OR c.relforcerowsecurity THEN 'ROW LEVEL SECURITY' END,
			'WITH ' || c.reloptions::text,
			(SELECT 'INHERITS ' || string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid),
			(SELECT 'INHERITED BY ' || string_agg(i.inhrelid::regclass::text, ', ' ORDER BY i.inhrelid::regclass::text) FROM pg_inherits i WHERE i.inhparent = c.oid),
			CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
			(SELECT format('%s start %s increment %s minimum %s maximum %s cache %s%s', format_type(s.seqtypid, NULL), s.seqstart,
				s.seqincrement, s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END)
				FROM pg_sequence s WHERE s.seqrelid = c.oid))
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = $1 AND c.relkind NOT IN ('i', 'I', 't')`,

	`SELECT 'index', t.relname, i.relname, pg_get_indexdef(i.oid)
	FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
		JOIN pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname = $1`,

	`SELECT 'constraint', t.relname, co.conname, pg_get_constraintdef(co.oid)
	FROM pg_constraint co JOIN pg_class t ON t.oid = co.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname = $1 AND co.contype <> 'n'`,

	`SELECT 'trigger', t.relname, tg.tgname, pg_get_triggerdef(tg.oid) || ' (enabled: ' || tg.tgenabled::text || ')'
	FROM pg_trigger tg JOIN pg_class t ON t.oid = tg.tgrelid JOIN pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname = $1 AND NOT tg.tgisinternal`,

	`SELECT 'rule', t.relname, r.rulename, pg_get_ruledef(r.oid)
	FROM pg_rewrite r JOIN pg_class t ON t.oid = r.ev_class JOIN pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname = $1 AND r.rulename <> '_RETURN'`,

	`SELECT 'policy', t.relname, p.polname, concat_ws(' ', p.polcmd::text, p.polpermissive, p.polroles::text,
		pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
	FROM pg_policy p JOIN pg_class t ON t.oid = p.polrelid JOIN pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname = $1`,

	`SELECT CASE p.prokind WHEN 'a' THEN 'aggregate' WHEN 'p' THEN 'procedure' WHEN 'w' THEN 'window function' ELSE 'function' END,
		'', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
		CASE WHEN p.prokind = 'a' THEN '' ELSE pg_get_functiondef(p.oid) END
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	WHERE n.nspname = $1`,

	`SELECT 'operator', '', o.oprname || '(' || format_type(o.oprleft, NULL) || ', ' || format_type(o.oprright, NULL) || ')',
		o.oprcode::regproc::text
	FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
	WHERE n.nspname = $1`,

	`SELECT 'type', '', t.typname, t.typtype::text || ' ' || format_type(t.oid, NULL)
	FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	WHERE n.nspname = $1 AND t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)`,
}

// readPGSchema reads the objects of the schema named schema. Definitions name the schema's own
// objects without it, so that two schemas made alike read alike.
func readPGSchema(ctx context.Context, q pgQuerier, schema string) ([]schemaObject, error) {
	var quoted string // as PostgreSQL writes it in definitions: in double quotes when it must be
	if err := q.QueryRowContext(ctx, `SELECT quote_ident($1)`, schema).Scan(&quoted); err != nil {
		return nil, err
	}
	var objs []schemaObject
	for _, query := range pgSchemaQueries {
		rows, err := q.QueryContext(ctx, query, schema)
		if err != nil {
			return nil, fmt.Errorf("read the schema: %w", err)
		}
		for rows.Next() {
			var o schemaObject
			var def sql.NullString
			if err := rows.Scan(&o.Type, &o.Table, &o.Name, &def); err != nil {
				rows.Close()
				return nil, err
			}
			o.Def = unqualify(def.String, quoted)
			objs = append(objs, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// unqualify removes the schema's name (quoted as PostgreSQL quotes it) where it qualifies a name
// in def ("public.devices").
func unqualify(def, schema string) string {
	prefix := schema + "."
	var b strings.Builder
	for {
		i := strings.Index(def, prefix)
		if i < 0 {
			b.WriteString(def)
			return b.String()
		}
		b.WriteString(def[:i])
		if i > 0 && (isIdentChar(rune(def[i-1])) || def[i-1] == '"') { // the end of a longer name
			b.WriteString(prefix)
		}
		def = def[i+len(prefix):]
	}
}

func isIdentChar(r rune) bool {
	return r == '_' || r == '$' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r >= 0x80
}

// searchPathProblems reports a search path through which objects outside devreg's schema (live)
// take part in devreg's queries, which the comparison of that schema does not see. PostgreSQL
// looks up unqualified functions and operators along the path, pg_catalog first unless the path
// puts it later: a schema ahead of it can put an = of its own in the place of PostgreSQL's (one
// that is always true lets any API key in), and any schema on the path can add an overload that
// matches better. ALTER DATABASE or ALTER ROLE ... SET search_path sets it for every connection.
func searchPathProblems(ctx context.Context, q querier, live string) ([]string, error) {
	path, err := column[string](ctx, q, `SELECT s FROM unnest(current_schemas(true)) WITH ORDINALITY AS p(s, i) ORDER BY i`)
	if err != nil {
		return nil, fmt.Errorf("read the search path: %w", err)
	}
	// A session's own temporary schema holds its temporary tables, never functions it looks up.
	path = slices.DeleteFunc(path, func(s string) bool { return strings.HasPrefix(s, "pg_temp") })
	others := slices.ContainsFunc(path, func(s string) bool { return s != live && s != "pg_catalog" })
	if len(path) > 0 && path[0] == "pg_catalog" && !others {
		return nil, nil
	}
	return []string{fmt.Sprintf("the search path is %s, but devreg's queries need pg_catalog first and no schema but devreg's own (%s): "+
		"functions and operators of the others take part in them (an = that is always true lets any API key in); "+
		"set it to devreg's schema alone (ALTER ROLE ... SET search_path = %s, or search_path in the database URL), "+
		"and look in pg_db_role_setting for who set it", strings.Join(path, ", "), live, live)}, nil
}

// pgQuerier runs queries in a PostgreSQL transaction.
type pgQuerier interface {
	querier
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// pgSchemaProblems compares the schema of the PostgreSQL database's devreg schema (the first of
// its search path) at version with devreg's. The expected one is made in a scratch schema inside
// a transaction that is rolled back, so nothing is ever written; that needs the privilege to
// create a schema in the database, which its owner has.
func (s *DB) pgSchemaProblems(ctx context.Context, version int) ([]string, error) {
	files, err := migrationFiles(postgresMigrations)
	if err != nil {
		return nil, err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var live string
	if err := tx.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&live); err != nil {
		return nil, err
	}
	problems, err := checkMigrationRows(ctx, tx, postgresMigrations, version)
	if err != nil {
		return nil, err
	}
	path, err := searchPathProblems(ctx, tx, live)
	if err != nil {
		return nil, err
	}
	problems = append(problems, path...)
	have, err := readPGSchema(ctx, tx, live)
	if err != nil {
		return nil, err
	}
	// An event trigger runs its function on DDL anywhere in the database, the scratch schema's
	// too; devreg makes none (only a superuser can).
	events, err := tx.QueryContext(ctx, `SELECT evtname, evtevent FROM pg_event_trigger ORDER BY evtname`)
	if err != nil {
		return nil, err
	}
	found := 0
	for events.Next() {
		found++
		var name, event string
		if err := events.Scan(&name, &event); err != nil {
			events.Close()
			return nil, err
		}
		problems = append(problems, fmt.Sprintf("event trigger %q (on %s) is not part of devreg's schema (version %d)", name, event, version))
	}
	events.Close()
	if err := events.Err(); err != nil {
		return nil, err
	}
	if found > 0 {
		return append(problems, "the rest of the schema was not compared: that would run DDL, which runs the event triggers' code"), nil
	}

	scratch := "devreg_expected_" + strings.ToLower(credential.RandomString(12))
	if _, err := tx.ExecContext(ctx, `CREATE SCHEMA `+scratch); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42501" {
			return append(problems, fmt.Sprintf("the schema was not compared with devreg's: that makes devreg's schema in a scratch schema, "+
				"in a transaction it rolls back, and this database user may not create a schema (%s): run devreg check as the database's owner", pe.Message)), nil
		}
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `SET LOCAL search_path TO `+scratch); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, schemaMigrationsTable); err != nil {
		return nil, err
	}
	for _, m := range files {
		if m.version > version {
			break
		}
		if _, err := tx.ExecContext(ctx, m.body); err != nil {
			return nil, fmt.Errorf("make devreg's schema (version %d) to compare with: migration %s: %w", version, m.name, err)
		}
	}
	want, err := readPGSchema(ctx, tx, scratch)
	if err != nil {
		return nil, err
	}
	return append(problems, compareSchema(have, want, nil, version)...), nil
}
