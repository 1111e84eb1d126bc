// Command bench measures devreg's bulk registration against a real server process and prints one
// line per figure: devices/s, seconds, the ratio to a baseline measured in the same run, and the
// server's peak resident memory. The baseline is the sqlite3 shell's .import of the same rows into
// a table keyed by account and device ID with two more indexes, as devreg's devices table was
// first laid out (it now has one more index). With -postgres (default
// $DEVREG_TEST_POSTGRES) it also registers the same file on PostgreSQL, next to a raw COPY of the
// same rows into such a table, each in a database of its own made for the run.
//
// With -backup-only it measures only devreg backup of a registry of n devices, alone and while
// registrations of 10,000 devices follow one another, and how much slower those are meanwhile.
//
//	go run ./internal/bench [-n 1000000] [-postgres URL] [-backup-only]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"devreg"
	"devreg/client"
	"devreg/credential"
)

func main() {
	n := flag.Int("n", 1_000_000, "devices per request")
	growthOnly := flag.Bool("growth-only", false, "measure only the growth of batch times")
	backupOnly := flag.Bool("backup-only", false, "measure only devreg backup of n devices, and how it slows registrations down")
	pg := flag.String("postgres", os.Getenv("DEVREG_TEST_POSTGRES"), "PostgreSQL server `URL` for the PostgreSQL figures; empty to skip them")
	flag.Parse()
	run := run
	if *backupOnly {
		run = func(n int, _ string, _ bool) error { return runBackupOnly(n) }
	}
	if err := run(*n, *pg, *growthOnly); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type figure struct {
	name    string
	devices int
	elapsed time.Duration
	base    time.Duration
	rssMB   float64
}

func (f figure) String() string {
	ratio, rss := "-", "-"
	if f.base > 0 {
		ratio = fmt.Sprintf("%.2f", f.elapsed.Seconds()/f.base.Seconds())
	}
	if f.rssMB > 0 {
		rss = fmt.Sprintf("%.0f", f.rssMB)
	}
	return fmt.Sprintf("%-28s %10.0f %8.2f %6s %12s", f.name, float64(f.devices)/f.elapsed.Seconds(), f.elapsed.Seconds(), ratio, rss)
}

// run measures every figure, or with onlyGrowth only the growth of batch times.
func run(n int, pgServer string, onlyGrowth bool) error {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		return fmt.Errorf("the baseline needs the sqlite3 shell: apt-get install -y sqlite3")
	}
	dir, err := os.MkdirTemp("", "devreg-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "devreg")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/devreg").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "generating %d devices...\n", n)
	csvA, err := writeFile(dir, "a.csv", n, "a", func(w io.Writer, id, secret string, last bool) { fmt.Fprintf(w, "%s, %s,\n", id, secret) })
	if err != nil {
		return err
	}
	csvB, err := writeFile(dir, "b.csv", n, "b", func(w io.Writer, id, secret string, last bool) { fmt.Fprintf(w, "%s, %s,\n", id, secret) })
	if err != nil {
		return err
	}
	jsonC, err := writeJSON(dir, "c.json", n, "c")
	if err != nil {
		return err
	}

	var base time.Duration
	if !onlyGrowth {
		if base, err = baseline(dir, n); err != nil {
			return err
		}
	}
	figures := []figure{{name: "baseline_sqlite3_import", devices: n, elapsed: base}}

	data := filepath.Join(dir, "data")
	acct := exec.Command(bin, "accounts", "create", "--name", "Bench", "--email", "bench@example.test", "--password-stdin", "--data", data)
	acct.Stdin = strings.NewReader("benchmark-password\n")
	out, err := acct.Output()
	if err != nil {
		return fmt.Errorf("accounts create: %v", err)
	}
	var account struct {
		AccountID string `json:"account_id"`
		APIKey    string `json:"api_key"`
	}
	json.Unmarshal(out, &account)
	ctx := context.Background()
	url, srv, err := serve(bin, "--data", data)
	if err != nil {
		return err
	}
	defer func() { srv.Process.Signal(syscall.SIGTERM); srv.Wait() }()
	c := client.New(url, account.APIKey)
	newType := func(name string) (string, error) {
		dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
		return dt.ID, err
	}
	t1, err := newType("bench csv")
	if err != nil {
		return err
	}
	t2, err := newType("bench json")
	if err != nil {
		return err
	}
	steps := []struct {
		name, typeID, file, contentType string
		opts                            client.RegisterOptions
		want                            func(created, unchanged int64) bool
	}{
		{"register_csv", t1, csvA, "text/csv", client.RegisterOptions{}, func(c, u int64) bool { return c == int64(n) }},
		{"resend_csv_unchanged", t1, csvA, "text/csv", client.RegisterOptions{}, func(c, u int64) bool { return u == int64(n) }},
		{"dry_run_csv_new", t1, csvB, "text/csv", client.RegisterOptions{DryRun: true}, func(c, u int64) bool { return c == int64(n) }},
		{"register_json", t2, jsonC, "application/json", client.RegisterOptions{}, func(c, u int64) bool { return c == int64(n) }},
	}
	if onlyGrowth {
		steps = nil
	}
	for _, s := range steps {
		resetPeakRSS(srv.Process.Pid)
		f, err := os.Open(s.file)
		if err != nil {
			return err
		}
		start := time.Now()
		var res struct{ Created, Unchanged int64 }
		if s.contentType == "text/csv" {
			r, err := c.RegisterCSV(ctx, s.typeID, f, s.opts)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Created, res.Unchanged = r.Created, r.Unchanged
		} else {
			r, err := registerJSON(url, account.APIKey, s.typeID, f)
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			res.Created, res.Unchanged = r.Created, r.Unchanged
		}
		elapsed := time.Since(start)
		f.Close()
		if !s.want(res.Created, res.Unchanged) {
			return fmt.Errorf("%s: unexpected result %+v", s.name, res)
		}
		figures = append(figures, figure{name: s.name, devices: n, elapsed: elapsed, base: base, rssMB: peakRSSMB(srv.Process.Pid)})
	}
	var rates []rateFigure
	var first, deep time.Duration
	if !onlyGrowth {
		brokerKey, err := c.CreateAPIKey(ctx, "bench broker", devreg.ScopeBroker)
		if err != nil {
			return err
		}
		if rates, err = tokenFigures(ctx, url, account.AccountID, deviceID("a", 0), firstSecret(csvA), brokerKey.Key, 20000); err != nil {
			return err
		}
		if first, err = pageTime(ctx, url, account.APIKey, t1, devreg.Cursor{}, 200); err != nil {
			return err
		}
		if deep, err = pageTime(ctx, url, account.APIKey, t1, devreg.Cursor{Seq: int64(n * 9 / 10)}, 200); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "registering 10 batches of %d shuffled IDs, %d times...\n", n/10, growthRuns)
	growth, err := growthFigures(ctx, c, 10, n/10)
	if err != nil {
		return err
	}
	if pgServer != "" && !onlyGrowth {
		pgFigures, err := postgresFigures(ctx, bin, dir, pgServer, csvA, n)
		if err != nil {
			return err
		}
		figures = append(figures, pgFigures...)
	}
	fmt.Printf("%-28s %10s %8s %6s %12s\n", "figure", "devices/s", "seconds", "ratio", "peak_rss_MB")
	for _, f := range figures {
		fmt.Println(f)
	}
	fmt.Printf("\n%-28s %10s %8s %6s\n", "figure", "requests/s", "seconds", "ratio")
	for _, f := range rates {
		fmt.Println(f)
	}
	fmt.Printf("\n%-28s %10s %6s\n", "figure", "ms", "ratio")
	fmt.Printf("%-28s %10.2f %6s\n", "list_first_page", ms(first), "-")
	fmt.Printf("%-28s %10.2f %6.2f\n", "list_page_at_90pct", ms(deep), deep.Seconds()/first.Seconds())
	for i, d := range growth {
		fmt.Printf("%-28s %10.0f %6.2f\n", fmt.Sprintf("growth_batch_%02d", i+1), ms(d), d.Seconds()/growth[0].Seconds())
	}
	return nil
}

