package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"

	"devreg/internal/pgtest"
)

// TestSnapshotsAreOne: the transactions beginSnapshots begins on several connections read one
// snapshot, while a writer of another process (another DB on the same database, which does not
// take this one's turns) commits as fast as it can: every connection counts the same rows.
func TestSnapshotsAreOne(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s, other := openForTest(t, url), openForTest(t, url)
		stop, done := make(chan struct{}), make(chan error, 1)
		go func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if _, err := other.h.ExecContext(ctx, `INSERT INTO failures (key, window_start, count) VALUES (?, 0, 1)`, fmt.Sprint("k", i)); err != nil {
					done <- err
					return
				}
			}
		}()
		stopWriter := sync.OnceValue(func() error { close(stop); return <-done })
		t.Cleanup(func() { stopWriter() })
		var first, last int
		alone := 0
		for round := range 300 {
			counts, err := snapshotCounts(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if counts == nil {
				// Another process's writer held the write lock past snapshotLockWait (on
				// SQLite): one snapshot alone, which is one snapshot.
				alone++
				continue
			}
			if counts[1] != counts[0] || counts[2] != counts[0] {
				t.Fatalf("round %d: the snapshots counted %v rows: not one snapshot", round, counts)
			}
			if round == 0 {
				first = counts[0]
			}
			last = counts[0]
		}
		if err := stopWriter(); err != nil {
			t.Fatal(err)
		}
		if alone > 100 {
			t.Fatalf("%d rounds of 300 began one snapshot alone, with no writer of this process at work", alone)
		}
		if last-first < 300 {
			t.Fatalf("the writer committed %d rows during 300 rounds: too few to tell one snapshot from several", last-first)
		}
	})
}

// snapshotCounts counts the rows of failures in each of three transactions that beginSnapshots
// begins together, or returns no counts when it began one alone.
func snapshotCounts(ctx context.Context, s *DB) ([]int, error) {
	conns := make([]*sql.Conn, 0, 3)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	txs, end, err := s.d.beginSnapshots(ctx, s, conns)
	if err != nil {
		return nil, err
	}
	defer end() // before the connections close: a Conn's Close waits for its transaction to end
	if len(txs) != len(conns) {
		return nil, nil
	}
	counts := make([]int, len(txs))
	for i, tx := range txs {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM failures`).Scan(&counts[i]); err != nil {
			return nil, err
		}
	}
	return counts, nil
}
