// Command devreg-bench measures devreg against the physical limit of the same work, through the real
// binary serving on loopback, and prints every figure as the median of several runs with its
// spread (least and greatest). Each ratio is taken within one run, against a baseline measured in
// that run, before the median is taken.
//
// The baselines write the same rows as the request (the device IDs in the request's order, one
// sorted set and one shuffled set) into the smallest table that still enforces devreg's rule: an
// account number, the device ID, the secret's hash and the time created, with one unique index
// on account number and device ID. On SQLite that is the sqlite3 shell's .import, with the page
// cache and log settings devreg's writer uses; on PostgreSQL a COPY. What is measured against
// them:
//
//   - a million devices as one CSV request, again (all unchanged), as a dry run of new IDs, as
//     JSON, and as CSV with shuffled IDs, with the server's CPU time and peak resident memory;
//   - the CSV request's time by stage, from requests that stop after each stage;
//   - device token issues per second (and broker logins) against the same server's /healthz,
//     with wrk (or, without it, a Go load generator) and 32 connections;
//   - a page of 100 devices 90% of the way down the listing against the first page;
//   - ten batches of a tenth as many UUID-like device IDs into an empty registry, each against
//     the first, next to the same growth of the baseline;
//   - with -postgres (default $DEVREG_TEST_POSTGRES), the CSV request on PostgreSQL.
//
// At n=1,000,000 the default three runs took about 5 minutes (4m57s and 5m8s) on 2 cores with PostgreSQL (the report's first
// line says how long it took).
//
// That is the command registration, the default; the other commands measure other figures, one
// each (see commands, or devreg-bench -h): tokens the request rates alone, backup devreg backup,
// big ten batches of n on PostgreSQL, broker-load two servers' broker logins, and so on.
//
//	go run ./cmd/devreg-bench [command] [-n 1000000] [-runs 3] [-postgres URL] [-old-baselines] [-bin PATH] [-server-procs N]
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"devreg/client"
)

// serverProcs is -server-procs: the GOMAXPROCS of the servers the bench starts, 0 for Go's default.
var serverProcs = new(int)

// config is what the flags ask for.
type config struct {
	n            int
	runs         int
	pg           string
	growthOnly   bool
	oldBaselines bool
	rateTime     time.Duration
}

// command measures some of the figures: run gets the flags and -bin.
type command struct {
	name, help string
	run        func(cfg config, bin string) error
}

