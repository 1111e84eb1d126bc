package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

var eventsCostBefore = flag.String("events-cost-before", "", "with events-cost: the git `revision` to build the devreg without events from (the commit before them)")

// runEventsCost measures what writing events costs (issue 26: a registration of a million devices
// less than 3%, a single-device change less than 20%, a token request that is not a first
// connection nothing measurable). It compares this tree's devreg with the same program built
// from -events-cost-before, the commit before events, on SQLite and (with -postgres) PostgreSQL,
// in alternating order within each run: a figure here is the cost of the feature, measured as the issue defines it, not a
// baseline for speed. Each run and build registers n devices as one CSV request, changes one
// device's status 1,000 times one request after another, and requests tokens for 1,000 devices
// that have had one before.
func runEventsCost(cfg config) error {
	if *eventsCostBefore == "" {
		return fmt.Errorf("events-cost needs -events-cost-before REV, the commit before events (make bench EVENTS_COST=1 BEFORE=REV)")
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	before, err := buildAt(b.dir, *eventsCostBefore)
	if err != nil {
		return err
	}
	builds := []struct{ name, bin string }{{"before", before}, {"events", b.bin}}
	ctx := context.Background()
	for _, db := range []string{"SQLite", "PostgreSQL"} {
		if db == "PostgreSQL" && b.pg == "" {
			continue
		}
		type figures struct{ register, change, tokens []measure }
		got := map[string]*figures{"before": {}, "events": {}}
		for run := range b.runs {
			order := builds
			if run%2 == 1 {
				order = []struct{ name, bin string }{builds[1], builds[0]}
			}
			for _, bd := range order {
				var args []string
				if db == "PostgreSQL" {
					url, drop, err := b.newPGDatabase(ctx)
					if err != nil {
						return err
					}
					defer drop()
					args = []string{"--database", url}
				}
				reg, change, tokens, err := b.eventsCostRun(ctx, bd.bin, fmt.Sprintf("cost-%s-%s-%d", db, bd.name, run), args...)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", bd.name, db, err)
				}
				f := got[bd.name]
				f.register, f.change, f.tokens = append(f.register, reg), append(f.change, change), append(f.tokens, tokens)
			}
		}
		v := func(m measure) float64 { return m.value }
		pct := func(after, before []measure, higherIsBetter bool) float64 {
			a, bf := medianBy(after, v), medianBy(before, v)
			if higherIsBetter {
				return (bf/a - 1) * 100
			}
			return (a/bf - 1) * 100
		}
		spread := func(ms []measure, prec int) string {
			var xs []float64
			for _, m := range ms {
				xs = append(xs, m.value)
			}
			return spreadOf(xs).format(prec)
		}
		e, bf := got["events"], got["before"]
		fmt.Printf("devreg-bench events-cost: this tree against %s (the commit before events), one %s server each, %d runs (median [spread])\n", *eventsCostBefore, db, b.runs)
		fmt.Printf("  register %d devices (CSV, one request): %s s against %s s: %+.1f%% (issue 26: less than 3%%)\n",
			b.n, spread(e.register, 2), spread(bf.register, 2), pct(e.register, bf.register, false))
		fmt.Printf("  change one device's status (PATCH, one at a time): %s ms against %s ms: %+.1f%% (issue 26: less than 20%%)\n",
			spread(e.change, 3), spread(bf.change, 3), pct(e.change, bf.change, false))
		fmt.Printf("  device tokens, not a first connection: %s/s against %s/s: %+.1f%% slower (issue 26: nothing measurable)\n",
			spread(e.tokens, 0), spread(bf.tokens, 0), pct(e.tokens, bf.tokens, true))
	}
	return nil
}

// eventsCostRun measures, on a new server of bin, a registration of b.n devices (seconds), a
// device's status change (ms each, the mean of 1,000) and token requests (per second).
func (b *bench) eventsCostRun(ctx context.Context, bin, name string, args ...string) (reg, change, tokens measure, err error) {
	saved := b.bin
	b.bin = bin
	srv, err := b.startServer(ctx, name, args...)
	b.bin = saved
	if err != nil {
		return
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, name)
	if err != nil {
		return
	}
	path := filepath.Join(b.dir, name+".csv")
	if err = writeLotFile(path, name, b.n); err != nil {
		return
	}
	defer os.Remove(path)
	if reg, err = srv.register(ctx, name, typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(b.n) }); err != nil {
		return
	}
	lot, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.SplitN(string(lot), "\n", tokenDevices+1)[:tokenDevices]

	first, _, _ := strings.Cut(lines[0], ",")
	settle(srv.cmd.Process.Pid)
	const changes = 1000
	start := time.Now()
	for i := range changes {
		status := []string{"disabled", "enabled"}[i%2]
		if err = srv.api(ctx, "PATCH", "/api/v1/devices/"+url.PathEscape(first), `{"status": "`+status+`"}`, nil); err != nil {
			return
		}
	}
	change.value = float64(time.Since(start).Microseconds()) / 1000 / changes

	l := load{name: "token_issue", method: "POST", path: "/device/v1/token", contentType: "application/x-www-form-urlencoded",
		check: func(status int, body []byte) error {
			if status != 200 || !bytes.Contains(body, []byte("access_token")) {
				return fmt.Errorf("HTTP %d: %s", status, body[:min(len(body), 200)])
			}
			return nil
		}}
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {srv.accountID}}.Encode()
	for _, line := range lines {
		id, secret, _ := strings.Cut(line, ",")
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
		l.variants = append(l.variants, variant{auth: "Basic " + basic, body: form})
	}
	for _, v := range l.variants { // each device's first token (its first connection) first
		status, body, serr := send(ctx, http.DefaultClient, srv.url, l, v)
		if serr == nil {
			serr = l.check(status, body)
		}
		if serr != nil {
			err = serr
			return
		}
	}
	settle(srv.cmd.Process.Pid)
	tokens.value, err = b.load.rate(ctx, b.dir, srv.url, l, b.rateTime)
	return
}

// buildAt builds devreg as it was at git revision rev, in a worktree of its own under dir.
func buildAt(dir, rev string) (string, error) {
	tree := filepath.Join(dir, "tree-"+strings.ReplaceAll(rev, "/", "_"))
	if out, err := exec.Command("git", "worktree", "add", "--detach", tree, rev).CombinedOutput(); err != nil {
		return "", fmt.Errorf("git worktree add %s: %v\n%s", rev, err, out)
	}
	defer exec.Command("git", "worktree", "remove", "--force", tree).Run()
	bin := filepath.Join(dir, "devreg-"+strings.ReplaceAll(rev, "/", "_"))
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/devreg")
	cmd.Dir = tree
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build at %s: %v\n%s", rev, err, out)
	}
	return bin, nil
}