func registerJSON(url, key, typeID string, body io.Reader) (struct{ Created, Unchanged int64 }, error) {
	var res struct{ Created, Unchanged int64 }
	req, _ := http.NewRequest("PUT", url+"/api/v1/devicetypes/"+typeID+"/device_ids", body)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return res, fmt.Errorf("HTTP %d: %s", resp.StatusCode, b[:min(len(b), 300)])
	}
	return res, json.Unmarshal(b, &res)
}

func writeFile(dir, name string, n int, prefix string, line func(w io.Writer, id, secret string, last bool)) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		line(w, deviceID(prefix, i), credential.RandomString(24), i == n-1)
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return path, f.Close()
}

func writeJSON(dir, name string, n int, prefix string) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	w.WriteString(`{"devices": [`)
	for i := range n {
		if i > 0 {
			w.WriteString(",\n")
		}
		fmt.Fprintf(w, `{"device_id": %q, "secret": %q}`, deviceID(prefix, i), credential.RandomString(24))
	}
	w.WriteString("]}\n")
	if err := w.Flush(); err != nil {
		return "", err
	}
	return path, f.Close()
}

// deviceID makes serial-number IDs in order, as a production line makes them.
func deviceID(prefix string, i int) string {
	return fmt.Sprintf("%s-%08d", prefix, i)
}