// commands are the figures devreg-bench measures, by the name of the command that measures them.
var commands = []command{
	{"registration", "the default: a million devices as one CSV request and its variants, by stage, the request rates, paging, growth (issue 17's table)", func(cfg config, _ string) error { return run(cfg) }},
	{"growth", "only the growth of ten batches of n/10 UUID-like IDs", func(cfg config, _ string) error { cfg.growthOnly = true; return run(cfg) }},
	{"tokens", "only the request rates (device tokens, broker logins, topic checks, /healthz) on a registry of n devices", runTokensOnly},
	{"big", "10 batches of n devices on PostgreSQL, and the device token rate before and after them", func(cfg config, _ string) error { return runBig(cfg) }},
	{"backup", "devreg backup of n devices, and how it slows registrations down", func(cfg config, _ string) error { return runBackupOnly(cfg.n) }},
	{"listing-load", "a page of devices listed by a read key restricted to 100 device types, against an admin key (SQLite; PostgreSQL with -postgres)", runListingLoad},
	{"broker-load", "broker logins through two servers on one PostgreSQL database, and topic checks from one and four addresses (brokerload.go)", runBrokerLoad},
	{"certificates", "registering n devices (100,000 unless -n says) by certificate fingerprint against n by secret", runCertificates},
	{"cert-login", "device logins at the token endpoint over HTTPS: by secret against by certificate, full handshake and resumed session (certlogin.go)", func(cfg config, _ string) error { return runCertLogin(cfg) }},
	{"batch-delete", "deleting a lot of n devices against registering it, and the raw DELETE of as many rows (batchdelete.go)", runBatchDelete},
	{"enroll", "first connections through an enrollment group (10,000 unless -n says, from 64 clients) against token requests (enroll.go)", func(cfg config, _ string) error { return runEnroll(cfg) }},
	{"events", "the delivery of -events-n events to a webhook and to JetStream, each against its baseline (events.go)", func(cfg config, _ string) error { return runEvents(cfg) }},
	{"events-cost", "what writing events costs a registration of n devices, a device's change and token requests, against the build of -events-cost-before (eventscost.go)", func(cfg config, _ string) error { return runEventsCost(cfg) }},
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", 1_000_000, "devices per request")
	flag.IntVar(&cfg.runs, "runs", 3, "how many times each figure is measured; the median and the spread are printed")
	flag.StringVar(&cfg.pg, "postgres", os.Getenv("DEVREG_TEST_POSTGRES"), "PostgreSQL server `URL` for the PostgreSQL figures; empty to skip them")
	flag.BoolVar(&cfg.oldBaselines, "old-baselines", false, "also measure the baselines of devreg's first table layout, to compare with figures from before issue 17")
	flag.DurationVar(&cfg.rateTime, "rate-time", 5*time.Second, "how long each request rate is measured")
	flag.IntVar(serverProcs, "server-procs", 0, "run each devreg server with GOMAXPROCS=`N` (the bench and its load generator keep every core); 0 for the default")
	bin := flag.String("bin", "", "with tokens, listing-load, broker-load, certificates or batch-delete: the devreg `binary` to measure instead of one built from this tree")
	flag.Usage = func() {
		w := flag.CommandLine.Output()
		fmt.Fprintf(w, "usage: devreg-bench [command] [flags]\n\ncommands:\n")
		for _, c := range commands {
			fmt.Fprintf(w, "  %-13s %s\n", c.name, c.help)
		}
		fmt.Fprintf(w, "\nflags:\n")
		flag.PrintDefaults()
	}
	name, args := "registration", os.Args[1:]
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	flag.CommandLine.Parse(args)
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	var err error
	switch {
	case i < 0:
		err = fmt.Errorf("no command %q (devreg-bench -h lists them)", name)
	case flag.NArg() > 0:
		err = fmt.Errorf("unexpected %q after the flags: one command at a time", flag.Arg(0))
	case cfg.runs < 1 || cfg.n < 1000:
		err = fmt.Errorf("want -runs of at least 1 and -n of at least 1000")
	default:
		err = commands[i].run(cfg, *bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devreg-bench:", err)
		os.Exit(1)
	}
}

// bench is one invocation: the binary, the files every run sends and imports, and what the runs
// measured.
type bench struct {
	config
	dir, bin string
	files    files
	idsA     []string // the sorted set: the devices of the CSV request, in its order
	secretsA []string
	idsD     []string // the shuffled set: the devices of the shuffled CSV request, in its order
	load     loadGenerator
	res      *results
}

// files are the request bodies and baseline rows, written once and used by every run.
type files struct {
	csvA, csvABadFirst, csvABadLast string // the sorted set, and the same with an invalid first or last entry
	csvB, jsonC, csvD               string // new IDs for the dry run, the JSON request, the shuffled set
	baseSorted, baseShuffled        string // the rows of csvA and csvD in the smallest table's shape
	baseOld                         string // the rows of csvA in devreg's first table layout
	growth, growthBase              []string
}

// pingPostgres checks, before anything is measured, that the PostgreSQL server at url (if any)
// answers.
func pingPostgres(url string) error {
	if url == "" {
		return nil
	}
	db, err := sql.Open("pgx", url)
	if err == nil {
		err = db.Ping()
		db.Close()
	}
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %v (set -postgres or DEVREG_TEST_POSTGRES empty to leave PostgreSQL out)", url, err)
	}
	return nil
}

// newBench makes a new temporary directory, which the caller removes, and builds devreg into it,
// unless bin names the devreg binary to measure.
func newBench(cfg config, bin string) (*bench, error) {
	dir, err := os.MkdirTemp("", "devreg-bench")
	if err != nil {
		return nil, err
	}
	if bin, err = devregBinary(dir, bin); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &bench{config: cfg, dir: dir, bin: bin, load: newLoadGenerator(), res: newResults()}, nil
}

