package store

import (
	"context"
	"errors"
	"testing"

	"devreg/internal/pgtest"
)

// TestQueuedTxWritesAllOrNothing: a transaction whose statements go out together (in one
// pipeline on PostgreSQL) writes nothing when a statement fails or a callback refuses what a
// statement did, even one of an earlier flush; and the connection it ran on serves the next
// transaction (on PostgreSQL, out of the failed transaction).
func TestQueuedTxWritesAllOrNothing(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := openForTest(t, url)
		s.db.SetMaxOpenConns(1) // every transaction on the one connection
		insert := func(q stmtQueue, key string) {
			q.exec(`INSERT INTO failures (key, window_start, count) VALUES (?, 0, 1)`, []any{key}, nil)
		}
		count := func(key string) (n int) {
			t.Helper()
			if err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM failures WHERE key = ?`, key).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		refused := errors.New("refused")
		for name, fn := range map[string]func(q stmtQueue) error{
			"a statement fails": func(q stmtQueue) error {
				insert(q, "written")
				insert(q, "twice")
				insert(q, "twice")
				insert(q, "after")
				return nil
			},
			"a callback refuses": func(q stmtQueue) error {
				insert(q, "written")
				q.exec(`UPDATE failures SET count = 2 WHERE key = ?`, []any{"none"}, func(n int64) error {
					if n == 0 {
						return refused
					}
					return nil
				})
				insert(q, "after")
				return nil
			},
			"refused after a flush": func(q stmtQueue) error {
				insert(q, "written")
				var n int
				q.query(`SELECT count(*) FROM failures WHERE key = ?`, []any{"written"}, func(scan func(...any) error) error { return scan(&n) })
				if err := q.flush(ctx); err != nil {
					return err
				}
				if n != 1 {
					t.Errorf("the transaction read %d rows it wrote; want 1", n)
				}
				return refused
			},
		} {
			if err := s.inQueuedTx(ctx, fn); err == nil {
				t.Errorf("%s: the transaction committed", name)
			}
			if err := s.inQueuedTx(ctx, func(q stmtQueue) error { insert(q, name); return nil }); err != nil || count(name) != 1 {
				t.Errorf("%s: the next transaction on the connection: %v, %d rows; want it written", name, err, count(name))
			}
			// Not even by the next transaction's commit.
			for _, key := range []string{"written", "twice", "after"} {
				if n := count(key); n != 0 {
					t.Errorf("%s: %d rows of %q were written; want none", name, n, key)
				}
			}
		}
	})
}
