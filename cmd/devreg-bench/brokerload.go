package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"devreg"
	"devreg/client"
)

// The flags of broker-load, beside -postgres and -rate-time.
var (
	brokerDevices  = flag.Int("broker-devices", 20_000, "with broker-load: how many devices log in")
	brokerLoadTime = flag.Duration("broker-load-time", 30*time.Second, "with broker-load: how long the broker logins last")
)

// brokerLagLimit is how long broker-load waits after the logins for every device's
// last_seen_at (the contract promises 10 seconds).
const brokerLagLimit = 60 * time.Second

// brokerAddrs are the client addresses the topic checks come from: loopback takes any of
// 127.0.0.0/8, so one machine plays four brokers.
var brokerAddrs = []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}

// runBrokerLoad reproduces what issue 22 found of broker traffic, against real devreg serve
// processes on a PostgreSQL database of their own (created and dropped here):
//
//   - two servers, both letting the same devices in (EMQX's authenticator, with the devices'
//     secrets) as fast as they answer: the logins per second, the deadlocks PostgreSQL counted,
//     the last-seen writes the servers logged as dropped, and how long after the logins the
//     last device's last_seen_at appeared;
//   - one server answering EMQX topic checks with one broker key from one client address and
//     from four, next to its /healthz rate, with how many times the key's row was written.
func runBrokerLoad(cfg config, bin string) error {
	if cfg.pg == "" {
		return fmt.Errorf("broker-load needs a PostgreSQL server: -postgres URL or DEVREG_TEST_POSTGRES")
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	began := time.Now()
	b, err := newBench(cfg, bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx := context.Background()
	dbURL, drop, err := b.newPGDatabase(ctx)
	if err != nil {
		return err
	}
	defer drop()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		return err
	}
	defer db.Close()

	l := &brokerLoad{bin: b.bin, dir: b.dir, dbURL: dbURL, db: db, n: *brokerDevices}
	defer l.stop()
	if err := l.setUp(ctx); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "broker logins through two servers for %s...\n", *brokerLoadTime)
	logins, err := l.logins(ctx, *brokerLoadTime)
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "topic checks...")
	checks, err := l.topicChecks(ctx, cfg.rateTime)
	if err != nil {
		return err
	}
	l.stop() // the servers write what they hold, and their logs end
	logs, err := l.readLogs()
	if err != nil {
		return err
	}
	l.report(os.Stdout, logins, checks, logs, cfg.rateTime, time.Since(began))
	return nil
}

// brokerLoad is one broker-load run: two servers on one database, an account with n devices
// and a broker key.
type brokerLoad struct {
	bin, dir, dbURL string
	db              *sql.DB
	n               int
	servers         []*loggedServer
	accountID       string
	brokerKey       string
	ids, secrets    []string
}

// loggedServer is a devreg serve process whose log goes to a file.
type loggedServer struct {
	url, log string
	cmd      *exec.Cmd
	exited   chan struct{} // closed once the process has exited
}

// setUp creates the account, starts the two servers with the same key files, and registers the
// devices and makes a broker key through the first.
func (l *brokerLoad) setUp(ctx context.Context) error {
	keys := filepath.Join(l.dir, "keys")
	if err := os.Mkdir(keys, 0o700); err != nil {
		return err
	}
	env := append(os.Environ(), "DEVREG_SECRET_KEY_FILE="+filepath.Join(keys, "secret.keys"), "DEVREG_SIGNING_KEY_FILE="+filepath.Join(keys, "signing.keys"))
	accountID, apiKey, err := createAccount(ctx, l.bin, env, "--data", filepath.Join(l.dir, "s1"), "--database", l.dbURL)
	if err != nil {
		return err
	}
	l.accountID = accountID
	for _, name := range []string{"s1", "s2"} { // one after the other: the first makes the signing key
		s, err := serveLogged(l.bin, env, filepath.Join(l.dir, name+".log"), "--data", filepath.Join(l.dir, name), "--database", l.dbURL, "--api-rate-limit", "1000000")
		if err != nil {
			return err
		}
		l.servers = append(l.servers, s)
	}
	c := client.New(l.servers[0].url, apiKey)
	name := "bench broker"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		return err
	}
	k, err := c.CreateAPIKey(ctx, "emqx", devreg.ScopeBroker)
	if err != nil {
		return err
	}
	l.brokerKey = k.Key
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	l.ids, l.secrets = make([]string, l.n), make([]string, l.n)
	for i := range l.n {
		l.ids[i], l.secrets[i] = deviceID("m", i), randText(rng, 24)
	}
	csv, err := writeLines(l.dir, "devices.csv", l.n, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", l.ids[i], l.secrets[i]) })
	if err != nil {
		return err
	}
	s1 := &server{url: l.servers[0].url, apiKey: apiKey, cmd: l.servers[0].cmd}
	_, err = s1.register(ctx, "register", dt.ID, csv, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(l.n) })
	return err
}

