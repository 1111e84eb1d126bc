package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"devreg/client"
	"devreg/credential"
)

// postgresRuns is how many times the PostgreSQL figures are measured; each is the median of its
// runs, as the server's speed on a shared machine varies by a third from one minute to the next.
const postgresRuns = 3

// postgresFigures registers the file at csvPath through a server on a fresh PostgreSQL database
// and compares it with a raw COPY of n rows of devreg's shape into an indexed table, each the
// median of postgresRuns runs.
func postgresFigures(ctx context.Context, bin, dir, server, csvPath string, n int) ([]figure, error) {
	admin, err := sql.Open("pgx", server)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	var bases, times []time.Duration
	var rss float64
	for r := range postgresRuns {
		base, elapsed, runRSS, err := postgresRun(ctx, admin, bin, filepath.Join(dir, fmt.Sprintf("pgdata%d", r)), server, csvPath, n)
		if err != nil {
			return nil, err
		}
		bases, times, rss = append(bases, base), append(times, elapsed), max(rss, runRSS)
	}
	return []figure{
		{name: "pg_baseline_copy", devices: n, elapsed: median(bases)},
		{name: "pg_register_csv", devices: n, elapsed: median(times), base: median(bases), rssMB: rss},
	}, nil
}

// postgresRun times a raw COPY into a fresh database and the registration of the file at csvPath
// through a server on another, and returns both times and the server's peak resident memory.
func postgresRun(ctx context.Context, admin *sql.DB, bin, data, server, csvPath string, n int) (base, elapsed time.Duration, rssMB float64, err error) {
	newDB := func() (string, func(), error) {
		name := "devreg_bench_" + strings.ToLower(credential.RandomString(10))
		if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
			return "", nil, fmt.Errorf("create database on %s: %w", server, err)
		}
		u, _ := url.Parse(server)
		u.Path = "/" + name
		return u.String(), func() { admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") }, nil
	}

	baseURL, dropBase, err := newDB()
	if err != nil {
		return 0, 0, 0, err
	}
	defer dropBase()
	if base, err = copyBaseline(ctx, baseURL, n); err != nil {
		return 0, 0, 0, err
	}

	dbURL, dropDB, err := newDB()
	if err != nil {
		return 0, 0, 0, err
	}
	defer dropDB()
	acct := exec.Command(bin, "accounts", "create", "--name", "Bench", "--email", "bench@example.test", "--password-stdin", "--data", data, "--database", dbURL)
	acct.Stdin = strings.NewReader("benchmark-password\n")
	out, err := acct.Output()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("accounts create on PostgreSQL: %v", err)
	}
	var account struct {
		APIKey string `json:"api_key"`
	}
	json.Unmarshal(out, &account)
	srvURL, srv, err := serve(bin, "--data", data, "--database", dbURL)
	if err != nil {
		return 0, 0, 0, err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	c := client.New(srvURL, account.APIKey)
	name := "bench csv"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		return 0, 0, 0, err
	}
	f, err := os.Open(csvPath)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	resetPeakRSS(srv.Process.Pid)
	start := time.Now()
	res, err := c.RegisterCSV(ctx, dt.ID, f, client.RegisterOptions{})
	elapsed = time.Since(start)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("pg register_csv: %w", err)
	}
	if res.Created != int64(n) {
		return 0, 0, 0, fmt.Errorf("pg register_csv: unexpected result %+v", res)
	}
	return base, elapsed, peakRSSMB(srv.Process.Pid), nil
}

// copyBaseline times a COPY of n rows of devreg's shape into a table keyed by account and device
// ID with indexes by type and by batch, as devreg's devices table was first laid out (it now has
// one more index).
func copyBaseline(ctx context.Context, dbURL string, n int) (time.Duration, error) {
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE devices (account_id TEXT NOT NULL, device_id TEXT COLLATE "C" NOT NULL,
		device_type_id TEXT NOT NULL, batch_id TEXT NOT NULL, status TEXT NOT NULL, key_id TEXT NOT NULL,
		secret_hash BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (account_id, device_id));
		CREATE INDEX devices_type ON devices (account_id, device_type_id, device_id);
		CREATE INDEX devices_batch ON devices (account_id, batch_id, device_id);`); err != nil {
		return 0, err
	}
	rows := make([][]any, n)
	now := time.Now().UnixMicro()
	for i := range rows {
		rows[i] = []any{"acc_bench", deviceID("a", i), "dt_bench", "bat_bench", "enabled", "k1", []byte(credential.RandomString(32)), now}
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	err = conn.Raw(func(dc any) error {
		_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"},
			[]string{"account_id", "device_id", "device_type_id", "batch_id", "status", "key_id", "secret_hash", "created_at"}, pgx.CopyFromRows(rows))
		return err
	})
	return time.Since(start), err
}
