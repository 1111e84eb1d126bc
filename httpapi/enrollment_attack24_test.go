package httpapi_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

)

// TestAttack24OverlapSearchHoldsNoLock: comparing a new pattern with the type's other groups
// may take tens of milliseconds per group (enrollpattern.Overlap searches up to 262,144 states),
// and it ran under the type's row lock, which on SQLite is the write lock of the whole server.
// An administrator with a dozen groups of patterns like ^(?:[0-9]?){170}a$ (each taken, none
// overlapping) made every create or PATCH of a pattern hold the lock for several hundred
// milliseconds (seconds under -race): every other account's writes waited that long, on
// PostgreSQL every write of the type. Fixed: the comparisons run before the lock, and under it
// only patterns that appeared meanwhile are compared. A write of another account, and a change
// to the same type, sent while a heavy create is comparing, must now finish first.
func TestAttack24OverlapSearchHoldsNoLock(t *testing.T) {
	forEachStore(t, testAttack24OverlapSearchHoldsNoLock)
}

func testAttack24OverlapSearchHoldsNoLock(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	heavy := func(c rune) string { return fmt.Sprintf(`^(?:[0-9]?){170}%c$`, c) }
	const groups = 12
	for i := range groups {
		e.mustDo(t, e.admin, "POST", groupsPath(dt.ID), fmt.Sprintf(`{"name": "Heavy %d", "id_pattern": %q, "max_devices": 5}`, i, heavy(rune('a'+i))), 201, nil)
	}
	for _, tc := range []struct {
		name  string
		light req
	}{
		{"other-account", req{key: e.other, method: "POST", path: "/api/v1/devicetypes", body: `{"name": "Elsewhere"}`}},
		{"same-type", req{key: e.admin, method: "PATCH", path: "/api/v1/devicetypes/" + dt.ID, body: `{"description": "renamed meanwhile"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var heavyDone, lightDone time.Time
			var heavyStatus int
			var heavyBody []byte
			var wg sync.WaitGroup
			wg.Go(func() {
				// Overlaps none of the others, so it is compared with every one of them.
				heavyStatus, heavyBody = e.send(t, req{key: e.admin, method: "POST", path: groupsPath(dt.ID),
					body: fmt.Sprintf(`{"name": "Heavy %s", "id_pattern": %q, "max_devices": 5}`, tc.name, heavy(rune('A'+len(tc.name)%26)))})
				heavyDone = time.Now()
			})
			time.Sleep(60 * time.Millisecond)
			start := time.Now()
			status, b := e.send(t, tc.light)
			lightDone = time.Now()
			wg.Wait()
			if status/100 != 2 {
				t.Fatalf("%s %s = %d %s", tc.light.method, tc.light.path, status, b)
			}
			if heavyStatus != 201 {
				t.Fatalf("heavy create = %d %s", heavyStatus, heavyBody)
			}
			if lightDone.After(heavyDone) {
				t.Errorf("%s %s waited %v, until the create comparing %d patterns had ended: the comparison holds the lock",
					tc.light.method, tc.light.path, lightDone.Sub(start), groups)
			}
		})
	}
}
