package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"time"

	"devreg"
)

// growthBatches is how many batches of a tenth of n devices the growth figures register, one
// after another, into a registry that starts empty.
const growthBatches = 10

// growthRun registers the growth batches of UUID-like device IDs one after another on a server
// with an empty registry of its own, and records each batch's time and its ratio to the first;
// and the same of the sqlite3 shell importing the same rows, batch by batch, into the smallest
// table.
func (b *bench) growthRun(ctx context.Context, run int) error {
	base, err := importSmallest(b.dir, b.files.growthBase)
	if err != nil {
		return err
	}
	for i, t := range base.times {
		b.res.add(fmt.Sprintf("sqlite3_import_batch_%02d", i+1), "sqlite3_import_batch_01", measure{value: t.Seconds(), ratio: t.Seconds() / base.times[0].Seconds()})
	}
	srv, err := b.startServer(ctx, fmt.Sprintf("run%d-growth", run+1))
	if err != nil {
		return err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench growth")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "  registering %d batches of %d UUID-like IDs...\n", growthBatches, b.n/growthBatches)
	var first float64
	for i, path := range b.files.growth {
		name := fmt.Sprintf("growth_batch_%02d", i+1)
		m, err := srv.register(ctx, name, typeID, path, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == int64(b.n/growthBatches) })
		if err != nil {
			return err
		}
		if i == 0 {
			first = m.value
		}
		m.ratio = m.value / first
		b.res.add(name, "growth_batch_01", m)
	}
	return nil
}

// median returns the middle one of an odd number of durations.
func median(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// pageTime returns the mean time to list one page of 100 devices of a type, starting after the
// device with registration number afterSeq (0 for the first page).
func pageTime(ctx context.Context, serverURL, key, typeID string, afterSeq int64, rounds int) (time.Duration, error) {
	u := serverURL + "/api/v1/devices?limit=100&device_type_id=" + typeID
	if after := (devreg.Cursor{Seq: afterSeq}); !after.IsZero() {
		u += "&cursor=" + after.String()
	}
	start := time.Now()
	for range rounds {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("listing answered %d", resp.StatusCode)
		}
	}
	return time.Since(start) / time.Duration(rounds), nil
}
