package deviceauth_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"devreg/credential"
	"devreg/internal/pgtest"
)

// TestManyFirstConnections: devices connecting for the first time, from 64 clients at once, are
// all registered (enrolments that arrive together are written together), each once, and log in
// as registered devices afterwards; devreg check is clean. How fast they are, against token
// requests of registered devices, is measured by make bench ENROLL=1, not here: a timed test
// fails on a busy machine.
func TestManyFirstConnections(t *testing.T) { pgtest.Each(t, testManyFirstConnections) }

func testManyFirstConnections(t *testing.T, database string) {
	e := newEnvWith(t, &env{db: database, configure: manyPending})
	db, keys := e.enrollDB(t)
	key := e.newGroup(t, db, keys, groupSpec{id: "eg_speed", pattern: `^S-[0-9]+$`, maxDevices: 100000, maxPerHour: 100000, temporary: true})
	const n, clients = 2000, 64
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	t.Cleanup(hc.CloseIdleConnections)
	form := e.form().Encode()
	run := func() map[int]int {
		var next atomic.Int64
		var mu sync.Mutex
		statuses := map[int]int{}
		var wg sync.WaitGroup
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
		return statuses
	}
	statuses := run()
	if statuses[http.StatusOK] != n {
		t.Fatalf("%d first connections were answered %v; want %d × 200", n, statuses, n)
	}
	statuses = run() // the same devices again: now registered, a normal token request each
	if statuses[http.StatusOK] != n {
		t.Fatalf("%d token requests were answered %v; want %d × 200", n, statuses, n)
	}
	dt, err := e.admin.DeviceType(t.Context(), e.typeID)
	if err != nil || dt.DeviceCount != 6+n {
		t.Errorf("device_count = %d, %v; want %d", dt.DeviceCount, err, 6+n)
	}
	checkClean(t, db)
}
