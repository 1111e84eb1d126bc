package store

import (
	"context"
	"database/sql"
	"fmt"
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
		var first, last int
		alone := 0
		for round := range 300 {
			conns := make([]*sql.Conn, 3)
			for i := range conns {
				c, err := s.db.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			txs, end, err := s.d.beginSnapshots(ctx, s, conns)
			if err != nil {
				t.Fatal(err)
			}
			if len(txs) != len(conns) {
				// Another process's writer held the write lock past snapshotLockWait (on
				// SQLite): one snapshot alone, which is one snapshot. (A Conn's Close waits for
				// its transaction to end: end first.)
				alone++
				end()
				for i := range conns {
					conns[i].Close()
				}
				continue
			}
			counts := make([]int, len(txs))
			for i, tx := range txs {
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM failures`).Scan(&counts[i]); err != nil {
					t.Fatal(err)
				}
			}
			end()
			for i := range conns {
				conns[i].Close()
			}
			if counts[1] != counts[0] || counts[2] != counts[0] {
				t.Fatalf("round %d: the snapshots counted %v rows: not one snapshot", round, counts)
			}
			if round == 0 {
				first = counts[0]
			}
			last = counts[0]
		}
		close(stop)
		if err := <-done; err != nil {
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