// devregBinary returns the path of the devreg binary to measure: bin, or one built from this
// tree into dir when bin is "".
func devregBinary(dir, bin string) (string, error) {
	if bin != "" {
		return filepath.Abs(bin)
	}
	bin = filepath.Join(dir, "devreg")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/devreg").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// createAccount runs devreg accounts create with env (nil: this process's) and args (its --data
// and --database), and returns the new account's ID and first API key.
func createAccount(ctx context.Context, bin string, env []string, args ...string) (accountID, apiKey string, err error) {
	acct := exec.CommandContext(ctx, bin, append([]string{"accounts", "create", "--name", "Bench", "--email", "bench@example.test", "--password-stdin"}, args...)...)
	acct.Env, acct.Stdin = env, strings.NewReader("benchmark-password\n")
	out, err := acct.Output()
	if err != nil {
		return "", "", fmt.Errorf("accounts create: %v", err)
	}
	var account struct {
		AccountID string `json:"account_id"`
		APIKey    string `json:"api_key"`
	}
	if err := json.Unmarshal(out, &account); err != nil {
		return "", "", fmt.Errorf("accounts create printed %q: %v", out, err)
	}
	return account.AccountID, account.APIKey, nil
}

// serverTiming reads a Server-Timing header of stages with durations in milliseconds.
func serverTiming(h string) []stage {
	var stages []stage
	for _, part := range strings.Split(h, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), ";dur=")
		if ms, err := strconv.ParseFloat(dur, 64); ok && err == nil {
			stages = append(stages, stage{name, ms / 1000})
		}
	}
	return stages
}

