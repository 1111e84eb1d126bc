package store

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"devreg"
)

// copyDevices writes entries into PostgreSQL's devices table with one COPY, in the transaction
// open on the stage's connection, failing with a unique violation if one is registered.
func (st *Stage) copyDevices(ctx context.Context, plan devreg.RegistrationPlan, account int64, entries devreg.RegistrationEntries) error {
	rows, stop := make(chan []any, 4*stageChunk), make(chan struct{})
	src := &copySource{rows: rows}
	key, created := plan.KeyIDs[len(plan.KeyIDs)-1], micros(plan.Batch.CreatedAt)
	go func() {
		defer close(rows)
		err := entries.Replay(4*stageChunk, func(es []devreg.StagedEntry) error {
			for _, e := range es {
				hash, err := currentHash(plan, e)
				if err != nil {
					return err
				}
				select {
				case rows <- []any{plan.AccountID, account, e.DeviceID, plan.DeviceTypeID, plan.Batch.ID, "enabled", key, hash, created}:
				case <-stop:
					return context.Canceled
				}
			}
			return nil
		})
		src.setErr(err)
	}()
	err := st.conn.Raw(func(dc any) error {
		_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{"devices"},
			[]string{"account_id", "account_num", "device_id", "device_type_id", "batch_id", "status", "key_id", "secret_hash", "created_at"}, src)
		return err
	})
	close(stop)
	for range rows { // until the replay has ended
	}
	if err != nil {
		return err
	}
	return src.Err()
}

// copyAdd hands entries to the request's COPY, starting it with the first ones.
func (st *Stage) copyAdd(ctx context.Context, entries []devreg.StagedEntry) error {
	if st.copyRows == nil {
		st.copyRows, st.copyDone = make(chan []any, 4*stageChunk), make(chan struct{})
		go func() {
			defer close(st.copyDone)
			st.copyErr = st.conn.Raw(func(dc any) error {
				_, err := dc.(*stdlib.Conn).Conn().CopyFrom(ctx, pgx.Identifier{st.table},
					[]string{"idx", "line", "device_id", "hashes"}, &copySource{rows: st.copyRows})
				return err
			})
		}()
	}
	for _, e := range entries {
		hashes := e.Hashes
		if hashes == nil {
			hashes = []byte{}
		}
		select {
		case st.copyRows <- []any{int64(e.Index), int64(e.Line), e.DeviceID, hashes}:
		case <-st.copyDone:
			return st.endCopy()
		}
	}
	return nil
}

// endCopy ends the COPY, if one runs, and returns how it went.
func (st *Stage) endCopy() error {
	if st.copyRows == nil {
		return nil
	}
	select {
	case <-st.copyDone:
	default:
		close(st.copyRows)
		<-st.copyDone
	}
	st.copyRows = nil
	if st.copyErr != nil {
		return fmt.Errorf("copy into the stage: %w", st.copyErr)
	}
	return nil
}

// copySource feeds pgx's CopyFrom from a channel until it is closed.
type copySource struct {
	rows <-chan []any
	row  []any

	mu  sync.Mutex
	err error // why the rows ended early, if they did
}

func (c *copySource) setErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = err
}

func (c *copySource) Next() bool {
	row, ok := <-c.rows
	c.row = row
	return ok
}

func (c *copySource) Values() ([]any, error) { return c.row, nil }

// Err is asked when the rows end, and also when the COPY fails before they do.
func (c *copySource) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
