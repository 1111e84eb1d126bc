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
	q := `SELECT ` + batchColumns + ` FROM batches WHERE account_id = ?`
	args := []any{accountID}
	if f.DeviceTypeID != "" {
		q += ` AND device_type_id = ?`
		args = append(args, f.DeviceTypeID)
	}
	if f.After.Seq > 0 { // newest first: the next page holds older batches
		q += ` AND seq < ?`
		args = append(args, f.After.Seq)
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, f.Limit)
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

// Batch returns one batch of the account.
func (s *DB) Batch(ctx context.Context, accountID, id string) (devreg.Batch, error) {
	b, _, err := scanBatch(s.h.QueryRowContext(ctx, `SELECT `+batchColumns+` FROM batches WHERE account_id = ? AND id = ?`, accountID, id))
	return b, notFound(err, "no batch %s", id)
}

// SetBatchStatus enables or disables a whole batch.
func (s *DB) SetBatchStatus(ctx context.Context, accountID, id string, status devreg.BatchStatus) error {
	return s.changeOne(ctx, accountID, `UPDATE batches SET status = ? WHERE account_id = ? AND id = ?`, []any{string(status), accountID, id}, "no batch %s", id)
}
