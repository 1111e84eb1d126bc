package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"devreg"
	"devreg/client"
)

// The registry listing-load lists from: listingTypes device types that a read key is
// restricted to, whose devices (n, by default listingDevices) share the prefix "big" and
// interleave the types in ID order, and listingOtherTypes types the key does not reach, with a
// quarter as many devices of their own prefix.
const (
	listingDevices    = 200_000
	listingTypes      = 100
	listingOtherTypes = 20
	// listingSamples is how many times each figure is measured; the median and the spread are
	// printed. After listingMinSamples, sampling stops once it has taken listingSampleTime, so
	// that a binary whose restricted listing takes seconds is measured in about two minutes too.
	listingSamples    = 5
	listingMinSamples = 3
	listingSampleTime = time.Minute
	// listingParallel is how many listings of the restricted key run at once in the parallel figures.
	listingParallel = 4
)

// runListingLoad measures a page of 1,000 devices listed by a read key restricted to
// listingTypes device types against the same page listed by the admin key, in device ID order
// (a prefix search) and in registration order, on a server with a registry of its own: the
// time of one request, and of listingParallel of the restricted key's at once. It measures the
// binary at bin, or one it builds; on SQLite, or on a new PostgreSQL database (dropped after)
// when -postgres is given.
func runListingLoad(cfg config, bin string) error {
	began := time.Now()
	n, pg := listingDevices, ""
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "n":
			n = cfg.n
		case "postgres":
			pg = cfg.pg // only when asked for: DEVREG_TEST_POSTGRES alone does not switch databases
		}
	})
	if n <= 1000 { // each figure lists a full page of 1,000 and checks there is a next one
		return fmt.Errorf("listing-load wants -n of more than 1000 (it lists pages of 1,000 devices)")
	}
	if err := pingPostgres(pg); err != nil {
		return err
	}
	cfg.pg = pg
	b, err := newBench(cfg, bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)

	ctx := context.Background()
	var args []string
	var analyze func() error // PostgreSQL: what autovacuum would have done by the time a registry is listed
	database := "SQLite"
	if pg != "" {
		dbURL, drop, err := b.newPGDatabase(ctx)
		if err != nil {
			return err
		}
		defer drop()
		args = []string{"--database", dbURL}
		database = "PostgreSQL " + postgresVersion(ctx, pg) + " (server CPU: devreg's, not PostgreSQL's)"
		analyze = func() error {
			db, err := sql.Open("pgx", dbURL)
			if err != nil {
				return err
			}
			defer db.Close()
			_, err = db.ExecContext(ctx, "ANALYZE")
			return err
		}
	}
	srv, err := b.startServer(ctx, "listing", args...)
	if err != nil {
		return err
	}
	defer srv.stop()
	fmt.Fprintf(os.Stderr, "registering %d devices in %d types and %d in %d others...\n", n, listingTypes, n/4, listingOtherTypes)
	reached, err := fillListingRegistry(ctx, srv, n)
	if err != nil {
		return err
	}
	restricted, err := restrictedKey(ctx, srv, reached)
	if err != nil {
		return err
	}
	if analyze != nil {
		if err := analyze(); err != nil {
			return err
		}
	}

	pages := []struct{ name, query, label string }{
		{"prefix", "prefix=big&limit=1000", "prefix=big&limit=1000 (device ID order)"},
		{"registration_order", "limit=1000", "limit=1000 (registration order)"},
	}
	for _, p := range pages {
		// The two keys list the same page: every device of the prefix is of a reached type, and
		// the reached types were registered first.
		admin, err := listPage(ctx, srv.url, srv.apiKey, p.query)
		if err != nil {
			return fmt.Errorf("%s, admin key: %w", p.name, err)
		}
		mine, err := listPage(ctx, srv.url, restricted, p.query)
		if err != nil {
			return fmt.Errorf("%s, restricted key: %w", p.name, err)
		}
		if admin != mine {
			return fmt.Errorf("%s: the restricted key's page is not the admin key's", p.name)
		}
	}
	fmt.Fprintf(os.Stderr, "measuring (%d to %d samples of each figure)...\n", listingMinSamples, listingSamples)
	sampling := time.Now()
	for r := 0; r < listingSamples && (r < listingMinSamples || time.Since(sampling) < listingSampleTime); r++ {
		for _, p := range pages {
			for _, fig := range []struct {
				name, key string
				count     int
			}{{"admin", srv.apiKey, 1}, {"restricted", restricted, 1}, {"parallel", restricted, listingParallel}} {
				m, err := timeListings(ctx, srv, fig.key, p.query, fig.count)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", p.name, fig.name, err)
				}
				b.res.add(p.name+"_"+fig.name, "", m)
			}
		}
	}

	w := os.Stdout
	fmt.Fprintf(w, "devreg-bench listing-load: %s, %s; %d devices of prefix big in %d types (the restricted key's), %d of %d other types; %d CPUs; took %s\n",
		database, b.bin, n, listingTypes, n/4, listingOtherTypes, runtime.NumCPU(), time.Since(began).Round(time.Second))
	fmt.Fprintf(w, "Each figure: the median of %d samples [least–greatest] on an otherwise idle server; server CPU per request (10 ms ticks).\n",
		len(b.res.byName["prefix_admin"].runs))
	fmt.Fprintf(w, "\n%-72s %-28s %-14s %s\n", "GET /api/v1/devices?...", "ms", "server_cpu_ms", "ratio_to_admin")
	for _, p := range pages {
		admin := spreadOf(b.res.byName[p.name+"_admin"].values()).med
		for _, fig := range []struct{ key, label string }{
			{"admin", "admin key"},
			{"restricted", "restricted key"},
			{"parallel", fmt.Sprintf("%d restricted at once (all done)", listingParallel)},
		} {
			s := b.res.byName[p.name+"_"+fig.key]
			cpu := spreadOf(s.pick(func(m measure) float64 { return m.cpu * 1000 })).med
			fmt.Fprintf(w, "%-72s %-28s %-14.0f %.1f\n", p.label+", "+fig.label, spreadOf(s.values()).format(1), cpu, spreadOf(s.values()).med/admin)
		}
	}
	return nil
}

