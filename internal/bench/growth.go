package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"devreg/client"
	"devreg/credential"
)

// growthFigures registers batches of shuffled device IDs one after another into a registry that
// grows with each, and returns the time of each batch.
func growthFigures(ctx context.Context, c *client.Client, typeID string, batches, size int) ([]time.Duration, error) {
	ids := rand.Perm(batches * size)
	var times []time.Duration
	for b := range batches {
		var sb strings.Builder
		for _, i := range ids[b*size : (b+1)*size] {
			fmt.Fprintf(&sb, "%s, %s,\n", deviceID("g", i), credential.RandomString(24))
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

// pageTime returns the mean time to list one page of 100 devices of a type, starting after the
// position after in registration order ("s" and a sequence number, as the server's cursors
// hold; "" for the first page).
func pageTime(ctx context.Context, serverURL, key, typeID, after string, rounds int) (time.Duration, error) {
	u := serverURL + "/api/v1/devices?limit=100&device_type_id=" + typeID
	if after != "" {
		u += "&cursor=" + base64.RawURLEncoding.EncodeToString([]byte(after))
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
