package store

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// stmtQueue gathers statements of a transaction (written with '?' placeholders) to run them
// together at flush, each statement's callback seeing its result in order. PostgreSQL gets them
// in one pipeline: one round trip for all, where a transaction that runs them one by one pays
// one each, and a transaction that others wait for (an account's first connections) pays them
// in everybody's time. SQLite runs them one after another, which costs the same in the process.
// A statement's or a callback's error stops the flush and is what it returns; the transaction is
// then rolled back.
type stmtQueue interface {
	// query queues a statement whose rows row scans, one call per row.
	query(query string, args []any, row func(scan func(dest ...any) error) error)
	// exec queues a statement that returns no rows; affected (if not nil) sees how many it
	// changed.
	exec(query string, args []any, affected func(n int64) error)
	// flush runs what is queued.
	flush(ctx context.Context) error
}

// queued is a statement of a stmtQueue.
type queued struct {
	query    string
	args     []any
	row      func(scan func(dest ...any) error) error
	affected func(n int64) error
}

// inQueuedTx runs fn in a transaction whose statements fn queues on q and runs with q.flush, and
// once fn has returned nil, runs what it left queued and commits. On PostgreSQL the BEGIN goes
// out with fn's first flush, and the COMMIT in a round trip of its own once the callbacks of the
// last flush have agreed (in the same pipeline it would commit what a callback refuses).
func (s *DB) inQueuedTx(ctx context.Context, fn func(q stmtQueue) error) error {
	if !s.pg {
		return s.inTx(ctx, func(tx handle) error {
			q := &handleQueue{h: tx}
			if err := fn(q); err != nil {
				return err
			}
			return q.flush(ctx)
		})
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		c := dc.(*stdlib.Conn).Conn()
		q := &pipelineQueue{conn: c}
		q.exec("BEGIN", nil, nil)
		err := fn(q)
		if err == nil {
			err = q.flush(ctx)
		}
		if err == nil {
			var tag pgconn.CommandTag
			if tag, err = c.Exec(ctx, "COMMIT"); err == nil && tag.String() != "COMMIT" {
				err = pgx.ErrTxCommitRollback // the transaction had failed: COMMIT rolled it back
			}
			if err == nil {
				return nil
			}
		}
		// Should the ROLLBACK fail too, the driver does not reuse a connection that comes back
		// to the pool in a transaction (stdlib.Conn.ResetSession).
		c.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	})
}

// stmtList is what a stmtQueue has queued.
type stmtList struct{ stmts []queued }

func (l *stmtList) query(query string, args []any, row func(scan func(dest ...any) error) error) {
	l.stmts = append(l.stmts, queued{query: query, args: args, row: row})
}

func (l *stmtList) exec(query string, args []any, affected func(n int64) error) {
	l.stmts = append(l.stmts, queued{query: query, args: args, affected: affected})
}

// run takes the statements queued and runs them in order: exec runs one that returns no rows
// and says how many it changed, rows one whose rows go to its callback.
func (l *stmtList) run(exec func(st queued) (int64, error), rows func(st queued) error) error {
	stmts := l.stmts
	l.stmts = nil
	for _, st := range stmts {
		if st.row != nil {
			if err := rows(st); err != nil {
				return err
			}
			continue
		}
		n, err := exec(st)
		if err != nil {
			return err
		}
		if st.affected != nil {
			if err := st.affected(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// eachRow passes each of rows (database/sql's or pgx's) to row.
func eachRow(rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}, row func(scan func(dest ...any) error) error) error {
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// handleQueue runs its statements on a transaction's handle, one after another.
type handleQueue struct {
	stmtList
	h handle
}

func (q *handleQueue) flush(ctx context.Context) error {
	return q.run(func(st queued) (int64, error) {
		res, err := q.h.ExecContext(ctx, st.query, st.args...)
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}, func(st queued) error {
		rows, err := q.h.QueryContext(ctx, st.query, st.args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		return eachRow(rows, st.row)
	})
}

// pipelineQueue sends its statements to PostgreSQL in one pipeline.
type pipelineQueue struct {
	stmtList
	conn *pgx.Conn
}

func (q *pipelineQueue) flush(ctx context.Context) error {
	if len(q.stmts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	pg := handle{pg: true}
	for _, st := range q.stmts {
		b.Queue(pg.bind(st.query), st.args...)
	}
	br := q.conn.SendBatch(ctx, b)
	err := q.run(func(queued) (int64, error) {
		tag, err := br.Exec()
		return tag.RowsAffected(), err
	}, func(st queued) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		return eachRow(rows, st.row)
	})
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return err
}
