package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"devreg"
)

const deviceColumns = `seq, device_id, device_type_id, status, batch_id, created_at, last_seen_at, firmware_version, reported_status`

// accountNum is the number of the account whose ID is its argument; it keys the unique index of
// devices.
const accountNum = `(SELECT num FROM accounts WHERE accounts.id = ?)`

// oneDevice picks a device by account ID and device ID, its two arguments, through the unique
// index of devices.
const oneDevice = `account_num = ` + accountNum + ` AND device_id = ?`

func scanDevice(row interface{ Scan(...any) error }) (devreg.Device, error) {
	var d devreg.Device
	var created int64
	var seen sql.NullInt64
	var firmware, reported sql.NullString
	err := row.Scan(&d.Seq, &d.DeviceID, &d.DeviceTypeID, &d.Status, &d.BatchID, &created, &seen, &firmware, &reported)
	d.CreatedAt, d.LastSeenAt = fromMicros(created), fromNullMicros(seen)
	if firmware.Valid {
		d.FirmwareVersion = &firmware.String
	}
	if reported.Valid {
		d.ReportedStatus = json.RawMessage(reported.String)
	}
	return d, err
}

// ListDevices returns up to f.Limit devices of the account that match f: in registration order
// after f.After.Seq, or, when f.Prefix is set, in device ID order after f.After.DeviceID. Each way
// walks an index from the page's position and stops at the page's end, so deep pages cost what
// the first page costs, and a set of types (f.DeviceTypeIDs) costs what one type costs.
func (s *DB) ListDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) ([]devreg.Device, error) {
	q, args, ok := s.devicesQuery(accountID, f)
	if !ok {
		return []devreg.Device{}, nil
	}
	rows, err := s.h.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	devices := []devreg.Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		devices = append(devices, d)
	}
	return devices, rows.Err()
}

// devicesQuery is ListDevices' query and its arguments; ok is false when no device can match.
//
// A set of types (a restricted key's) costs what one type costs. A prefix search walks the unique
// index of device IDs through the prefix's range, and a batch's listing the batch's index, with
// the types as a condition on each row: one walk that stops at the page's end. A listing in
// registration order reads each type's index from the page's position and merges them (see
// merged): the page's rows and one more per type. A walk of the account's index with the types as
// a condition would instead read every device of the other types on its way: for a key that
// reaches 1 type of 100, about a hundred rows per row listed. (Reading a page of each type and
// merging them in Go took 3.2 s for a key of 100 types to list 1,000 devices of a prefix, which
// an unrestricted key lists in 16 ms.)
func (s *DB) devicesQuery(accountID string, f devreg.DeviceFilter) (q string, args []any, ok bool) {
	types, ok := typesOf(f.DeviceTypeID, f.DeviceTypeIDs)
	if !ok {
		return "", nil, false
	}
	// where is the condition of one walk over the devices of types (nil: of any type).
	where := func(types []string) string {
		var w strings.Builder
		add := func(cond string, vals ...any) {
			if w.Len() > 0 {
				w.WriteString(" AND ")
			}
			w.WriteString(cond)
			args = append(args, vals...)
		}
		if f.Prefix != "" { // walks the unique index of device IDs
			add(`account_num = `+accountNum, accountID)
		} else {
			add(`account_id = ?`, accountID)
		}
		switch {
		case len(types) == 1 && f.Prefix == "" && f.BatchID == "":
			add(`device_type_id = ?`, types[0]) // walks the type's index
		case len(types) > 0:
			// Not an index's condition: the walk is the one above, and the planner must not
			// read all devices of the types to sort them.
			in, inArgs := s.h.oneOf(s.noIndex(`device_type_id`), types)
			add(in, inArgs...)
		}
		if f.BatchID != "" {
			add(`batch_id = ?`, f.BatchID)
		}
		if f.Prefix != "" {
			// Device IDs are ASCII below 0x7f, so the prefix's range ends before prefix+"\x7f".
			add(`device_id >= ? AND device_id < ?`, f.Prefix, f.Prefix+"\x7f")
			if f.After.DeviceID != "" {
				add(`device_id > ?`, f.After.DeviceID)
			}
		} else if f.After.Seq > 0 {
			add(`seq > ?`, f.After.Seq)
		}
		if f.Status != "" {
			add(`status = ?`, string(f.Status))
		}
		if f.Connected != nil {
			if *f.Connected {
				add(`last_seen_at IS NOT NULL`)
			} else {
				add(`last_seen_at IS NULL`)
			}
		}
		return w.String()
	}
	if len(types) > 1 && f.Prefix == "" && f.BatchID == "" {
		arms := make([]string, len(types))
		for i, t := range types {
			arms[i] = `SELECT ` + deviceColumns + ` FROM devices WHERE ` + where([]string{t})
		}
		return s.merged(arms, "seq", f.Limit), args, true
	}
	order := "seq"
	if f.Prefix != "" {
		order = "device_id"
	}
	return `SELECT ` + deviceColumns + ` FROM devices WHERE ` + where(types) + ` ORDER BY ` + order + ` LIMIT ?`, append(args, f.Limit), true
}

