package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/pgtest"
)

func lot(from, to int, secretPrefix string) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "unit-%05d, %s-%05d,\n", i, secretPrefix, i)
	}
	return b.String()
}

// TestTwoServersOneDatabase runs two devreg servers on one PostgreSQL database, as behind a load
// balancer, and registers overlapping batches through both at once.
func TestTwoServersOneDatabase(t *testing.T) {
	ctx := context.Background()
	db := pgtest.NewDatabase(t)
	dir := t.TempDir() // both servers read the same key file from it
	acme := createAccount(t, dir, "Acme", "ops@acme.test", "--database", db)
	url1, _ := serve(t, dir, "--database", db)
	url2, _ := serve(t, dir, "--database", db)
	c1, c2 := client.New(url1, acme.APIKey), client.New(url2, acme.APIKey)
	name := "Meter"
	dt, err := c1.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		t.Fatal(err)
	}

	both := func(a, b string) (results [2]devreg.RegisterResult, errs [2]error) {
		var wg sync.WaitGroup
		for i, job := range []struct {
			c    *client.Client
			body string
		}{{c1, a}, {c2, b}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i], errs[i] = job.c.RegisterCSV(ctx, dt.ID, strings.NewReader(job.body), client.RegisterOptions{})
			}()
		}
		wg.Wait()
		return results, errs
	}

	// Overlapping lots with the same secrets: both succeed, and each device is created once.
	res, errs := both(lot(0, 3000, "same-secret"), lot(2000, 5000, "same-secret"))
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("same-secret overlap: %v, %v", errs[0], errs[1])
	}
	if created, unchanged := res[0].Created+res[1].Created, res[0].Unchanged+res[1].Unchanged; created != 5000 || unchanged != 1000 {
		t.Errorf("same-secret overlap: created %d, unchanged %d; want 5000 and 1000", created, unchanged)
	}

	// Overlapping lots with different secrets: one lands whole, the other is refused whole with
	// every conflicting device listed.
	res, errs = both(lot(5000, 7000, "secret-c"), lot(6000, 8000, "secret-d"))
	var ok, refused int
	for i := range 2 {
		var ce *client.Error
		switch {
		case errs[i] == nil && res[i].Created == 2000:
			ok++
		case errorsAs(errs[i], &ce) && ce.Status == 409 && ce.ProblemCount == 1000 && len(ce.Problems) == 1000:
			refused++
		default:
			t.Errorf("conflicting overlap, server %d: %+v, %v", i+1, res[i], errs[i])
		}
	}
	if ok != 1 || refused != 1 {
		t.Errorf("conflicting overlap: %d landed, %d refused; want one each", ok, refused)
	}

	// Each server sees every write, and the counters agree with the rows.
	for i, c := range []*client.Client{c1, c2} {
		got, err := c.DeviceType(ctx, dt.ID)
		if err != nil || got.DeviceCount != 7000 {
			t.Errorf("server %d: device_count = %d, %v; want 7000", i+1, got.DeviceCount, err)
		}
		n := countDevices(t, c, dt.ID)
		if n != 7000 {
			t.Errorf("server %d lists %d devices, want 7000", i+1, n)
		}
	}

	// A console session opened on one server works on the other.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, err := browser.PostForm(url1+"/login", url.Values{"email": {"ops@acme.test"}, "password": {"correct horse battery"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	u1, _ := url.Parse(url1)
	u2, _ := url.Parse(url2)
	jar.SetCookies(u2, jar.Cookies(u1))
	resp, err = browser.Get(url2 + "/devices?device_type_id=" + dt.ID)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "7,000 devices of type Meter") {
		t.Errorf("server 2 does not take server 1's session, or miscounts:\n%s", body[:min(len(body), 2000)])
	}
}

// countDevices lists every device of a type, page by page, and counts them.
func countDevices(t *testing.T, c *client.Client, typeID string) int {
	t.Helper()
	n := 0
	err := eachDevice(context.Background(), c, client.DeviceQuery{DeviceTypeID: typeID}, func(devreg.Device) error {
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