// timeListings lists the same page count times at once with key, once the server is idle, and
// returns the time until all are done, in ms, and the server's CPU time per listing.
func timeListings(ctx context.Context, srv *server, key, query string, count int) (measure, error) {
	pid := srv.cmd.Process.Pid
	settle(pid)
	cpu := cpuSeconds(pid)
	start := time.Now()
	errs := make(chan error, count)
	var wg sync.WaitGroup
	for range count {
		wg.Go(func() {
			if _, err := listPage(ctx, srv.url, key, query); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	m := measure{value: ms(time.Since(start)), cpu: (cpuSeconds(pid) - cpu) / float64(count)}
	close(errs)
	return m, <-errs
}

// fillListingRegistry registers the devices of listing-load and returns the types the
// restricted key reaches. Each reached type's devices are one request, their IDs every
// listingTypes-th of the prefix's, so that the types interleave in ID order.
func fillListingRegistry(ctx context.Context, srv *server, n int) ([]string, error) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	register := func(name string, ids func(yield func(string))) (string, error) {
		typeID, err := srv.newType(ctx, name)
		if err != nil {
			return "", err
		}
		var body strings.Builder
		ids(func(id string) { fmt.Fprintf(&body, "%s, %s,\n", id, randText(rng, 24)) })
		_, err = srv.c.RegisterCSV(ctx, typeID, strings.NewReader(body.String()), client.RegisterOptions{})
		return typeID, err
	}
	var reached []string
	for k := range listingTypes {
		typeID, err := register(fmt.Sprintf("reached %d", k), func(yield func(string)) {
			for i := k; i < n; i += listingTypes {
				yield(fmt.Sprintf("big-%08d", i))
			}
		})
		if err != nil {
			return nil, err
		}
		reached = append(reached, typeID)
	}
	others := n / 4
	for k := range listingOtherTypes {
		if _, err := register(fmt.Sprintf("other %d", k), func(yield func(string)) {
			for i := k; i < others; i += listingOtherTypes {
				yield(fmt.Sprintf("oth-%08d", i))
			}
		}); err != nil {
			return nil, err
		}
	}
	return reached, nil
}

// restrictedKey creates a read key restricted to types and returns it.
func restrictedKey(ctx context.Context, srv *server, types []string) (string, error) {
	body, err := json.Marshal(map[string]any{"name": "bench reader", "scope": devreg.ScopeRead, "device_type_ids": types})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", srv.url+"/api/v1/apikeys", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+srv.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var k struct{ Key string }
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil || resp.StatusCode != http.StatusCreated || k.Key == "" {
		return "", fmt.Errorf("create a restricted key: HTTP %d, %v", resp.StatusCode, err)
	}
	return k.Key, nil
}

// listPage lists one page of devices with key and returns the page's device IDs and next
// cursor, checking that it is a full page of 1,000 with a next one.
func listPage(ctx context.Context, serverURL, key, query string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", serverURL+"/api/v1/devices?"+query, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, body[:min(len(body), 300)])
	}
	var page struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
		} `json:"devices"`
		NextCursor string `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return "", err
	}
	if len(page.Devices) != 1000 || page.NextCursor == "" {
		return "", fmt.Errorf("%d devices, next cursor %q; want a full page of 1000 and a next one", len(page.Devices), page.NextCursor)
	}
	var ids strings.Builder
	for _, d := range page.Devices {
		ids.WriteString(d.DeviceID + "\n")
	}
	return ids.String() + page.NextCursor, nil
}
