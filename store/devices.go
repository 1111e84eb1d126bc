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

// ListDevices returns up to f.Limit devices of the account that match f, in f's order (see
// devreg.DeviceSort) after f.After. Each order walks an index from the page's position and stops
// at the page's end, so deep pages cost what the first page costs, and a set of types
// (f.DeviceTypeIDs) costs what one type costs. f.Contains is SearchDevices' to handle.
func (s *DB) ListDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) ([]devreg.Device, error) {
	devices, err := s.listDevices(ctx, accountID, f)
	// In last-seen order the devices that never checked in follow those that did: a second walk
	// of the same index, from its start, for the rest of the page.
	if err != nil || f.Sort != devreg.SortLastSeen || f.After.SeenAt == -1 || len(devices) >= f.Limit ||
		f.Connected != nil && *f.Connected {
		return devices, err
	}
	f.After, f.Limit = devreg.Cursor{SeenAt: -1}, f.Limit-len(devices)
	never, err := s.listDevices(ctx, accountID, f)
	return append(devices, never...), err
}

// listDevices runs one query of devicesQuery.
func (s *DB) listDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) ([]devreg.Device, error) {
	q, args, ok := s.devicesQuery(accountID, f)
	if !ok {
		return []devreg.Device{}, nil
	}
	return s.queryDevices(ctx, q, args)
}

// queryDevices reads the devices a query of deviceColumns selects.
func (s *DB) queryDevices(ctx context.Context, q string, args []any) ([]devreg.Device, error) {
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

// SearchDevices returns up to f.Limit devices of the account whose ID contains f.Contains and
// that match the rest of f, in device ID order after f.After.DeviceID, reading at most
// devreg.SearchWindow devices: a substring has no index to walk (a trigram index would find the
// matches, but not in order, and a common substring matches most of the account). When the
// window ends before the page is full, resume is the last device ID it read, where a search for
// the next page starts; it is "" when the window reached the end of the account's devices.
func (s *DB) SearchDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) (devices []devreg.Device, resume string, err error) {
	types, ok := typesOf(f.DeviceTypeID, f.DeviceTypeIDs)
	if !ok {
		return []devreg.Device{}, "", nil
	}
	// window is the walk of the device ID index that the search may read: the index alone (it
	// holds the IDs), the rows only of the IDs that match.
	window := func() (string, []any) {
		var c conds
		c.add(`account_num = `+accountNum, accountID)
		c.idRange(f)
		return `SELECT device_id FROM devices WHERE ` + c.String() + ` ORDER BY device_id LIMIT ?`, append(c.args, devreg.SearchWindow)
	}
	inner, args := window()
	var c conds
	c.add(`account_num = `+accountNum, accountID)
	c.add(`device_id IN (SELECT device_id FROM (`+inner+`) AS w WHERE `+s.d.contains()+`)`, append(args, f.Contains)...)
	s.filters(&c, f, types, true, false)
	q := `SELECT ` + deviceColumns + ` FROM devices WHERE ` + c.String() + ` ORDER BY device_id LIMIT ?`
	if devices, err = s.queryDevices(ctx, q, append(c.args, f.Limit)); err != nil || len(devices) >= f.Limit {
		return devices, "", err
	}
	inner, args = window()
	var read int
	var last sql.NullString
	if err := s.h.QueryRowContext(ctx, `SELECT count(*), max(device_id) FROM (`+inner+`) AS w`, args...).Scan(&read, &last); err != nil {
		return nil, "", err
	}
	if read == devreg.SearchWindow {
		resume = last.String
	}
	return devices, resume, nil
}