// run measures every figure cfg.runs times and prints them.
func run(cfg config) error {
	began := time.Now()
	if _, err := exec.LookPath("sqlite3"); err != nil {
		return fmt.Errorf("the baseline needs the sqlite3 shell: apt-get install -y sqlite3")
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	fmt.Fprintf(os.Stderr, "generating %d devices...\n", cfg.n)
	if err := b.generate(); err != nil {
		return err
	}
	ctx := context.Background()
	for r := range cfg.runs {
		fmt.Fprintf(os.Stderr, "run %d of %d (%s in)\n", r+1, cfg.runs, time.Since(began).Round(time.Second))
		if !cfg.growthOnly {
			if err := b.sqliteRun(ctx, r); err != nil {
				return err
			}
			if err := b.shuffledRun(ctx, r); err != nil {
				return err
			}
		}
		if err := b.growthRun(ctx, r); err != nil {
			return err
		}
		if cfg.pg != "" && !cfg.growthOnly {
			if err := b.postgresRun(ctx, r); err != nil {
				return err
			}
		}
	}
	b.report(os.Stdout, time.Since(began))
	return nil
}

// generate writes the request bodies and the baselines' rows. Secrets and hashes are random
// letters and digits: a baseline row's 32-character hash takes the same room as devreg's 32-byte
// HMAC.
func (b *bench) generate() error {
	n := b.n
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	b.idsA, b.secretsA = make([]string, n), make([]string, n)
	for i := range n {
		b.idsA[i], b.secretsA[i] = deviceID("a", i), randText(rng, 24)
	}
	csvLine := func(ids, secrets []string) func(w *bufio.Writer, i int) {
		return func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", ids[i], secrets[i]) }
	}
	badLine := func(bad int) func(w *bufio.Writer, i int) {
		return func(w *bufio.Writer, i int) {
			secret := b.secretsA[i]
			if i == bad {
				secret = "short" // below the minimum length of 8
			}
			fmt.Fprintf(w, "%s, %s,\n", b.idsA[i], secret)
		}
	}
	var err error
	f := &b.files
	write := func(path *string, name string, rows int, line func(w *bufio.Writer, i int)) {
		if err == nil {
			*path, err = writeLines(b.dir, name, rows, line)
		}
	}
	write(&f.csvA, "a.csv", n, csvLine(b.idsA, b.secretsA))
	write(&f.csvABadFirst, "a-bad-first.csv", n, badLine(0))
	write(&f.csvABadLast, "a-bad-last.csv", n, badLine(n-1))
	write(&f.csvB, "b.csv", n, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", deviceID("b", i), randText(rng, 24)) })
	b.idsD = make([]string, n)
	for i, p := range rng.Perm(n) {
		b.idsD[i] = deviceID("d", p)
	}
	write(&f.csvD, "d.csv", n, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", b.idsD[i], randText(rng, 24)) })
	created := time.Now().UnixMicro()
	smallest := func(ids []string) func(w *bufio.Writer, i int) {
		return func(w *bufio.Writer, i int) { fmt.Fprintf(w, "1,%s,%s,%d\n", ids[i], randText(rng, 32), created) }
	}
	write(&f.baseSorted, "base-sorted.csv", n, smallest(b.idsA))
	write(&f.baseShuffled, "base-shuffled.csv", n, smallest(b.idsD))
	if b.oldBaselines {
		write(&f.baseOld, "base-old.csv", n, func(w *bufio.Writer, i int) {
			fmt.Fprintf(w, "acc_bench,%s,dt_bench,bat_bench,enabled,k1,%x,%d\n", b.idsA[i], randText(rng, 32), created)
		})
	}
	size := n / growthBatches
	for g := range growthBatches {
		ids := make([]string, size)
		for i := range ids {
			ids[i] = uuidLike(rng)
		}
		var req, base string
		write(&req, fmt.Sprintf("growth-%02d.csv", g+1), size, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", ids[i], randText(rng, 24)) })
		write(&base, fmt.Sprintf("growth-base-%02d.csv", g+1), size, smallest(ids))
		f.growth, f.growthBase = append(f.growth, req), append(f.growthBase, base)
	}
	if err != nil {
		return err
	}
	if f.jsonC, err = writeJSON(b.dir, "c.json", n, "c"); err != nil {
		return err
	}
	return nil
}

// sqliteRun measures, on a server with a registry of its own, the CSV request's stages, the CSV
// request, its resend, a dry run of new IDs, the JSON request, listing and request rates, against
// the sorted baseline measured first.
func (b *bench) sqliteRun(ctx context.Context, run int) error {
	base, err := importSmallest(b.dir, []string{b.files.baseSorted})
	if err != nil {
		return err
	}
	b.res.add("sqlite3_import_sorted", "", measure{value: base.times[0].Seconds(), rssMB: base.rssMB})
	b.res.add("sqlite3_import_sorted:to_exit", "", measure{value: base.toExit.Seconds()})
	var old time.Duration
	if b.oldBaselines {
		if old, err = importOld(b.dir, b.files.baseOld, b.n); err != nil {
			return err
		}
		b.res.add("old_sqlite3_import", "", measure{value: old.Seconds()})
	}

	srv, err := b.startServer(ctx, fmt.Sprintf("run%d-sqlite", run+1))
	if err != nil {
		return err
	}
	defer srv.stop()
	csvType, err := srv.newType(ctx, "bench csv")
	if err != nil {
		return err
	}
	n := int64(b.n)
	// The stages first, on the empty registry the CSV request then registers into.
	refusedFirst, err := srv.register(ctx, "refused_at_first_entry", csvType, b.files.csvABadFirst, "text/csv", false, http.StatusUnprocessableEntity, nil)
	if err != nil {
		return err
	}
	refusedLast, err := srv.register(ctx, "refused_at_last_entry", csvType, b.files.csvABadLast, "text/csv", false, http.StatusUnprocessableEntity, nil)
	if err != nil {
		return err
	}
	steps := []struct {
		name, typeID, file, contentType string
		dryRun                          bool
		want                            func(regResult) bool
	}{
		{"register_csv", csvType, b.files.csvA, "text/csv", false, func(r regResult) bool { return r.Created == n }},
		{"resend_csv_unchanged", csvType, b.files.csvA, "text/csv", false, func(r regResult) bool { return r.Unchanged == n }},
		{"dry_run_csv_new", csvType, b.files.csvB, "text/csv", true, func(r regResult) bool { return r.Created == n }},
	}
	var peak float64
	for _, s := range steps {
		m, err := srv.register(ctx, s.name, s.typeID, s.file, s.contentType, s.dryRun, http.StatusOK, s.want)
		if err != nil {
			return err
		}
		peak = max(peak, m.rssMB)
		b.res.add(s.name, "sqlite3_import_sorted", m.against(base.times[0]))
		if s.name == "register_csv" {
			if old > 0 {
				b.res.add("register_csv_vs_old", "old_sqlite3_import", m.against(old))
			}
			b.res.addStages(refusedFirst.value, refusedLast.value, m)
		}
	}
	// The JSON request registers into an empty registry of its own, as the CSV request and the
	// baseline do: after the CSV request's million it measured a registry twice the size, not the
	// format (3.40 against 2.56 for the CSV; into an empty one the two took about as long).
	settle(srv.cmd.Process.Pid) // the CSV server stays for the listing and the rates; idle meanwhile
	m, err := b.registerFresh(ctx, fmt.Sprintf("run%d-json", run+1), "register_json", b.files.jsonC, "application/json")
	if err != nil {
		return err
	}
	peak = max(peak, m.rssMB)
	b.res.add("register_json", "sqlite3_import_sorted", m.against(base.times[0]))
	peakRSS := measure{value: peak}
	if base.rssMB > 0 {
		peakRSS.ratio = peak / base.rssMB
	}
	b.res.add("server_peak_rss", "sqlite3_import_sorted", peakRSS)

	settle(srv.cmd.Process.Pid)
	first, err := pageTime(ctx, srv.url, srv.apiKey, csvType, 0, 200)
	if err != nil {
		return err
	}
	deep, err := pageTime(ctx, srv.url, srv.apiKey, csvType, int64(b.n*9/10), 200)
	if err != nil {
		return err
	}
	b.res.add("list_first_page", "", measure{value: ms(first)})
	b.res.add("list_page_at_90pct", "list_first_page", measure{value: ms(deep), ratio: deep.Seconds() / first.Seconds()})

	return b.rateRun(ctx, srv)
}

// shuffledRun measures the CSV request of the shuffled set on a server with a registry of its
// own, against the shuffled baseline.
func (b *bench) shuffledRun(ctx context.Context, run int) error {
	base, err := importSmallest(b.dir, []string{b.files.baseShuffled})
	if err != nil {
		return err
	}
	b.res.add("sqlite3_import_shuffled", "", measure{value: base.times[0].Seconds(), rssMB: base.rssMB})
	b.res.add("sqlite3_import_shuffled:to_exit", "", measure{value: base.toExit.Seconds()})
	m, err := b.registerFresh(ctx, fmt.Sprintf("run%d-shuffled", run+1), "register_csv_shuffled", b.files.csvD, "text/csv")
	if err != nil {
		return err
	}
	b.res.add("register_csv_shuffled", "sqlite3_import_shuffled", m.against(base.times[0]))
	return nil
}

// registerFresh registers the file at path, of b.n new devices, as request name on a server of
// its own with an empty registry (data directory dir), and measures it.
func (b *bench) registerFresh(ctx context.Context, dir, name, path, contentType string) (measure, error) {
	srv, err := b.startServer(ctx, dir)
	if err != nil {
		return measure{}, err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench "+name)
	if err != nil {
		return measure{}, err
	}
	return srv.register(ctx, name, typeID, path, contentType, false, http.StatusOK, func(r regResult) bool { return r.Created == int64(b.n) })
}

// server is a devreg serve process on a data directory of its own, with an account.
type server struct {
	url, accountID, apiKey, data string
	cmd                          *exec.Cmd
	c                            *client.Client
}

// startServer creates an account in a new data directory and serves it; args are more flags for
// both (a --database). The API rate limit is raised so that no figure measures it.
func (b *bench) startServer(ctx context.Context, name string, args ...string) (*server, error) {
	return b.startServerWith(ctx, name, nil, args...)
}

// startServerWith is startServer with flags for serve alone.
func (b *bench) startServerWith(ctx context.Context, name string, serveOnly []string, args ...string) (*server, error) {
	s := &server{data: filepath.Join(b.dir, name)}
	var err error
	if s.accountID, s.apiKey, err = createAccount(ctx, b.bin, nil, append([]string{"--data", s.data}, args...)...); err != nil {
		return nil, err
	}
	if s.url, s.cmd, err = serve(b.bin, append(append([]string{"--data", s.data, "--api-rate-limit", "1000000"}, serveOnly...), args...)...); err != nil {
		return nil, err
	}
	s.c = client.New(s.url, s.apiKey)
	return s, nil
}

// stop ends the server and removes its data.
func (s *server) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	os.RemoveAll(s.data)
}

func (s *server) newType(ctx context.Context, name string) (string, error) {
	dt, err := s.c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	return dt.ID, err
}

// regResult is the part of a registration's answer the bench checks.
type regResult struct {
	Created, Unchanged int64
	BatchID            string `json:"batch_id"`
}

// register sends the file at path to the server as one registration request once the server is
// idle, and returns its time, the server's CPU time and its peak resident memory meanwhile. The
// answer must have status want and, when it is 200, satisfy ok.
func (s *server) register(ctx context.Context, name, typeID, path, contentType string, dryRun bool, want int, ok func(regResult) bool) (measure, error) {
	pid := s.cmd.Process.Pid
	settle(pid)
	f, err := os.Open(path)
	if err != nil {
		return measure{}, err
	}
	defer f.Close()
	u := s.url + "/api/v1/devicetypes/" + url.PathEscape(typeID) + "/device_ids"
	if dryRun {
		u += "?dry_run=true"
	}
	req, err := http.NewRequestWithContext(ctx, "PUT", u, f)
	if err != nil {
		return measure{}, err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Content-Type", contentType)
	resetPeakRSS(pid)
	cpu := cpuSeconds(pid)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return measure{}, fmt.Errorf("%s: %w", name, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	elapsed := time.Since(start)
	m := measure{value: elapsed.Seconds(), cpu: cpuSeconds(pid) - cpu, rssMB: peakRSSMB(pid), stages: serverTiming(resp.Header.Get("Server-Timing"))}
	if err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	if resp.StatusCode != want {
		return m, fmt.Errorf("%s: HTTP %d, want %d: %s", name, resp.StatusCode, want, body[:min(len(body), 300)])
	}
	if want == http.StatusOK {
		var res regResult
		if err := json.Unmarshal(body, &res); err != nil || !ok(res) {
			return m, fmt.Errorf("%s: unexpected result %s", name, body[:min(len(body), 300)])
		}
	}
	return m, nil
}

// settle waits until the server has been idle for a moment (its checkpointer may still be copying
// the last request's log into the database), for at most a minute, and writes dirty pages out,
// so that no step pays for the one before it.
func settle(pid int) {
	syscall.Sync()
	last := cpuSeconds(pid)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		now := cpuSeconds(pid)
		if now-last < 0.02 {
			break
		}
		last = now
	}
	syscall.Sync()
}

// cpuSeconds returns the user and system CPU time a process has used, from /proc.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // the command may hold spaces
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64) // fields 14 and 15 of stat(5)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // in clock ticks: USER_HZ is 100 on Linux
}

func writeLines(dir, name string, n int, line func(w *bufio.Writer, i int)) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	for i := range n {
		line(w, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// writeFile writes n lines of devices with IDs from prefix and random secrets.
func writeFile(dir, name string, n int, prefix string, line func(w io.Writer, id, secret string, last bool)) (string, error) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	return writeLines(dir, name, n, func(w *bufio.Writer, i int) { line(w, deviceID(prefix, i), randText(rng, 24), i == n-1) })
}

func writeJSON(dir, name string, n int, prefix string) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	w := bufio.NewWriter(f)
	w.WriteString(`{"devices": [`)
	for i := range n {
		if i > 0 {
			w.WriteString(",\n")
		}
		fmt.Fprintf(w, `{"device_id": %q, "secret": %q}`, deviceID(prefix, i), randText(rng, 24))
	}
	w.WriteString("]}\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}

// deviceID makes serial-number IDs in order, as a production line makes them.
func deviceID(prefix string, i int) string {
	return fmt.Sprintf("%s-%08d", prefix, i)
}

// uuidLike makes a device ID shaped like a random UUID, which lands anywhere in the key space.
func uuidLike(rng *rand.Rand) string {
	hi, lo := rng.Uint64(), rng.Uint64()
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xfff, 0x8000|lo>>48&0x3fff, lo&0xffffffffffff)
}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randText returns n random letters and digits; these need no cryptographic randomness, and a
// million of them are made at once.
func randText(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

func serve(bin string, args ...string) (string, *exec.Cmd, error) {
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	if *serverProcs > 0 {
		cmd.Env = append(os.Environ(), fmt.Sprintf("GOMAXPROCS=%d", *serverProcs))
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`serving on (https?://\S+)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, stderr)
			return m[1], cmd, nil
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