// serveLogged starts devreg serve with env and args, its log going to the file at logPath,
// and returns once it serves.
func serveLogged(bin string, env []string, logPath string, args ...string) (*loggedServer, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env, cmd.Stderr = env, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &loggedServer{log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(s.exited) }()
	re := regexp.MustCompile(`serving on (http://[^\s"]+)`)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		text, _ := os.ReadFile(logPath)
		if m := re.FindSubmatch(text); m != nil {
			s.url = string(m[1])
			return s, nil
		}
		select {
		case <-s.exited:
			deadline = time.Time{}
		case <-time.After(50 * time.Millisecond):
		}
	}
	cmd.Process.Kill()
	<-s.exited
	text, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("devreg serve did not start:\n%s", text)
}

// stop ends the servers, which write what they hold before they exit.
func (l *brokerLoad) stop() {
	for _, s := range l.servers {
		s.cmd.Process.Signal(syscall.SIGTERM)
		<-s.exited
	}
}

// loginFigures is what the logins through both servers measured.
type loginFigures struct {
	rate            float64       // logins answered "allow" per second
	refused         int64         // answers other than allow
	deadlocks       int64         // pg_stat_database.deadlocks of the database during the logins and after
	lag             time.Duration // from the end of the logins until every device's last_seen_at was its last login's
	missing         int           // devices whose last login was not recorded brokerLagLimit after the logins
	warmUp, elapsed time.Duration
}

