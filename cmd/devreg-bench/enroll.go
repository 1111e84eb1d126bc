package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devreg/credential"
)

// enrollClients is how many clients connect at once, as issue 24's test has them.
const enrollClients = 64

// runEnroll measures issue 24's figures on a server of its own on SQLite and, with -postgres, on
// PostgreSQL: n first connections through an enrollment group (each registers its device and
// gets a token), from enrollClients clients at once, against n token requests of devices already
// registered, from as many clients in the same way, on the same server. Issue 24 asks that a
// first connection cost at most 3× a token request, so that n first connections end within
// n / (token rate / 3) seconds; afterwards devreg check must find the registry in order.
func runEnroll(cfg config) error {
	if !flagSet("n") {
		cfg.n = 10_000
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	ctx := context.Background()
	return b.onEachDatabase(ctx, func(db string, args ...string) error { return b.enrollRun(ctx, db, args...) })
}

// enrollRun measures, on one server started with args, cfg.runs times each: the token rate of
// registered devices, then the time of n first connections of new devices of one group.
func (b *bench) enrollRun(ctx context.Context, db string, args ...string) error {
	srv, err := b.startServer(ctx, "enroll-"+db, args...)
	if err != nil {
		return err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench enrollment")
	if err != nil {
		return err
	}
	// The registered devices whose tokens are the baseline.
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	ids, secrets := make([]string, tokenDevices), make([]string, tokenDevices)
	for i := range ids {
		ids[i], secrets[i] = deviceID("reg", i), randText(rng, 24)
	}
	var csv bytes.Buffer
	for i := range ids {
		fmt.Fprintf(&csv, "%s, %s,\n", ids[i], secrets[i])
	}
	path := filepath.Join(b.dir, "enroll-registered.csv")
	if err := os.WriteFile(path, csv.Bytes(), 0o600); err != nil {
		return err
	}
	if _, err := srv.register(ctx, "registered", typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(len(ids)) }); err != nil {
		return err
	}
	groupKey, err := createEnrollmentGroup(ctx, srv, typeID, int64(b.runs*b.n))
	if err != nil {
		return err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: enrollClients}}
	var tokens, firsts []measure
	for run := range b.runs {
		// Token requests: every registered device in turn, each once first (its first token
		// records its credential's use, a write that a steady state does not make).
		if run == 0 {
			if err := tokenRequests(ctx, hc, srv, ids, secrets, 0); err != nil {
				return err
			}
		}
		settle(srv.cmd.Process.Pid)
		cpu := cpuSeconds(srv.cmd.Process.Pid)
		start := time.Now()
		if err := tokenRequests(ctx, hc, srv, ids, secrets, b.n); err != nil {
			return err
		}
		took := time.Since(start).Seconds()
		tokens = append(tokens, measure{value: float64(b.n) / took, cpu: cpuSeconds(srv.cmd.Process.Pid) - cpu})

		newIDs, derived := make([]string, b.n), make([]string, b.n)
		for i := range newIDs {
			newIDs[i] = fmt.Sprintf("EN%d-%08d", run, i)
			derived[i] = credential.DeriveSecret(groupKey, newIDs[i])
		}
		settle(srv.cmd.Process.Pid)
		cpu = cpuSeconds(srv.cmd.Process.Pid)
		start = time.Now()
		if err := tokenRequests(ctx, hc, srv, newIDs, derived, b.n); err != nil {
			return fmt.Errorf("first connections: %w", err)
		}
		took = time.Since(start).Seconds()
		firsts = append(firsts, measure{value: took, cpu: cpuSeconds(srv.cmd.Process.Pid) - cpu})
	}
	rate := medianBy(tokens, func(m measure) float64 { return m.value })
	tokenCPU := medianBy(tokens, func(m measure) float64 { return m.cpu }) / float64(b.n) * 1e6
	took := medianBy(firsts, func(m measure) float64 { return m.value })
	firstCPU := medianBy(firsts, func(m measure) float64 { return m.cpu }) / float64(b.n) * 1e6
	bound := float64(b.n) / (rate / 3)
	fmt.Printf("devreg-bench enroll: %d first connections through one enrollment group, %d clients, one %s server, %d runs (median)\n", b.n, enrollClients, db, b.runs)
	fmt.Printf("  token requests of registered devices: %7.0f/s, server CPU %4.0f µs each\n", rate, tokenCPU)
	fmt.Printf("  first connections (enrol + token):    %7.0f/s, server CPU %4.0f µs each, all %d in %.2f s\n", float64(b.n)/took, firstCPU, b.n, took)
	fmt.Printf("  cost of a first connection / a token request: %.2f (wall), %.2f (server CPU) (issue 24: at most 3; bound for %d: %.2f s)\n",
		rate*took/float64(b.n), firstCPU/tokenCPU, b.n, bound)
	srv.cmd.Process.Signal(os.Interrupt)
	srv.cmd.Wait()
	out, err := exec.CommandContext(ctx, b.bin, append([]string{"check", "--data", srv.data}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("devreg check after the first connections: %v\n%s", err, out)
	}
	fmt.Printf("  devreg check afterwards: clean\n")
	return nil
}

// createEnrollmentGroup makes an enrollment group of the type for every device ID, registering at
// most max devices, as fast as the server lets it, and returns its key.
func createEnrollmentGroup(ctx context.Context, srv *server, typeID string, max int64) ([]byte, error) {
	body, _ := json.Marshal(map[string]any{"name": "bench", "id_pattern": "^EN[0-9]+-[0-9]{8}$", "max_devices": max, "max_per_hour": 100000, "temporary": true})
	req, err := http.NewRequestWithContext(ctx, "POST", srv.url+"/api/v1/devicetypes/"+url.PathEscape(typeID)+"/enrollment_groups", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+srv.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var g struct {
		GroupKey string `json:"group_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil || resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("create enrollment group: HTTP %d %v", resp.StatusCode, err)
	}
	return credential.ParseGroupKey(g.GroupKey)
}

// tokenRequests sends n token requests from enrollClients clients at once, cycling through the
// devices (all of them once when n is 0), and fails unless every answer is 200.
func tokenRequests(ctx context.Context, hc *http.Client, srv *server, ids, secrets []string, n int) error {
	if n == 0 {
		n = len(ids)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {srv.accountID}}.Encode()
	l := load{name: "token", method: "POST", path: "/device/v1/token", contentType: "application/x-www-form-urlencoded"}
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range enrollClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				d := i % len(ids)
				basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(ids[d]) + ":" + url.QueryEscape(secrets[d])))
				status, body, err := send(ctx, hc, srv.url, l, variant{auth: "Basic " + basic, body: form})
				if err == nil && status != http.StatusOK {
					err = fmt.Errorf("device %s: HTTP %d: %s", ids[d], status, strings.TrimSpace(string(body[:min(len(body), 200)])))
				}
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}
