package store

import (
	"context"
	"encoding/hex"

	"devreg"
)

const trustedCAColumns = `id, device_type_id, sha256, subject, not_after, der, created_at`

// AddTrustedCA stores a CA certificate the device type trusts, with the audit entry ctx carries:
// ENOTFOUND if the account has no such type, ECONFLICT if the type trusts this certificate
// already, EINVALID if it holds devreg.MaxTrustedCAs already. The type's row is locked first, so
// two servers adding at once cannot both take the last place.
func (s *DB) AddTrustedCA(ctx context.Context, accountID string, ca devreg.TrustedCA) error {
	sum, err := hex.DecodeString(ca.SHA256)
	if err != nil || len(sum) != 32 {
		return devreg.Errorf(devreg.EINTERNAL, "trusted CA %s: bad fingerprint %q", ca.ID, ca.SHA256)
	}
	return s.inTx(ctx, func(tx handle) error {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM device_types WHERE account_id = ? AND id = ?`+s.d.lockRows(), accountID, ca.DeviceTypeID).Scan(&id)
		if err != nil {
			return notFound(err, "no device type %s", ca.DeviceTypeID)
		}
		var n int
		var same string
		if err := tx.QueryRowContext(ctx, `SELECT count(*), coalesce(max(CASE WHEN sha256 = ? THEN id END), '') FROM device_type_cas WHERE device_type_id = ?`,
			sum, ca.DeviceTypeID).Scan(&n, &same); err != nil {
			return err
		}
		if same != "" {
			return devreg.Errorf(devreg.ECONFLICT, "device type %s trusts this certificate already (CA %s, SHA-256 %s)", ca.DeviceTypeID, same, ca.SHA256)
		}
		if n >= devreg.MaxTrustedCAs {
			return devreg.Errorf(devreg.EINVALID, "device type %s trusts %d CA certificates, the most a type may hold; remove one first", ca.DeviceTypeID, n)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO device_type_cas (`+trustedCAColumns+`, account_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			ca.ID, ca.DeviceTypeID, sum, ca.Subject, micros(ca.NotAfter), ca.DER, micros(ca.CreatedAt), accountID)
		if s.d.uniqueViolation(err) {
			return devreg.Errorf(devreg.ECONFLICT, "device type %s trusts this certificate already (SHA-256 %s)", ca.DeviceTypeID, ca.SHA256)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}

// TrustedCAs returns the CA certificates a device type of the account trusts, oldest first, each
// with its DER. It is one read of the table's primary key, since every certificate login asks it;
// a type the account does not have trusts none.
func (s *DB) TrustedCAs(ctx context.Context, accountID, deviceTypeID string) ([]devreg.TrustedCA, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT `+trustedCAColumns+` FROM device_type_cas WHERE device_type_id = ? AND account_id = ? ORDER BY created_at, id`,
		deviceTypeID, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cas := []devreg.TrustedCA{}
	for rows.Next() {
		var ca devreg.TrustedCA
		var sum []byte
		var notAfter, created int64
		if err := rows.Scan(&ca.ID, &ca.DeviceTypeID, &sum, &ca.Subject, &notAfter, &ca.DER, &created); err != nil {
			return nil, err
		}
		ca.SHA256, ca.NotAfter, ca.CreatedAt = hex.EncodeToString(sum), fromMicros(notAfter), fromMicros(created)
		cas = append(cas, ca)
	}
	return cas, rows.Err()
}

// DeleteTrustedCA removes a CA certificate from a device type of the account, with the audit
// entry ctx carries.
func (s *DB) DeleteTrustedCA(ctx context.Context, accountID, deviceTypeID, id string) error {
	return s.changeOne(ctx, accountID, `DELETE FROM device_type_cas WHERE device_type_id = ? AND id = ? AND account_id = ?`,
		[]any{deviceTypeID, id, accountID}, "device type %s has no trusted CA %s", deviceTypeID, id)
}
