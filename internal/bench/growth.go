package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/client"
	"devreg/credential"
)

// growthRuns is how many times the growth figures are measured; each batch's figure is its
// median time, so that one slow moment of a shared machine does not make or break the ratio.
const growthRuns = 3

// growthFigures registers batches of shuffled device IDs one after another into a registry that
// grows with each, and returns the median time of each batch over growthRuns runs. Each run
// registers its own range of device IDs under a device type of its own, into the same registry.
func growthFigures(ctx context.Context, c *client.Client, batches, size int) ([]time.Duration, error) {
	runs := make([][]time.Duration, batches)
	for r := range growthRuns {
		name := fmt.Sprintf("bench growth %d", r+1)
		dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
		if err != nil {
			return nil, err
		}
		times, err := growthRun(ctx, c, dt.ID, fmt.Sprintf("g%d", r+1), batches, size)
		if err != nil {
			return nil, err
		}
		for b, t := range times {
			runs[b] = append(runs[b], t)
		}
	}
	medians := make([]time.Duration, batches)
	for b, ts := range runs {
		medians[b] = median(ts)
	}
	return medians, nil
}

// median returns the middle one of an odd number of durations.
func median(ds []time.Duration) time.Duration {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// growthRun registers batches of shuffled device IDs with prefix under a device type and returns
// the time of each batch.
func growthRun(ctx context.Context, c *client.Client, typeID, prefix string, batches, size int) ([]time.Duration, error) {
	ids := rand.Perm(batches * size)
	var times []time.Duration
	for b := range batches {
		var sb strings.Builder
		for _, i := range ids[b*size : (b+1)*size] {
			fmt.Fprintf(&sb, "%s, %s,\n", deviceID(prefix, i), credential.RandomString(24))
		}
		start := time.Now()
		res, err := c.RegisterCSV(ctx, typeID, strings.NewReader(sb.String()), client.RegisterOptions{})
		if err != nil {
			return nil, fmt.Errorf("growth batch %d: %w", b+1, err)
		}
		if res.Created != int64(size) {
			return nil, fmt.Errorf("growth batch %d: unexpected result %+v", b+1, res)
		}
		times = append(times, time.Since(start))
	}
	return times, nil
}

// pageTime returns the mean time to list one page of 100 devices of a type, starting at after
// (zero for the first page).
func pageTime(ctx context.Context, serverURL, key, typeID string, after devreg.Cursor, rounds int) (time.Duration, error) {
	u := serverURL + "/api/v1/devices?limit=100&device_type_id=" + typeID
	if !after.IsZero() {
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