// baseline times the sqlite3 shell importing n rows of the shape devreg stores into a table with
// a primary key of account and device ID and indexes by type and by batch, as devreg's devices
// table was first laid out.
func baseline(dir string, n int) (time.Duration, error) {
	path := filepath.Join(dir, "baseline.csv")
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriter(f)
	hash := make([]byte, 32)
	for i := range n {
		copy(hash, credential.RandomString(32))
		fmt.Fprintf(w, "acc_bench,%s,dt_bench,bat_bench,enabled,k1,%s,%d\n", deviceID("a", i), hex.EncodeToString(hash), time.Now().UnixMicro())
	}
	w.Flush()
	f.Close()
	script := `PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE devices (account_id TEXT NOT NULL, device_id TEXT NOT NULL, device_type_id TEXT NOT NULL, batch_id TEXT NOT NULL,
  status TEXT NOT NULL, key_id TEXT NOT NULL, secret_hash BLOB NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, device_id)) WITHOUT ROWID;
CREATE INDEX devices_type ON devices (account_id, device_type_id, device_id);
CREATE INDEX devices_batch ON devices (account_id, batch_id, device_id);
.mode csv
.import ` + path + ` devices
SELECT count(*) FROM devices;
`
	start := time.Now()
	cmd := exec.Command("sqlite3", filepath.Join(dir, "baseline.db"))
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil || !bytes.Contains(out, []byte(strconv.Itoa(n))) {
		return 0, fmt.Errorf("sqlite3 .import: %v %s", err, out)
	}
	return elapsed, nil
}

func serve(bin string, args ...string) (string, *exec.Cmd, error) {
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`serving on (http://\S+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, stderr)
			return m[1], cmd, nil
		}
	}
	return "", nil, fmt.Errorf("devreg serve did not start")
}

// resetPeakRSS resets the kernel's record of the process's peak resident memory.
func resetPeakRSS(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func peakRSSMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// firstSecret returns the secret of the first device of a bulk file written by writeFile.
func firstSecret(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	parts := strings.Split(line, ",")
	if len(parts) < 2 {
		return ""
	}
	return strings.TrimSpace(parts[1])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
