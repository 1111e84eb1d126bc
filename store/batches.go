package store

import (
	"context"

	"devreg"
)

const batchColumns = `seq, id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status`

func scanBatch(row interface{ Scan(...any) error }) (devreg.Batch, int64, error) {
	var b devreg.Batch
	var seq, created int64
	err := row.Scan(&seq, &b.ID, &b.DeviceTypeID, &created, &b.CreatedBy, &b.Source, &b.Filename, &b.DeviceCount, &b.ConnectedCount, &b.Status)
	b.CreatedAt = fromMicros(created)
	return b, seq, err
}

// ListBatches returns up to f.Limit batches of the account, newest first, with the sequence
// number of each for the next page's cursor.
func (s *DB) ListBatches(ctx context.Context, accountID string, f devreg.BatchFilter) ([]devreg.Batch, []int64, error) {
	q, args, ok := s.batchesQuery(accountID, f)
	if !ok {
		return []devreg.Batch{}, []int64{}, nil
	}
	rows, err := s.h.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	batches, seqs := []devreg.Batch{}, []int64{}
	for rows.Next() {
		b, seq, err := scanBatch(rows)
		if err != nil {
			return nil, nil, err
		}
		batches, seqs = append(batches, b), append(seqs, seq)
	}
	return batches, seqs, rows.Err()
}

// batchesQuery is ListBatches' query and its arguments; ok is false when no batch can match.
// Several types (f.DeviceTypeIDs) are read each along its own index and merged, as devicesQuery
// does, so that the page costs a page and one row per type.
func (s *DB) batchesQuery(accountID string, f devreg.BatchFilter) (q string, args []any, ok bool) {
	types, ok := typesOf(f.DeviceTypeID, f.DeviceTypeIDs)
	if !ok {
		return "", nil, false
	}
	arm := func(typeID string) string {
		q := `SELECT ` + batchColumns + ` FROM batches WHERE account_id = ?`
		args = append(args, accountID)
		if typeID != "" {
			q += ` AND device_type_id = ?`
			args = append(args, typeID)
		}
		if f.After.Seq > 0 { // newest first: the next page holds older batches
			q += ` AND seq < ?`
			args = append(args, f.After.Seq)
		}
		return q
	}
	if len(types) > 1 {
		arms := make([]string, len(types))
		for i, t := range types {
			arms[i] = arm(t)
		}
		return s.merged(arms, "seq DESC", f.Limit), args, true
	}
	typeID := ""
	if len(types) == 1 {
		typeID = types[0]
	}
	return arm(typeID) + ` ORDER BY seq DESC LIMIT ?`, append(args, f.Limit), true
}

// Batch returns one batch of the account.
func (s *DB) Batch(ctx context.Context, accountID, id string) (devreg.Batch, error) {
	b, _, err := scanBatch(s.h.QueryRowContext(ctx, `SELECT `+batchColumns+` FROM batches WHERE account_id = ? AND id = ?`, accountID, id))
	return b, notFound(err, "no batch %s", id)
}

// SetBatchStatus enables or disables a whole batch.
func (s *DB) SetBatchStatus(ctx context.Context, accountID, id string, status devreg.BatchStatus) error {
	return s.changeOne(ctx, accountID, `UPDATE batches SET status = ? WHERE account_id = ? AND id = ?`, []any{string(status), accountID, id}, "no batch %s", id)
}