// logins lets every device in once through alternate servers (a device's first login writes
// its credential's first use at once; this takes that out of the figures), then sends logins
// of the devices in turn, over both servers, for d, and waits until every device's
// last_seen_at shows its last login.
func (l *brokerLoad) logins(ctx context.Context, d time.Duration) (loginFigures, error) {
	var f loginFigures
	bodies := make([]string, l.n)
	for i, id := range l.ids {
		body, _ := json.Marshal(map[string]string{"username": id, "password": l.secrets[i], "clientid": id, "peerhost": "10.0.0.7"})
		bodies[i] = string(body)
	}
	last := make([]atomic.Int64, l.n) // when each device's last allowed login was sent, in µs
	var next, refused atomic.Int64
	var firstErr error
	var errOnce sync.Once
	run := func(until func() bool) time.Duration {
		tr := &http.Transport{MaxIdleConnsPerHost: loadConnections, MaxConnsPerHost: loadConnections / 2}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		start := time.Now()
		var wg sync.WaitGroup
		for range loadConnections {
			wg.Go(func() {
				for !until() {
					k := int(next.Add(1) - 1)
					// Each pass over the devices shifts which server a device goes to: with
					// k%2 alone, an even number of devices would each keep to one server.
					i, srv := k%l.n, l.servers[(k+k/l.n)%len(l.servers)]
					sent := time.Now()
					status, body, err := send(ctx, hc, srv.url, load{method: "POST", path: "/broker/v1/emqx/authn", contentType: "application/json"},
						variant{auth: "Bearer " + l.brokerKey, body: bodies[i]})
					if err != nil {
						errOnce.Do(func() { firstErr = err })
						return
					}
					if status != 200 || !bytes.Contains(body, []byte(`"allow"`)) {
						refused.Add(1)
						continue
					}
					last[i].Store(sent.UnixMicro())
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	f.warmUp = run(func() bool { return next.Load() >= int64(l.n) })
	if firstErr != nil || refused.Load() > 0 {
		return f, fmt.Errorf("the first logins: %d refused, %v", refused.Load(), firstErr)
	}
	deadlocks, err := l.deadlocks(ctx)
	if err != nil {
		return f, err
	}
	next.Store(0)
	refused.Store(0)
	end := time.Now().Add(d)
	f.elapsed = run(func() bool { return time.Now().After(end) })
	if firstErr != nil {
		return f, firstErr
	}
	ended := time.Now()
	f.rate, f.refused = float64(next.Load()-refused.Load())/f.elapsed.Seconds(), refused.Load()

	// Every device's last_seen_at must reach the time its last login was sent (a server records
	// the time of the latest login it let in, no earlier).
	want := make(map[string]int64, l.n)
	for i, id := range l.ids {
		want[id] = last[i].Load()
	}
	for {
		missing, err := l.notSeen(ctx, want)
		if err != nil {
			return f, err
		}
		f.lag, f.missing = time.Since(ended), missing
		if missing == 0 || f.lag > brokerLagLimit {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // PostgreSQL's statistics follow about a second behind
	after, err := l.deadlocks(ctx)
	f.deadlocks = after - deadlocks
	return f, err
}

// notSeen counts the devices whose last_seen_at is before the time in want.
func (l *brokerLoad) notSeen(ctx context.Context, want map[string]int64) (int, error) {
	rows, err := l.db.QueryContext(ctx, `SELECT device_id, coalesce(last_seen_at, 0) FROM devices`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	missing := len(want)
	for rows.Next() {
		var id string
		var seen int64
		if err := rows.Scan(&id, &seen); err != nil {
			return 0, err
		}
		if w, ok := want[id]; ok && seen >= w {
			missing--
		}
	}
	return missing, rows.Err()
}

// deadlocks is PostgreSQL's count of deadlocks in the database.
func (l *brokerLoad) deadlocks(ctx context.Context) (int64, error) {
	var n int64
	err := l.db.QueryRowContext(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n)
	return n, err
}

// keyWrites is how many times PostgreSQL counts the api_keys table's rows updated.
func (l *brokerLoad) keyWrites(ctx context.Context) (int64, error) {
	time.Sleep(2 * time.Second) // statistics follow about a second behind
	var n int64
	err := l.db.QueryRowContext(ctx, `SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'`).Scan(&n)
	return n, err
}

// checkFigures is what the topic checks through one server measured.
type checkFigures struct {
	healthz, one, four    float64 // requests per second
	oneWrites, fourWrites int64   // the key's row updates meanwhile
}

// topicChecks measures, on the first server, /healthz, and EMQX topic checks (publish to the
// device's own topic) of 1000 devices with the broker key from one client address and from four.
func (l *brokerLoad) topicChecks(ctx context.Context, d time.Duration) (checkFigures, error) {
	var f checkFigures
	srv := l.servers[0]
	settle(srv.cmd.Process.Pid)
	healthz := load{name: "healthz", method: "GET", path: "/healthz", variants: []variant{{}}, check: func(status int, body []byte) error {
		if status != 200 {
			return fmt.Errorf("HTTP %d", status)
		}
		return nil
	}}
	var err error
	if f.healthz, err = rateFrom(ctx, srv.url, healthz, d, brokerAddrs[:1]); err != nil {
		return f, fmt.Errorf("healthz: %w", err)
	}
	authz := load{name: "emqx_authz", method: "POST", path: "/broker/v1/emqx/authz", contentType: "application/json", check: func(status int, body []byte) error {
		if status != 200 || !bytes.Contains(body, []byte(`"allow"`)) {
			return fmt.Errorf("HTTP %d: %s", status, body[:min(len(body), 200)])
		}
		return nil
	}}
	for _, id := range l.ids[:min(len(l.ids), tokenDevices)] {
		body, _ := json.Marshal(map[string]string{"username": id, "clientid": id, "topic": "devices/" + id + "/up", "action": "publish"})
		authz.variants = append(authz.variants, variant{auth: "Bearer " + l.brokerKey, body: string(body)})
	}
	for _, c := range []struct {
		addrs  []string
		rate   *float64
		writes *int64
	}{{brokerAddrs[:1], &f.one, &f.oneWrites}, {brokerAddrs, &f.four, &f.fourWrites}} {
		settle(srv.cmd.Process.Pid)
		before, err := l.keyWrites(ctx)
		if err != nil {
			return f, err
		}
		if *c.rate, err = rateFrom(ctx, srv.url, authz, d, c.addrs); err != nil {
			return f, fmt.Errorf("topic checks from %d addresses: %w", len(c.addrs), err)
		}
		after, err := l.keyWrites(ctx)
		if err != nil {
			return f, err
		}
		*c.writes = after - before
	}
	return f, nil
}

// rateFrom measures how many requests of l a server answers per second with loadConnections
// connections, each from one of the client addresses addrs in turn (any, if there are none).
func rateFrom(ctx context.Context, serverURL string, l load, d time.Duration, addrs []string) (float64, error) {
	var done atomic.Int64
	errs := make(chan error, loadConnections)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for c := range loadConnections {
		dialer := &net.Dialer{}
		if len(addrs) > 0 {
			dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(addrs[c%len(addrs)])}
		}
		tr := &http.Transport{DialContext: dialer.DialContext, MaxConnsPerHost: 1}
		hc := &http.Client{Transport: tr}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for i := c; time.Now().Before(deadline); i++ {
				status, body, err := send(ctx, hc, serverURL, l, l.variants[i%len(l.variants)])
				if err == nil {
					err = l.check(status, body)
				}
				if err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	return float64(done.Load()) / elapsed.Seconds(), <-errs
}

// logFigures is what the servers' logs say of the writes of logins.
type logFigures struct {
	deadlocks          int // log lines that name a deadlock (40P01)
	devices, creds     int // devices and credentials whose writes were dropped
	seenWarn, usedWarn int // such log lines
}

// droppedRE reads how many items the error of a failed write says were not recorded; a devreg
// from before issue 22 dropped the whole write, whose size the line's own field gives.
var droppedRE = regexp.MustCompile(`^(\d+) of \d+ \w+ were not recorded`)

// readLogs reads both servers' logs (JSON lines).
func (l *brokerLoad) readLogs() (logFigures, error) {
	var f logFigures
	for _, s := range l.servers {
		file, err := os.Open(s.log)
		if err != nil {
			return f, err
		}
		sc := bufio.NewScanner(file)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg         string `json:"msg"`
				Err         string `json:"err"`
				Devices     int    `json:"devices"`
				Credentials int    `json:"credentials"`
			}
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if strings.Contains(line.Err, "40P01") || strings.Contains(line.Err, "deadlock detected") {
				f.deadlocks++
			}
			dropped := func(whole int) int {
				if m := droppedRE.FindStringSubmatch(line.Err); m != nil {
					n, _ := strconv.Atoi(m[1])
					return n
				}
				return whole
			}
			switch line.Msg {
			case "record that devices were seen":
				f.seenWarn++
				f.devices += dropped(line.Devices)
			case "record that credentials were used":
				f.usedWarn++
				f.creds += dropped(line.Credentials)
			}
		}
		file.Close()
		if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
			return f, err
		}
	}
	return f, nil
}

// report prints the figures.
func (l *brokerLoad) report(w io.Writer, lf loginFigures, cf checkFigures, logs logFigures, rateTime, took time.Duration) {
	fmt.Fprintf(w, "devreg-bench broker-load: %s; two servers on PostgreSQL %s, %d devices, %d CPUs, %d connections; took %s\n",
		l.bin, postgresVersion(context.Background(), l.dbURL), l.n, runtime.NumCPU(), loadConnections, took.Round(time.Second))
	fmt.Fprintf(w, "\nbroker logins (EMQX authn, secret), spread over both servers for %s (after one login of each device, %s):\n",
		lf.elapsed.Round(time.Second), lf.warmUp.Round(100*time.Millisecond))
	fmt.Fprintf(w, "  %-44s %.0f/s (%d refused)\n", "logins", lf.rate, lf.refused)
	fmt.Fprintf(w, "  %-44s %d (pg_stat_database), %d log lines\n", "PostgreSQL deadlocks", lf.deadlocks, logs.deadlocks)
	fmt.Fprintf(w, "  %-44s %d devices in %d warnings, %d credentials in %d warnings\n", "dropped last-seen / last-use writes (logs)", logs.devices, logs.seenWarn, logs.creds, logs.usedWarn)
	if lf.missing == 0 {
		fmt.Fprintf(w, "  %-44s %.1f s after the logins\n", "every device's last_seen_at shown", lf.lag.Seconds())
	} else {
		fmt.Fprintf(w, "  %-44s %d devices still not, %s after the logins\n", "every device's last_seen_at shown", lf.missing, brokerLagLimit)
	}
	fmt.Fprintf(w, "\nEMQX topic checks (authz, publish) through one server with one broker key, %s each:\n", rateTime)
	fmt.Fprintf(w, "  %-44s %.0f/s\n", "/healthz", cf.healthz)
	fmt.Fprintf(w, "  %-44s %.0f/s (%.2f of /healthz), key row written %d times\n", "from one client address", cf.one, cf.one/cf.healthz, cf.oneWrites)
	fmt.Fprintf(w, "  %-44s %.0f/s (%.2f of /healthz), key row written %d times\n", "from four client addresses", cf.four, cf.four/cf.healthz, cf.fourWrites)
}
