package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"devreg"
)

// AutoRegister registers a device that registers itself by its certificate (just-in-time
// registration), in one transaction under the account's lock, the one registrations take: so
// that two logins of the same new device (on any servers) register it once, and two first
// devices of a day make one batch. It finds the device type's batch of r.Now's UTC day, or makes
// it, and writes the device with its certificate pinned (key_id x509:sha256), the certificate's
// details, the batch's and the type's device counts and r.Audit. It writes nothing when the device
// ID is registered already, another device holds the certificate, the type no longer has
// auto_register on, or the day's batch is disabled; the result says which.
func (s *DB) AutoRegister(ctx context.Context, r devreg.AutoRegistration) (devreg.AutoRegisterResult, error) {
	var res devreg.AutoRegisterResult
	err := s.inTx(ctx, func(tx handle) error {
		res = devreg.AutoRegisterResult{}
		if err := s.d.lockAccount(ctx, tx, r.AccountID); err != nil {
			return err
		}
		account, err := accountNumber(ctx, tx, r.AccountID)
		if err != nil {
			return err
		}
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE account_num = ? AND device_id = ?`, account, r.DeviceID).Scan(&one); {
		case err == nil:
			res.Exists = true
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		fp := r.Certificate.SHA256[:]
		if res.CertificateHolder, err = certificateHolder(ctx, tx, account, fp, r.DeviceID); err != nil || res.CertificateHolder != "" {
			return err
		}
		var on bool
		err = tx.QueryRowContext(ctx, `SELECT auto_register FROM device_types WHERE account_id = ? AND id = ?`, r.AccountID, r.DeviceTypeID).Scan(&on)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !on {
			res.TypeOff = true
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.autoRegisterBatch(ctx, tx, r, &res); err != nil || res.BatchDisabled {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at)
			VALUES (?, ?, ?, ?, ?, 'enabled', '`+devreg.CertificateKeyID+`', ?, ?)`,
			r.AccountID, account, r.DeviceID, r.DeviceTypeID, res.BatchID, fp, micros(r.Now)); err != nil {
			return fmt.Errorf("register device %s: %w", r.DeviceID, err)
		}
		if err := insertCertificateDetails(ctx, tx, account, []devreg.CertificateDetails{r.Certificate}); err != nil {
			return err
		}
		if err := runSteps(ctx, tx, []step{
			{sql: `UPDATE batches SET device_count = device_count + 1 WHERE id = ?`, args: []any{res.BatchID}, one: true},
			{sql: `UPDATE device_types SET device_count = device_count + 1 WHERE account_id = ? AND id = ?`, args: []any{r.AccountID, r.DeviceTypeID}, one: true},
		}); err != nil {
			return err
		}
		if r.Audit != nil {
			if r.Audit.Details == nil {
				r.Audit.Details = map[string]any{}
			}
			r.Audit.Details["batch_id"], r.Audit.Details["batch_created"] = res.BatchID, res.BatchCreated
			if err := s.appendAudit(ctx, tx, r.AccountID, r.Audit); err != nil {
				return err
			}
		}
		res.Registered = true
		return nil
	})
	if err != nil {
		return devreg.AutoRegisterResult{}, err
	}
	return res, nil
}

// autoRegisterBatch finds the device type's batch of just-in-time registrations of r.Now's UTC
// day, or makes it, under the account's lock. A disabled one is found and left alone.
func (s *DB) autoRegisterBatch(ctx context.Context, tx handle, r devreg.AutoRegistration, res *devreg.AutoRegisterResult) error {
	day := r.Now.UTC().Truncate(24 * time.Hour)
	var status string
	// The source is written out, not a parameter, so that the partial index of migration 0013 is used.
	err := tx.QueryRowContext(ctx, `SELECT id, status FROM batches
		WHERE account_id = ? AND device_type_id = ? AND source = '`+string(devreg.SourceAutoRegister)+`' AND created_at >= ? AND created_at < ?
		ORDER BY created_at, id LIMIT 1`, r.AccountID, r.DeviceTypeID, micros(day), micros(day.Add(24*time.Hour))).Scan(&res.BatchID, &status)
	switch {
	case err == nil:
		res.BatchDisabled = status != string(devreg.StatusEnabled)
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return err
	}
	b := r.Batch
	res.BatchID, res.BatchCreated = b.ID, true
	_, err = tx.ExecContext(ctx, `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status)
		VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 'enabled')`,
		b.ID, r.AccountID, r.DeviceTypeID, micros(r.Now), b.CreatedBy, string(devreg.SourceAutoRegister), b.Filename)
	return err
}