// typesOf is the types a listing filtered by one type and by a set of types (nil: no filter)
// reads: nil for any type; ok is false when none can match.
func typesOf(one string, set []string) (types []string, ok bool) {
	switch {
	case one != "" && set != nil && !slices.Contains(set, one):
		return nil, false
	case one != "":
		return []string{one}, true
	}
	return set, set == nil || len(set) > 0
}

// Device returns one device of the account.
func (s *DB) Device(ctx context.Context, accountID, deviceID string) (devreg.Device, error) {
	d, err := scanDevice(s.h.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE `+oneDevice, accountID, deviceID))
	return d, notFound(err, "no device %s", deviceID)
}

// SetDeviceStatus enables or disables a device.
func (s *DB) SetDeviceStatus(ctx context.Context, accountID, deviceID string, status devreg.DeviceStatus) error {
	return s.changeOne(ctx, accountID, `UPDATE devices SET status = ? WHERE `+oneDevice, []any{string(status), accountID, deviceID}, "no device %s", deviceID)
}

// DeleteDevice removes a device and takes it off the counts of the type and batch it was in
// when it was deleted. It holds the account's lock, so that no registration is between reading
// the device and moving it (and its counts) while the device goes.
func (s *DB) DeleteDevice(ctx context.Context, accountID, deviceID string) error {
	return s.inTx(ctx, func(tx handle) error {
		if err := s.lockAccount(ctx, tx, accountID); err != nil {
			return err
		}
		var typeID, batchID string
		var seen sql.NullInt64
		// The counts follow the row that was deleted, not one read before it.
		err := tx.QueryRowContext(ctx, `DELETE FROM devices WHERE `+oneDevice+` RETURNING device_type_id, batch_id, last_seen_at`,
			accountID, deviceID).Scan(&typeID, &batchID, &seen)
		if err != nil {
			return notFound(err, "no device %s", deviceID)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = `+accountNum+` AND device_id = ?`, accountID, deviceID); err != nil {
			return err
		}
		// A deleted device does not come back through an enrollment group at the next
		// connection of whoever holds the group's key (it may have been deleted because it was
		// stolen), until an administrator re-allows it: the ID is recorded as enrolled, by no
		// group (""), which any group's reenroll re-allows. One that enrolled keeps its group's
		// row.
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollments (account_num, device_id, group_id, enrolled_at)
			VALUES (`+accountNum+`, ?, '', ?) ON CONFLICT (account_num, device_id) DO NOTHING`, accountID, deviceID, time.Now().UnixMicro()); err != nil {
			return err
		}
		connected := 0
		if seen.Valid {
			connected = 1
		}
		if _, err := tx.ExecContext(ctx, `UPDATE device_types SET device_count = device_count - 1 WHERE account_id = ? AND id = ?`,
			accountID, typeID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET device_count = device_count - 1, connected_count = connected_count - ? WHERE account_id = ? AND id = ?`,
			connected, accountID, batchID); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}
