package store

import (
	"context"
	"fmt"
	"time"

	"devreg"
)

// revokeConditions are the conditions, on a device d (with the columns of devices), that decide a
// revocation of device-made credentials at now: whether the device holds any it made itself, and
// whether one it did not make lets it in at now. Only a device with both loses its own.
func revokeConditions(now time.Time) (deviceMade, otherValid string) {
	deviceMade = fmt.Sprintf(`(d.cred_source = '%[1]s' OR EXISTS (SELECT 1 FROM credentials c
		WHERE c.account_num = d.account_num AND c.device_id = d.device_id AND c.source = '%[1]s'))`, devreg.CredentialFromDevice)
	otherValid = fmt.Sprintf(`((coalesce(d.cred_source, 'registration') <> '%[1]s' AND %[2]s)
		OR EXISTS (SELECT 1 FROM credentials c WHERE c.account_num = d.account_num AND c.device_id = d.device_id AND c.source <> '%[1]s'
			AND %[3]s))`,
		devreg.CredentialFromDevice, validAt("d.cred_", now), validAt("c.", now))
	return deviceMade, otherValid
}

// RevokeBatchCredentials deletes the credentials that the devices of a batch (of device type
// typeID) made themselves, in one transaction and a few set-based statements, so that a lot of a
// million devices takes no more memory than a small one. A device that no other credential lets
// in at now is left as it was and counted; the first MaxProblems of those are returned, in the
// batch's registration order. When it deletes any, audit makes the entry that is appended in the
// same transaction, from the result.
func (s *DB) RevokeBatchCredentials(ctx context.Context, accountID, typeID, batchID string, now time.Time,
	audit func(devreg.BatchRevocation) *devreg.AuditEntry) (devreg.BatchRevocation, []devreg.DeviceLeft, error) {
	var r devreg.BatchRevocation
	var left []devreg.DeviceLeft
	deviceMade, otherValid := revokeConditions(now)
	inBatch := `d.account_num = ` + accountNum + ` AND d.batch_id = ? AND d.device_type_id = ?`
	batch := []any{accountID, batchID, typeID}
	err := s.inTx(ctx, func(tx handle) error {
		left, r = nil, devreg.BatchRevocation{}
		account, err := accountNumber(ctx, tx, accountID)
		if err != nil {
			return err
		}
		// As ChangeCredentials does for one device: a credential change of any of them (which
		// locks its row) comes wholly before or after this one. Counted, so that the rows locked
		// do not come back to this process.
		if err := s.d.lock(ctx, tx, `SELECT count(*) FROM (SELECT 1 FROM devices d WHERE `+inBatch+` AND `+deviceMade+`
			ORDER BY d.device_id`+s.d.lockRowsExclusive()+`) AS locked`, batch...); err != nil {
			return fmt.Errorf("lock the batch's devices: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*),
			coalesce(sum(CASE WHEN `+deviceMade+` AND `+otherValid+` THEN 1 ELSE 0 END), 0),
			coalesce(sum(CASE WHEN `+deviceMade+` AND NOT `+otherValid+` THEN 1 ELSE 0 END), 0)
			FROM devices d WHERE `+inBatch, batch...).Scan(&r.Devices, &r.DevicesChanged, &r.DevicesLeft); err != nil {
			return fmt.Errorf("count the batch's device-made credentials: %w", err)
		}
		if r.DevicesLeft > 0 {
			if left, err = devicesLeft(ctx, tx, inBatch, batch, deviceMade, otherValid); err != nil {
				return err
			}
		}
		if r.DevicesChanged == 0 {
			return nil
		}
		changed := `SELECT d.device_id FROM devices d WHERE ` + inBatch + ` AND ` + otherValid
		res, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = ? AND source = ? AND device_id IN (`+changed+`)`,
			append([]any{account, string(devreg.CredentialFromDevice)}, batch...)...)
		if err != nil {
			return fmt.Errorf("delete device-made credentials: %w", err)
		}
		inTable, err := res.RowsAffected()
		if err != nil {
			return err
		}
		// A device-made credential in a device's row gives its place to the oldest credential
		// left, as ChangeCredentials does, which then leaves the credentials table.
		res, err = tx.ExecContext(ctx, `UPDATE devices SET key_id = n.key_id, secret_hash = n.secret_hash, cred_id = n.id,
				cred_created_at = n.created_at, cred_not_before = n.not_before, cred_not_after = n.not_after, cred_status = n.status,
				cred_last_used_at = n.last_used_at, cred_source = n.source
			FROM (SELECT c.device_id, c.id, c.key_id, c.secret_hash, c.created_at, c.not_before, c.not_after, c.status, c.last_used_at, c.source,
					row_number() OVER (PARTITION BY c.device_id ORDER BY c.created_at, c.id) AS rn
				FROM credentials c WHERE c.account_num = ? AND c.device_id IN (`+changed+` AND d.cred_source = ?)) AS n
			WHERE n.rn = 1 AND devices.account_num = ? AND devices.device_id = n.device_id`,
			append(append([]any{account}, batch...), string(devreg.CredentialFromDevice), account)...)
		if err != nil {
			return fmt.Errorf("move credentials into the devices' rows: %w", err)
		}
		inRow, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if inRow > 0 {
			if _, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = ? AND device_id IN (SELECT d.device_id FROM devices d WHERE `+inBatch+`)
				AND EXISTS (SELECT 1 FROM devices d WHERE d.account_num = credentials.account_num AND d.device_id = credentials.device_id AND d.cred_id = credentials.id)`,
				append([]any{account}, batch...)...); err != nil {
				return fmt.Errorf("delete the credentials moved into the devices' rows: %w", err)
			}
		}
		r.Deleted = inTable + inRow
		return s.appendAudit(ctx, tx, accountID, audit(r))
	})
	if err != nil {
		return devreg.BatchRevocation{}, nil, err
	}
	return r, left, nil
}

// devicesLeft lists the first MaxProblems devices of a batch that hold device-made credentials
// and no other one valid now, with their positions in the batch.
func devicesLeft(ctx context.Context, tx handle, inBatch string, batch []any, deviceMade, otherValid string) ([]devreg.DeviceLeft, error) {
	rows, err := tx.QueryContext(ctx, `SELECT d.idx, d.device_id,
			CASE WHEN coalesce(d.cred_source, 'registration') <> ? THEN 1 ELSE 0 END
			+ (SELECT count(*) FROM credentials c WHERE c.account_num = d.account_num AND c.device_id = d.device_id AND c.source <> ?)
		FROM (SELECT row_number() OVER (ORDER BY d.seq) - 1 AS idx, d.account_num, d.device_id,
				d.cred_source, d.cred_status, d.cred_not_before, d.cred_not_after
			FROM devices d WHERE `+inBatch+`) AS d
		WHERE `+deviceMade+` AND NOT `+otherValid+` ORDER BY d.idx LIMIT ?`,
		append(append([]any{string(devreg.CredentialFromDevice), string(devreg.CredentialFromDevice)}, batch...), devreg.MaxProblems)...)
	if err != nil {
		return nil, fmt.Errorf("list the devices left: %w", err)
	}
	defer rows.Close()
	var left []devreg.DeviceLeft
	for rows.Next() {
		var l devreg.DeviceLeft
		if err := rows.Scan(&l.Index, &l.DeviceID, &l.Others); err != nil {
			return nil, err
		}
		left = append(left, l)
	}
	return left, rows.Err()
}
