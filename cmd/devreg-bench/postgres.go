package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// smallestPostgres is the smallest table that still enforces devreg's rule, as smallestSQLite,
// with device IDs compared byte by byte as devreg's are.
const smallestPostgres = `CREATE TABLE devices (account_num BIGINT NOT NULL, device_id TEXT COLLATE "C" NOT NULL,
	hash BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (account_num, device_id))`

// oldPostgres is devreg's first table layout, the PostgreSQL baseline before issue 17.
const oldPostgres = `CREATE TABLE devices (account_id TEXT NOT NULL, device_id TEXT COLLATE "C" NOT NULL,
	device_type_id TEXT NOT NULL, batch_id TEXT NOT NULL, status TEXT NOT NULL, key_id TEXT NOT NULL,
	secret_hash BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (account_id, device_id));
	CREATE INDEX devices_type ON devices (account_id, device_type_id, device_id);
	CREATE INDEX devices_batch ON devices (account_id, batch_id, device_id)`

// newPGDatabase creates a database of its own on the PostgreSQL server and returns its URL and
// what drops it.
func (b *bench) newPGDatabase(ctx context.Context) (string, func(), error) {
	u, err := url.Parse(b.pg)
	if err != nil {
		return "", nil, err
	}
	admin, err := sql.Open("pgx", b.pg)
	if err != nil {
		return "", nil, err
	}
	name := "devreg_bench_" + strings.ToLower(randText(rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), 10))
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database on %s: %w", b.pg, err)
	}
	u.Path = "/" + name
	return u.String(), func() {
		admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	}, nil
}

// postgresRun measures, each on a database of its own made for it, a COPY of the sorted set and
// one of the shuffled set into the smallest table, and the CSV request of the sorted set through
// a server, against the sorted COPY. Every step begins after a CHECKPOINT, so that none pays for
// writing out what the one before left in the buffers.
func (b *bench) postgresRun(ctx context.Context, run int) error {
	admin, err := sql.Open("pgx", b.pg)
	if err != nil {
		return err
	}
	defer admin.Close()
	newDB := func() (string, func(), error) { return b.newPGDatabase(ctx) }
	checkpoint := func() error {
		_, err := admin.ExecContext(ctx, "CHECKPOINT")
		return err
	}
	created := time.Now().UnixMicro()
	smallest := func(ids []string) [][]any {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		rows := make([][]any, len(ids))
		for i, id := range ids {
			rows[i] = []any{int64(1), id, []byte(randText(rng, 32)), created}
		}
		return rows
	}
	copyRows := func(ddl string, columns []string, rows [][]any) (time.Duration, error) {
		dbURL, drop, err := newDB()
		if err != nil {
			return 0, err
		}
		defer drop()
		return copyInto(ctx, dbURL, ddl, columns, rows, checkpoint)
	}
	columns := []string{"account_num", "device_id", "hash", "created_at"}
	sorted, err := copyRows(smallestPostgres, columns, smallest(b.idsA))
	if err != nil {
		return err
	}
	b.res.add("pg_copy_sorted", "", measure{value: sorted.Seconds()})
	shuffled, err := copyRows(smallestPostgres, columns, smallest(b.idsD))
	if err != nil {
		return err
	}
	b.res.add("pg_copy_shuffled", "", measure{value: shuffled.Seconds()})
	var old time.Duration
	if b.oldBaselines {
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		rows := make([][]any, b.n)
		for i, id := range b.idsA {
			rows[i] = []any{"acc_bench", id, "dt_bench", "bat_bench", "enabled", "k1", []byte(randText(rng, 32)), created}
		}
		if old, err = copyRows(oldPostgres, []string{"account_id", "device_id", "device_type_id", "batch_id", "status", "key_id", "secret_hash", "created_at"}, rows); err != nil {
			return err
		}
		b.res.add("old_pg_copy", "", measure{value: old.Seconds()})
	}

	dbURL, drop, err := newDB()
	if err != nil {
		return err
	}
	defer drop()
	srv, err := b.startServer(ctx, fmt.Sprintf("run%d-pg", run+1), "--database", dbURL)
	if err != nil {
		return err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench csv")
	if err != nil {
		return err
	}
	if err := checkpoint(); err != nil {
		return err
	}
	m, err := srv.register(ctx, "pg_register_csv", typeID, b.files.csvA, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(b.n) })
	if err != nil {
		return err
	}
	b.res.add("pg_register_csv", "pg_copy_sorted", m.against(sorted))
	if old > 0 {
		b.res.add("pg_register_csv_vs_old", "old_pg_copy", m.against(old))
	}
	return nil
}

// copyInto creates a table with ddl on the database at dbURL and times a COPY of rows into it,
// after calling before.
func copyInto(ctx context.Context, dbURL, ddl string, columns []string, rows [][]any, before func() error) (time.Duration, error) {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return 0, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := before(); err != nil {
		return 0, err
	}
	start := time.Now()
	err = conn.Raw(func(dc any) error {
		n, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"}, columns, pgx.CopyFromRows(rows))
		if err == nil && n != int64(len(rows)) {
			err = fmt.Errorf("COPY wrote %d rows of %d", n, len(rows))
		}
		return err
	})
	return time.Since(start), err
}

// postgresVersion is the version of the PostgreSQL server at serverURL.
func postgresVersion(ctx context.Context, serverURL string) string {
	db, err := sql.Open("pgx", serverURL)
	if err != nil {
		return "?"
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version").Scan(&v); err != nil {
		return "?"
	}
	if f := strings.Fields(v); len(f) > 0 {
		return f[0]
	}
	return v
}
