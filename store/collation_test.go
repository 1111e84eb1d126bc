package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devreg"
	"devreg/internal/pgtest"
)

// TestReplaceTakesBatchesInMarkSeensOrder: on a PostgreSQL database whose default collation is
// not bytewise (ICU en-US here, a usual initdb locale elsewhere), a registration that replaces
// devices of several batches locks those batches in the same order as a write of devices seen
// takes them: by ID, byte by byte. It used to lock them in the database's collation ("bat_d…"
// before "bat_Z…", where bytes put "Z" first), so a write of first sightings holding "bat_Z…"
// and wanting "bat_d…" deadlocked with it, and one of the two failed: the registration with a
// 500, or the sightings of up to 500 devices after their retries. The test holds a transaction
// that takes the two batches in MarkSeen's order (the first, then the second once the
// registration waits) and checks that both it and the registration go through.
func TestReplaceTakesBatchesInMarkSeensOrder(t *testing.T) {
	e := newSeenEnv(t, pgtest.NewDatabase(t, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"))
	ctx := context.Background()
	// Batch IDs are random: register lots until two of them sort one way by bytes and the other
	// way in the database (about one pair in four does).
	devicesOf := map[string][]string{}
	var first, second string // first < second bytewise; the database sorts second first
	for i := 0; first == ""; i++ {
		if i == 100 {
			t.Fatal("no two of 100 batch IDs sort differently by bytes and in the database's collation (ICU en-US)")
		}
		devices := ids(fmt.Sprintf("lot%d", i), 2)
		res, err := e.register(ctx, devices, "1", devreg.RegisterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		devicesOf[res.BatchID] = devices
		rows, err := e.raw.Query(`SELECT id FROM batches ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		var collated []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			collated = append(collated, id)
		}
		rows.Close()
		for j := 1; j < len(collated) && first == ""; j++ {
			if collated[j] < collated[j-1] {
				first, second = collated[j], collated[j-1]
			}
		}
	}

	// A write of first sightings, by MarkSeen's order, holds the first batch...
	sightings, err := e.raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sightings.Rollback()
	const count = `UPDATE batches SET connected_count = connected_count + 0 WHERE id = $1`
	if _, err := sightings.Exec(count, first); err != nil {
		t.Fatal(err)
	}
	// ... while a registration replaces a device of each batch,
	done := make(chan error, 1)
	go func() {
		_, err := e.register(ctx, []string{devicesOf[first][0], devicesOf[second][0]}, "2", devreg.RegisterOptions{OnConflict: devreg.ConflictReplace})
		done <- err
	}()
	e.waitForLock(t, done, "the registration", "the first batch's row")
	// ... and the write goes on to the second batch, which the registration must not hold.
	if _, err := sightings.Exec(count, second); err != nil {
		t.Errorf("the write of sightings, taking %s after %s: %v", second, first, err)
	}
	if err := sightings.Commit(); err != nil {
		t.Errorf("commit the write of sightings: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("the registration replacing devices of %s and %s: %v", first, second, err)
	}
	e.checkCounters(t, "after both")
}

// waitForLock returns once a connection to the database waits for a lock, which what (whose
// error done receives when it returns) must not do before then: it waits for held.
func (e *seenEnv) waitForLock(t *testing.T, done <-chan error, what, held string) {
	t.Helper()
	for waiting := 0; waiting == 0; {
		select {
		case err := <-done:
			t.Fatalf("%s returned (%v) while %s was held", what, err, held)
		case <-time.After(10 * time.Millisecond):
		}
		waiting = e.count(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)
	}
}
