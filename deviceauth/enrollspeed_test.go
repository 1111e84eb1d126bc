package deviceauth_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg/credential"
)

// TestEnrollmentSpeed: 10,000 devices connecting for the first time, from 64 clients at once,
// are all registered, in at most three times what 10,000 token requests of registered devices
// take on the same server (the bound: a first connection costs at most 3× a normal
// token request), and devreg check is clean afterwards.
func TestEnrollmentSpeed(t *testing.T) { forEachStore(t, testEnrollmentSpeed) }

func testEnrollmentSpeed(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_speed", pattern: `^S-[0-9]+$`, maxDevices: 100000, maxPerHour: 100000, temporary: true})
	const n, clients = 10000, 64
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	t.Cleanup(hc.CloseIdleConnections)
	form := e.form().Encode()
	run := func() (time.Duration, map[int]int) {
		var next atomic.Int64
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
		start := time.Now()
		for range clients {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= n {
						return
					}
					id := fmt.Sprintf("S-%d", i)
					r, _ := http.NewRequest("POST", e.url+"/device/v1/token", strings.NewReader(form))
					r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(credential.DeriveSecret(key, id)))
					status := 0
					if resp, err := hc.Do(r); err == nil {
						status = resp.StatusCode
						resp.Body.Close()
					}
					mu.Lock()
					statuses[status]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return time.Since(start), statuses
	}
	first, statuses := run()
	if statuses[http.StatusOK] != n {
		t.Fatalf("%d first connections were answered %v; want %d × 200", n, statuses, n)
	}
	normal, statuses := run() // the same devices again: now registered, a normal token request each
	if statuses[http.StatusOK] != n {
		t.Fatalf("%d token requests were answered %v; want %d × 200", n, statuses, n)
	}
	t.Logf("%d first connections: %v; %d token requests of registered devices: %v (%.1f×)", n, first, n, normal, float64(first)/float64(normal))
	if first > 3*normal {
		t.Errorf("%d first connections took %v, more than 3× the %v of as many token requests", n, first, normal)
	}
	dt, err := e.admin.DeviceType(t.Context(), e.typeID)
	if err != nil || dt.DeviceCount != 6+n {
		t.Errorf("device_count = %d, %v; want %d", dt.DeviceCount, err, 6+n)
	}
	checkClean(t, db)
}
