package store

import (
	"context"
	"fmt"
	"time"

	"devreg"
)

const batchColumns = `seq, id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status, name, creator_type, creator_id`

func scanBatch(row interface{ Scan(...any) error }) (devreg.Batch, int64, error) {
	var b devreg.Batch
	var seq, created int64
	err := row.Scan(&seq, &b.ID, &b.DeviceTypeID, &created, &b.CreatedBy, &b.Source, &b.Filename, &b.DeviceCount, &b.ConnectedCount, &b.Status, &b.Name, &b.CreatorType, &b.CreatorID)
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
		return s.d.merged(arms, "seq DESC", f.Limit), args, true
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

// DeleteBatch deletes a batch and every device in it, with what hangs off them (their further
// credentials), in one transaction of a few set-based statements, so that a lot of a million
// devices is as cheap as the statements over its rows. Each device's ID is recorded as enrolled
// by no group, as DeleteDevice does, so that none comes back through an enrollment group; a
// device that enrolled through one keeps its group's row. The device types' counts lose the
// devices, and the batch's row goes too: nothing of a deleted lot is left to show but its audit
// entry, which audit makes from the count and which is appended in the same transaction. It
// returns the number of devices deleted.
//
// It holds the account's lock, as registrations do: one that moves devices into or out of the
// lot (on_conflict=replace) comes wholly before or after it. On PostgreSQL it then locks the
// lot's devices in device ID order, as registrations and the recording of broker logins
// (markSeen) do, so that a login of one of them waits for it, or it for the login, and neither
// deadlocks.
func (s *DB) DeleteBatch(ctx context.Context, accountID, batchID string, now time.Time, audit func(deleted int64) *devreg.AuditEntry) (int64, error) {
	var deleted int64
	inBatch := `account_num = ` + accountNum + ` AND batch_id = ?` // along the index devices_batch
	lot := []any{accountID, batchID}
	err := s.inTx(ctx, func(tx handle) error {
		if err := s.d.lockAccount(ctx, tx, accountID); err != nil {
			return err
		}
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM batches WHERE account_id = ? AND id = ?`, accountID, batchID).Scan(&one); err != nil {
			return notFound(err, "no batch %s", batchID)
		}
		account, err := accountNumber(ctx, tx, accountID)
		if err != nil {
			return err
		}
		// Counted, so that the rows locked do not come back to this process.
		if err := s.d.lock(ctx, tx, `SELECT count(*) FROM (SELECT 1 FROM devices WHERE `+inBatch+`
			ORDER BY device_id`+s.d.lockRowsExclusive()+`) AS locked`, lot...); err != nil {
			return fmt.Errorf("lock the batch's devices: %w", err)
		}
		// A batch's devices have its device type, but the counts follow the rows, whatever they say.
		perType := map[string]int64{}
		rows, err := tx.QueryContext(ctx, `SELECT device_type_id, count(*) FROM devices WHERE `+inBatch+` GROUP BY device_type_id`, lot...)
		if err != nil {
			return fmt.Errorf("count the batch's devices: %w", err)
		}
		for rows.Next() {
			var typeID string
			var n int64
			if err := rows.Scan(&typeID, &n); err != nil {
				rows.Close()
				return err
			}
			perType[typeID] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		ids := `SELECT device_id FROM devices WHERE ` + inBatch
		if _, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = ? AND device_id IN (`+ids+`)`,
			append([]any{account}, lot...)...); err != nil {
			return fmt.Errorf("delete the batch's credentials: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at)
			SELECT ?, device_id, '', ? FROM devices WHERE `+inBatch+` ON CONFLICT (account_num, device_id) DO NOTHING`,
			append([]any{account, micros(now)}, lot...)...); err != nil {
			return fmt.Errorf("record the batch's device IDs as enrolled: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE `+inBatch, lot...)
		if err != nil {
			return fmt.Errorf("delete the batch's devices: %w", err)
		}
		if deleted, err = res.RowsAffected(); err != nil {
			return err
		}
		for typeID, n := range perType {
			if _, err := tx.ExecContext(ctx, `UPDATE device_types SET device_count = device_count - ? WHERE account_id = ? AND id = ?`,
				n, accountID, typeID); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM batches WHERE account_id = ? AND id = ?`, accountID, batchID); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, accountID, audit(deleted))
	})
	if err != nil {
		return 0, err
	}
	return deleted, nil
}
