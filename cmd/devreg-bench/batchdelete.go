package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// runBatchDelete measures the undo of a lot (issue 25: "a million devices within 2× the time
// their registration took"): through one real server on SQLite and, with -postgres, one on
// PostgreSQL, each run registers two lots of n devices (CSV, one request each) into a device
// type of its own, deletes the first through DELETE /api/v1/batches/{id}, and then deletes the
// second by the raw tool: the sqlite3 shell (on the server's own database file, which SQLite's
// log lets a second process write while the server is idle) or psql, one statement,
// DELETE FROM devices WHERE account_num = (the account's) AND batch_id = …, along the same index devreg's
// delete walks (devices_batch). That statement is the physical limit of the rows alone; devreg
// also deletes the devices' further credentials, records each ID against re-enrollment, and
// moves the counters and the audit log, all in the same transaction. It prints the medians and
// the ratio delete/registration, taken within each run. -bin measures another devreg binary.
func runBatchDelete(cfg config, bin string) error {
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx := context.Background()
	return b.onEachDatabase(ctx, func(db string, args ...string) error {
		return b.batchDeleteRuns(ctx, db, args...)
	})
}

// batchDeleteRuns measures and prints, on one server started with args, b.runs registrations and
// deletions of a lot, and the raw tool's deletion of a second lot in each run.
func (b *bench) batchDeleteRuns(ctx context.Context, db string, args ...string) error {
	srv, err := b.startServer(ctx, "batch-delete-"+db, args...)
	if err != nil {
		return err
	}
	defer srv.stop()
	raw := func(batchID string) (float64, string, error) {
		return sqliteDeleteLot(filepath.Join(srv.data, "devreg.db"), srv.accountID, batchID)
	}
	if len(args) == 2 && args[0] == "--database" {
		raw = func(batchID string) (float64, string, error) { return psqlDeleteLot(args[1], srv.accountID, batchID) }
	}
	var registered, deleted, baseline []measure
	var tool string
	for run := range b.runs {
		name := fmt.Sprintf("lot%d", run)
		typeID, err := srv.newType(ctx, name)
		if err != nil {
			return err
		}
		var lots [2]string
		for i := range lots {
			path := filepath.Join(b.dir, fmt.Sprintf("%s-%d.csv", name, i))
			if err := writeLotFile(path, fmt.Sprintf("%s-%d", name, i), b.n); err != nil {
				return err
			}
			m, err := srv.register(ctx, name, typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool {
				lots[i] = r.BatchID
				return r.Created == int64(b.n) && r.BatchID != ""
			})
			os.Remove(path)
			if err != nil {
				return err
			}
			if i == 0 {
				registered = append(registered, m)
			}
		}
		m, err := srv.deleteBatch(ctx, lots[0], b.n)
		if err != nil {
			return err
		}
		m.ratio = m.value / registered[run].value
		deleted = append(deleted, m)
		settle(srv.cmd.Process.Pid)
		secs, t, err := raw(lots[1])
		if err != nil {
			return err
		}
		tool = t
		baseline = append(baseline, measure{value: secs, ratio: m.value / secs})
		if *batchDeleteEach {
			fmt.Printf("  %s run %d: register %.2f s, delete %.2f s (server CPU %.2f s), raw DELETE %.2f s\n", db, run+1, registered[run].value, m.value, m.cpu, secs)
		}
	}
	wall := func(m measure) float64 { return m.value }
	cpu := func(m measure) float64 { return m.cpu }
	ratio := func(m measure) float64 { return m.ratio }
	reg, del, base := medianBy(registered, wall), medianBy(deleted, wall), medianBy(baseline, wall)
	fmt.Printf("devreg-bench batch-delete: one lot of %d devices, one %s server, %d runs (median)\n", b.n, db, b.runs)
	fmt.Printf("  register the lot (CSV, one request): %7.2f s  (%.0f devices/s), server CPU %.2f s\n", reg, float64(b.n)/reg, medianBy(registered, cpu))
	fmt.Printf("  delete the lot (DELETE /api/v1/batches/{id}): %7.2f s  (%.0f devices/s), server CPU %.2f s\n", del, float64(b.n)/del, medianBy(deleted, cpu))
	fmt.Printf("  ratio delete/register: %.2f (issue 25: at most 2)\n", medianBy(deleted, ratio))
	fmt.Printf("  baseline, %s DELETE FROM devices of another lot of %d: %.2f s; devreg's delete/baseline %.2f\n", tool, b.n, base, medianBy(baseline, ratio))
	return nil
}

