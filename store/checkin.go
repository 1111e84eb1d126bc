package store

import (
	"context"
	"time"

	"devreg"
)

// SetDeviceHash moves a device's secret hash to another key, if it still has the hash it had
// under oldKeyID (so that a concurrent re-registration wins).
func (s *DB) SetDeviceHash(ctx context.Context, accountID, deviceID, oldKeyID, keyID string, hash []byte) error {
	_, err := s.h.ExecContext(ctx, `UPDATE devices SET key_id = ?, secret_hash = ? WHERE `+oneDevice+` AND key_id = ?`,
		keyID, hash, accountID, deviceID, oldKeyID)
	return err
}

// CheckIn records that an enabled device checked in at t, with what it reported. A device that
// checks in for the first time counts as connected in its batch. It answers ENOTFOUND for an
// unknown device and EUNAUTHORIZED for a disabled one (or one in a disabled batch).
func (s *DB) CheckIn(ctx context.Context, accountID, deviceID string, t time.Time, firmware *string, reported []byte) error {
	return s.inTx(ctx, func(tx handle) error {
		var status, batchStatus, batchID string
		var seen *int64
		err := tx.QueryRowContext(ctx, `SELECT d.status, d.batch_id, d.last_seen_at, coalesce(b.status, 'enabled')
			FROM devices d LEFT JOIN batches b ON b.id = d.batch_id WHERE `+oneDevice, accountID, deviceID).
			Scan(&status, &batchID, &seen, &batchStatus)
		if err != nil {
			return notFound(err, "no device %s", deviceID)
		}
		if status != string(devreg.StatusEnabled) || batchStatus != string(devreg.StatusEnabled) {
			return devreg.Errorf(devreg.EUNAUTHORIZED, "device %s is disabled", deviceID)
		}
		var rep any
		if reported != nil {
			rep = string(reported)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ?, firmware_version = coalesce(?, firmware_version),
			reported_status = coalesce(?, reported_status) WHERE `+oneDevice,
			micros(t), firmware, rep, accountID, deviceID); err != nil {
			return err
		}
		if seen == nil {
			_, err = tx.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + 1 WHERE id = ?`, batchID)
		}
		return err
	})
}
