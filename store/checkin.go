package store

import (
	"context"
	"strings"
	"time"

	"devreg"
)

// CheckIn records that an enabled device checked in at t, with what it reported, using a token
// issued for its registration in batch batchID. A device that checks in for the first time counts
// as connected in its batch. It answers ENOTFOUND for an unknown device and EUNAUTHORIZED for a
// disabled one (or one in a disabled batch) and for one registered again since (in another batch).
func (s *DB) CheckIn(ctx context.Context, accountID, deviceID, batchID string, t time.Time, firmware *string, reported []byte) error {
	return s.inTx(ctx, func(tx handle) error {
		var status, batchStatus, current string
		var seen *int64
		err := tx.QueryRowContext(ctx, `SELECT d.status, d.batch_id, d.last_seen_at, coalesce(b.status, 'enabled')
			FROM devices d LEFT JOIN batches b ON b.id = d.batch_id WHERE `+oneDevice, accountID, deviceID).
			Scan(&status, &current, &seen, &batchStatus)
		if err != nil {
			return notFound(err, "no device %s", deviceID)
		}
		if current != batchID {
			return devreg.Errorf(devreg.EUNAUTHORIZED, "device %s has been registered again since the token was issued", deviceID)
		}
		if status != string(devreg.StatusEnabled) || batchStatus != string(devreg.StatusEnabled) {
			return devreg.Errorf(devreg.EUNAUTHORIZED, "device %s is disabled", deviceID)
		}
		if seen == nil {
			// A first check-in changes the batch's count. The account's lock keeps it from falling
			// between a registration's look at the device and its move of the device to another
			// batch; the count changes only if this check-in is the one that set last_seen_at.
			if err := s.lockAccount(ctx, tx, accountID); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE `+oneDevice+` AND batch_id = ? AND last_seen_at IS NULL`,
				micros(t), accountID, deviceID, batchID)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 1 {
				if _, err := tx.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + 1 WHERE account_id = ? AND id = ?`,
					accountID, batchID); err != nil {
					return err
				}
			}
		}
		var rep any
		if reported != nil {
			rep = string(reported)
		}
		// The registration the token was issued for may have been replaced since the look above.
		res, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ?, firmware_version = coalesce(?, firmware_version),
			reported_status = coalesce(?, reported_status) WHERE `+oneDevice+` AND batch_id = ?`,
			micros(t), firmware, rep, accountID, deviceID, batchID)
		return affectedOne(res, err, "device %s has been registered again since the token was issued", deviceID)
	})
}

// seenChunk is how many devices one statement of MarkSeen names.
const seenChunk = 500

// MarkSeen records that the devices of an account were seen at t (a broker let them in): their
// last_seen_at moves on, and those seen for the first time count as connected in their batch.
// One transaction for the lot, however many devices, so that a reconnect storm costs a few writes.
func (s *DB) MarkSeen(ctx context.Context, accountID string, deviceIDs []string, t time.Time) error {
	return s.inTx(ctx, func(tx handle) error {
		// As at a first check-in, the account's lock keeps a registration from moving a device
		// to another batch between this count and its own.
		if err := s.lockAccount(ctx, tx, accountID); err != nil {
			return err
		}
		for len(deviceIDs) > 0 {
			chunk := deviceIDs[:min(len(deviceIDs), seenChunk)]
			deviceIDs = deviceIDs[len(chunk):]
			in := strings.TrimSuffix(strings.Repeat("?, ", len(chunk)), ", ")
			args := []any{micros(t), accountID}
			for _, id := range chunk {
				args = append(args, id)
			}
			rows, err := tx.QueryContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE account_num = `+accountNum+`
				AND device_id IN (`+in+`) AND last_seen_at IS NULL RETURNING batch_id`, args...)
			if err != nil {
				return err
			}
			first := map[string]int{}
			for rows.Next() {
				var batchID string
				if err := rows.Scan(&batchID); err != nil {
					rows.Close()
					return err
				}
				first[batchID]++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for batchID, n := range first {
				if _, err := tx.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + ? WHERE account_id = ? AND id = ?`,
					n, accountID, batchID); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE account_num = `+accountNum+`
				AND device_id IN (`+in+`) AND last_seen_at < ?`, append(args, micros(t))...); err != nil {
				return err
			}
		}
		return nil
	})
}
