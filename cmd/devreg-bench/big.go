package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"time"
)

// bigBatches is how many batches of n devices big registers on PostgreSQL.
const bigBatches = 10

// runBig registers bigBatches batches of cfg.n UUID-like devices one after another on a server
// with a PostgreSQL database of its own, and measures the device token rate against /healthz on
// that server twice: with only the devices the tokens are asked for registered, and again once
// all the batches are.
func runBig(cfg config) error {
	if cfg.pg == "" {
		return fmt.Errorf("big needs a PostgreSQL server: -postgres URL or DEVREG_TEST_POSTGRES")
	}
	if err := pingPostgres(cfg.pg); err != nil {
		return err
	}
	began := time.Now()
	b, err := newBench(cfg, "")
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	// The devices the tokens are asked for, registered first.
	b.idsA, b.secretsA = make([]string, tokenDevices), make([]string, tokenDevices)
	for i := range tokenDevices {
		b.idsA[i], b.secretsA[i] = uuidLike(rng), randText(rng, 24)
	}
	tokenFile, err := writeLines(b.dir, "tokens.csv", tokenDevices, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", b.idsA[i], b.secretsA[i]) })
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "generating %d batches of %d devices...\n", bigBatches, cfg.n)
	batches := make([]string, bigBatches)
	for k := range batches {
		if batches[k], err = writeLines(b.dir, fmt.Sprintf("big-%02d.csv", k+1), cfg.n, func(w *bufio.Writer, _ int) {
			fmt.Fprintf(w, "%s, %s,\n", uuidLike(rng), randText(rng, 24))
		}); err != nil {
			return err
		}
	}

	ctx := context.Background()
	dbURL, drop, err := b.newPGDatabase(ctx)
	if err != nil {
		return err
	}
	defer drop()
	srv, err := b.startServer(ctx, "big", "--database", dbURL)
	if err != nil {
		return err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench big")
	if err != nil {
		return err
	}
	if _, err := srv.register(ctx, "register_token_devices", typeID, tokenFile, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == tokenDevices }); err != nil {
		return err
	}
	b.n = tokenDevices // rateRun asks for tokens of the first n devices of idsA
	fmt.Fprintf(os.Stderr, "rates with %d devices registered...\n", tokenDevices)
	if err := b.rateRun(ctx, srv); err != nil {
		return err
	}
	var first float64
	for k, path := range batches {
		fmt.Fprintf(os.Stderr, "  batch %d of %d\n", k+1, bigBatches)
		name := fmt.Sprintf("pg_batch_%02d", k+1)
		m, err := srv.register(ctx, name, typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(cfg.n) })
		if err != nil {
			return err
		}
		if k == 0 {
			first = m.value
		}
		m.ratio = m.value / first
		b.res.add(name, "pg_batch_01", m)
	}
	fmt.Fprintf(os.Stderr, "rates with %d devices registered...\n", tokenDevices+bigBatches*cfg.n)
	if err := b.rateRun(ctx, srv); err != nil {
		return err
	}
	b.reportBig(os.Stdout, cfg.n, time.Since(began))
	return nil
}

// reportBig prints the batch times and the rates before and after them.
func (b *bench) reportBig(w io.Writer, n int, took time.Duration) {
	fmt.Fprintf(w, "devreg-bench big: %d batches of %d UUID-like devices on PostgreSQL (%s), %d CPUs; rates: %s, %s each; took %s\n",
		bigBatches, n, postgresVersion(context.Background(), b.pg), runtime.NumCPU(), b.load, b.rateTime, took.Round(time.Second))
	fmt.Fprintf(w, "\n%-40s %10s %10s %12s %8s\n", "batch", "seconds", "devices/s", "ratio_to_01", "rss_MB")
	for k := range bigBatches {
		m := b.res.byName[fmt.Sprintf("pg_batch_%02d", k+1)].runs[0]
		fmt.Fprintf(w, "%-40s %10.2f %10.0f %12.2f %8.0f\n", fmt.Sprintf("batch %d (%d already registered)", k+1, tokenDevices+k*n), m.value, float64(n)/m.value, m.ratio, m.rssMB)
	}
	fmt.Fprintf(w, "\n%-22s %22s %22s %8s\n", "rate (requests/s)", fmt.Sprintf("%d devices", tokenDevices), fmt.Sprintf("%d devices", tokenDevices+bigBatches*n), "ratio")
	for _, name := range rateNames {
		runs := b.res.byName[name].runs
		fmt.Fprintf(w, "%-22s %22.0f %22.0f %8.2f\n", name, runs[0].value, runs[1].value, runs[1].value/runs[0].value)
	}
	tok := b.res.byName["token_issue"].runs
	fmt.Fprintf(w, "\ntokens/healthz: %.2f with %d devices, %.2f with %d\n", tok[0].ratio, tokenDevices, tok[1].ratio, tokenDevices+bigBatches*n)
}