var batchDeleteEach = flag.Bool("batch-delete-runs", false, "with batch-delete: print each run's figures too")

// writeLotFile writes a CSV registration body of n devices with IDs that follow each other, as a
// factory's lot has them, and random secrets.
func writeLotFile(path, prefix string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	raw := make([]byte, 16)
	for i := range n {
		rand.Read(raw)
		fmt.Fprintf(w, "%s-%08d,%s\n", prefix, i, hex.EncodeToString(raw))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// deleteBatch deletes a batch through the API once the server is idle, and returns the time and
// the server's CPU time meanwhile; the answer must count n devices.
func (s *server) deleteBatch(ctx context.Context, batchID string, n int) (measure, error) {
	pid := s.cmd.Process.Pid
	settle(pid)
	req, err := http.NewRequestWithContext(ctx, "DELETE", s.url+"/api/v1/batches/"+url.PathEscape(batchID), nil)
	if err != nil {
		return measure{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	resetPeakRSS(pid)
	cpu := cpuSeconds(pid)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return measure{}, fmt.Errorf("delete batch %s: %w", batchID, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := measure{value: time.Since(start).Seconds(), cpu: cpuSeconds(pid) - cpu, rssMB: peakRSSMB(pid)}
	var out struct {
		Deleted int `json:"deleted"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.Deleted != n {
		return m, fmt.Errorf("delete batch %s: HTTP %d %s, want 200 with %d deleted", batchID, resp.StatusCode, body[:min(len(body), 300)], n)
	}
	return m, nil
}

// sqliteDeleteLot deletes a lot's rows from the devices table of the database at file by the
// sqlite3 shell, with the settings devreg's connections use, and returns the statement's time
// as the shell's timer reports it.
func sqliteDeleteLot(file, accountID, batchID string) (float64, string, error) {
	script := fmt.Sprintf(`PRAGMA busy_timeout=10000;
PRAGMA synchronous=NORMAL;
PRAGMA cache_size=-16384;
.timer on
DELETE FROM devices WHERE account_num = (SELECT num FROM accounts WHERE id = '%s') AND batch_id = '%s';
`, accountID, batchID)
	cmd := exec.Command("sqlite3", file)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("sqlite3 DELETE: %v %s", err, out)
	}
	m := regexp.MustCompile(`Run Time: real ([0-9.]+)`).FindAllStringSubmatch(string(out), -1)
	if len(m) == 0 {
		return 0, "", fmt.Errorf("sqlite3 printed no time: %s", out)
	}
	secs, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	return secs, "sqlite3 " + sqliteVersion(), err
}

// psqlDeleteLot deletes a lot's rows from the devices table by psql, in its own transaction, and
// returns the statement's time as psql's \timing reports it.
func psqlDeleteLot(dbURL, accountID, batchID string) (float64, string, error) {
	cmd := exec.Command("psql", dbURL, "-X", "-v", "ON_ERROR_STOP=1", "-c", `\timing on`,
		"-c", fmt.Sprintf("DELETE FROM devices WHERE account_num = (SELECT num FROM accounts WHERE id = '%s') AND batch_id = '%s'", accountID, batchID))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, "", fmt.Errorf("psql DELETE: %v %s", err, out)
	}
	m := regexp.MustCompile(`Time: ([0-9.]+) ms`).FindStringSubmatch(string(out))
	if m == nil {
		return 0, "", fmt.Errorf("psql printed no time: %s", out)
	}
	ms, err := strconv.ParseFloat(m[1], 64)
	return ms / 1000, "psql", err
}
