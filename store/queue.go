package store

import "context"

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
// once fn has returned nil, runs what it left queued and commits.
func (s *DB) inQueuedTx(ctx context.Context, fn func(q stmtQueue) error) error {
	return s.d.inQueuedTx(ctx, s, fn)
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