// CountDevices counts the account's devices that match f, reading at most most+1 of them: it
// returns most+1 when there are more than most.
func (s *DB) CountDevices(ctx context.Context, accountID string, f devreg.DeviceFilter, most int) (int, error) {
	f.Sort, f.After, f.Limit = devreg.SortRegistered, devreg.Cursor{}, most+1
	q, args, ok := s.devicesQuery(accountID, f)
	if !ok {
		return 0, nil
	}
	var n int
	err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM (`+q+`) AS page`, args...).Scan(&n)
	return n, err
}

// conds is the condition of a query's WHERE, and its arguments, written in order.
type conds struct {
	strings.Builder
	args []any
}

func (c *conds) add(cond string, vals ...any) {
	if c.Len() > 0 {
		c.WriteString(" AND ")
	}
	c.WriteString(cond)
	c.args = append(c.args, vals...)
}

// idRange limits a walk in device ID order to f's prefix and to the IDs after its cursor.
func (c *conds) idRange(f devreg.DeviceFilter) {
	if f.Prefix != "" {
		// Device IDs are ASCII below 0x7f, so the prefix's range ends before prefix+"\x7f".
		c.add(`device_id >= ? AND device_id < ?`, f.Prefix, f.Prefix+"\x7f")
	}
	if f.After.DeviceID != "" {
		c.add(`device_id > ?`, f.After.DeviceID)
	}
}

// filters adds f's conditions that only filter the rows of a walk (types, batch, status,
// connection). The types are never an index's condition, nor is the batch on a walk of another
// index (walkOfOther), nor the connection but on the walk of last sightings (bySeen): the planner
// must not read all of their devices to sort them.
func (s *DB) filters(c *conds, f devreg.DeviceFilter, types []string, walkOfOther, bySeen bool) {
	if len(types) > 0 {
		in, inArgs := s.d.oneOf(s.d.noIndex(`device_type_id`), types)
		c.add(in, inArgs...)
	}
	if f.BatchID != "" {
		if walkOfOther {
			c.add(s.d.noIndex(`batch_id`)+` = ?`, f.BatchID)
		} else {
			c.add(`batch_id = ?`, f.BatchID)
		}
	}
	if f.Status != "" {
		c.add(`status = ?`, string(f.Status))
	}
	if f.Connected != nil {
		seen := `last_seen_at`
		if !bySeen {
			seen = s.d.noIndex(seen)
		}
		if *f.Connected {
			c.add(seen + ` IS NOT NULL`)
		} else {
			c.add(seen + ` IS NULL`)
		}
	}
}

// devicesQuery is ListDevices' query and its arguments; ok is false when no device can match.
//
// A set of types (a restricted key's) costs what one type costs. A listing in device ID order (a
// prefix search) walks the unique index of device IDs through the prefix's range, a batch's
// listing the batch's index, and a listing in last-seen order the index of last sightings, with
// the types as a condition on each row: one walk that stops at the page's end. A listing in
// registration order (either way) reads each type's index from the page's position and merges
// them (see merged): the page's rows and one more per type. A walk of the account's index with
// the types as a condition would instead read every device of the other types on its way: for a
// key that reaches 1 type of 100, about a hundred rows per row listed. (Reading a page of each
// type and merging them in Go took 3.2 s for a key of 100 types to list 1,000 devices of a
// prefix, which an unrestricted key lists in 16 ms.) Orders other than registration order keep
// that cost for a rare type: one index per order and type would be one more index for every
// registration and every check-in to write.
func (s *DB) devicesQuery(accountID string, f devreg.DeviceFilter) (q string, args []any, ok bool) {
	types, ok := typesOf(f.DeviceTypeID, f.DeviceTypeIDs)
	if !ok {
		return "", nil, false
	}
	byID, bySeen := f.ByID(), f.Sort == devreg.SortLastSeen
	desc := ""
	if f.Sort == devreg.SortNewest {
		desc = " DESC"
	}
	// where is the condition of one walk over the devices of types (nil: of any type).
	where := func(types []string) string {
		var c conds
		c.add(`account_num = `+accountNum, accountID) // every index of devices starts with it
		byType := len(types) == 1 && !byID && !bySeen && f.BatchID == ""
		if byType {
			c.add(`device_type_id = ?`, types[0]) // walks the type's index
		}
		switch {
		case byID:
			c.idRange(f)
		case bySeen && f.After.SeenAt == -1:
			c.add(`last_seen_at IS NULL`)
			if f.After.Seq > 0 {
				c.add(`seq < ?`, f.After.Seq)
			}
		case bySeen && f.After.SeenAt > 0:
			c.add(`(last_seen_at, seq) < (?, ?)`, f.After.SeenAt, f.After.Seq)
		case bySeen:
			c.add(`last_seen_at IS NOT NULL`)
		case f.After.Seq > 0 && desc != "":
			c.add(`seq < ?`, f.After.Seq)
		case f.After.Seq > 0:
			c.add(`seq > ?`, f.After.Seq)
		}
		if byType {
			types = nil
		}
		s.filters(&c, f, types, byID || bySeen, bySeen)
		args = append(args, c.args...)
		return c.String()
	}
	if len(types) > 1 && !byID && !bySeen && f.BatchID == "" {
		arms := make([]string, len(types))
		for i, t := range types {
			arms[i] = `SELECT ` + deviceColumns + ` FROM devices WHERE ` + where([]string{t})
		}
		return s.d.merged(arms, "seq"+desc, f.Limit), args, true
	}
	order := "seq" + desc
	switch {
	case byID:
		order = "device_id"
	case bySeen:
		order = "last_seen_at DESC, seq DESC"
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
		if err := s.d.lockAccount(ctx, tx, accountID); err != nil {
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
