package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"devreg/client"
	"devreg/internal/pgtest"
)

// TestKillDuringRegistration kills the server (SIGKILL) while it registers a large batch, at
// moments spread over the time such a request takes (the last ones fall in its final write), and
// checks after a restart that the batch is there whole or not at all, and that the counters
// agree with the rows.
func TestKillDuringRegistration(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testKillDuringRegistration(t, "--database", url) })
}

func testKillDuringRegistration(t *testing.T, dbArgs ...string) {
	const n = 100_000
	ctx := context.Background()
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	lot := func(round int) string {
		var file strings.Builder
		for i := range n {
			fmt.Fprintf(&file, "unit-%d-%07d, secret-for-unit-%07d,\n", round, i, i)
		}
		return file.String()
	}
	// How long one such request takes here, unkilled.
	url, srv := serve(t, dir, dbArgs...)
	c := client.New(url, acme.APIKey)
	name := "Timing"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot(0)), client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	srv.Process.Kill()
	srv.Wait()

	for round, share := range []float64{0.5, 0.8, 0.9, 0.97} {
		round++
		delay := time.Duration(float64(took) * share)
		file := lot(round)
		url, srv := serve(t, dir, dbArgs...)
		c := client.New(url, acme.APIKey)
		name := fmt.Sprintf("Round %d", round)
		dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(file), client.RegisterOptions{})
			done <- err
		}()
		time.Sleep(delay)
		srv.Process.Kill()
		srv.Wait()
		<-done

		url, srv = serve(t, dir, dbArgs...)
		c = client.New(url, acme.APIKey)
		got, err := c.DeviceType(ctx, dt.ID)
		if err != nil {
			t.Fatal(err)
		}
		rows := countDevices(t, c, dt.ID)
		if rows != 0 && rows != n || int64(rows) != got.DeviceCount {
			t.Errorf("killed after %v: %d devices listed, device_count %d; want 0 or %d, and equal", delay, rows, got.DeviceCount, n)
		}
		t.Logf("killed after %v: %d of %d devices registered", delay, rows, n)
		res, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(file), client.RegisterOptions{})
		if err != nil || res.Created+res.Unchanged != n {
			t.Errorf("resending after the kill: %+v, %v", res, err)
		}
		srv.Process.Kill()
		srv.Wait()
	}
}
