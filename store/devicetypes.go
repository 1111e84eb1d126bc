package store

import (
	"context"
	"encoding/json"
	"fmt"

	"devreg"
)

const deviceTypeColumns = `id, account_id, name, description, min_secret_length, device_count, created_at, mqtt_publish, mqtt_subscribe, rotation_grace_seconds, max_rotations_per_hour,
	certificate_id_field, auto_register, auto_register_limit`

func scanDeviceType(row interface{ Scan(...any) error }) (devreg.DeviceType, error) {
	var t devreg.DeviceType
	var created int64
	var publish, subscribe string
	var grace, rotations, autoLimit int
	err := row.Scan(&t.ID, &t.AccountID, &t.Name, &t.Description, &t.MinSecretLength, &t.DeviceCount, &created, &publish, &subscribe, &grace, &rotations,
		&t.CertificateIDField, &t.AutoRegister, &autoLimit)
	if err != nil {
		return t, err
	}
	t.CreatedAt, t.RotationGraceSeconds, t.MaxRotationsPerHour, t.AutoRegisterLimit = fromMicros(created), &grace, &rotations, &autoLimit
	if err := json.Unmarshal([]byte(publish), &t.MQTTPublish); err != nil {
		return t, fmt.Errorf("device type %s: mqtt_publish: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(subscribe), &t.MQTTSubscribe); err != nil {
		return t, fmt.Errorf("device type %s: mqtt_subscribe: %w", t.ID, err)
	}
	return t, nil
}

// jsonList is a list of strings as the database keeps it: a JSON array.
func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

// graceSeconds is the type's rotation grace in seconds, the default where it has none.
func graceSeconds(t devreg.DeviceType) int {
	if t.RotationGraceSeconds == nil {
		return devreg.DefaultRotationGraceSeconds
	}
	return *t.RotationGraceSeconds
}

// CreateDeviceType stores a new device type; its name must be new in the account.
func (s *DB) CreateDeviceType(ctx context.Context, t devreg.DeviceType) error {
	err := s.changeOne(ctx, t.AccountID, `INSERT INTO device_types (id, account_id, name, description, min_secret_length, created_at, mqtt_publish, mqtt_subscribe, rotation_grace_seconds, max_rotations_per_hour,
		certificate_id_field, auto_register, auto_register_limit)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		[]any{t.ID, t.AccountID, t.Name, t.Description, t.MinSecretLength, micros(t.CreatedAt), jsonList(t.MQTTPublish), jsonList(t.MQTTSubscribe), graceSeconds(t), t.RotationLimit(),
			t.IDField(), t.AutoRegister, t.AutoRegisterMax()},
		"device type %s was not stored", t.ID)
	if s.d.uniqueViolation(err) {
		return devreg.Errorf(devreg.ECONFLICT, "a device type named %q already exists", t.Name)
	}
	return err
}

// ListDeviceTypes returns the account's device types by name.
func (s *DB) ListDeviceTypes(ctx context.Context, accountID string) ([]devreg.DeviceType, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT `+deviceTypeColumns+` FROM device_types WHERE account_id = ? ORDER BY name, id`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types := []devreg.DeviceType{}
	for rows.Next() {
		t, err := scanDeviceType(rows)
		if err != nil {
			return nil, err
		}
		types = append(types, t)
	}
	return types, rows.Err()
}

// DeviceType returns one device type of the account.
func (s *DB) DeviceType(ctx context.Context, accountID, id string) (devreg.DeviceType, error) {
	t, err := scanDeviceType(s.h.QueryRowContext(ctx, `SELECT `+deviceTypeColumns+` FROM device_types WHERE account_id = ? AND id = ?`, accountID, id))
	return t, notFound(err, "no device type %s", id)
}

// UpdateDeviceType stores the changed fields of a device type.
func (s *DB) UpdateDeviceType(ctx context.Context, t devreg.DeviceType) error {
	err := s.changeOne(ctx, t.AccountID, `UPDATE device_types SET name = ?, description = ?, min_secret_length = ?, mqtt_publish = ?, mqtt_subscribe = ?,
		rotation_grace_seconds = ?, max_rotations_per_hour = ?, certificate_id_field = ?, auto_register = ?, auto_register_limit = ?
		WHERE account_id = ? AND id = ?`,
		[]any{t.Name, t.Description, t.MinSecretLength, jsonList(t.MQTTPublish), jsonList(t.MQTTSubscribe), graceSeconds(t), t.RotationLimit(),
			t.IDField(), t.AutoRegister, t.AutoRegisterMax(), t.AccountID, t.ID},
		"no device type %s", t.ID)
	if s.d.uniqueViolation(err) {
		return devreg.Errorf(devreg.ECONFLICT, "a device type named %q already exists", t.Name)
	}
	return err
}

// DeleteDeviceType removes a device type that has no devices. Whether it has any is asked of
// the devices themselves, in the statement that deletes it, not of its count.
func (s *DB) DeleteDeviceType(ctx context.Context, accountID, id string) error {
	return s.inTx(ctx, func(tx handle) error {
		if err := s.d.lockAccount(ctx, tx, accountID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM device_types WHERE account_id = ? AND id = ?
			AND NOT EXISTS (SELECT 1 FROM devices WHERE account_num = `+accountNum+` AND device_type_id = ?)`, accountID, id, accountID, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			return s.audit(ctx, tx, accountID)
		}
		var count int64
		err = tx.QueryRowContext(ctx, `SELECT device_count FROM device_types WHERE account_id = ? AND id = ?`, accountID, id).Scan(&count)
		if err != nil {
			return notFound(err, "no device type %s", id)
		}
		return devreg.Errorf(devreg.ECONFLICT, "device type %s still has %d devices; delete them or register them under another type first", id, max(count, 1))
	})
}
