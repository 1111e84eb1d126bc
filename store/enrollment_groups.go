package store

import (
	"context"
	"database/sql"
	"time"

	"devreg"
)

// enrollmentGroupColumns are the columns scanEnrollmentGroup reads, in its order.
const enrollmentGroupColumns = `id, account_id, device_type_id, name, id_pattern, max_devices, max_per_hour, not_before, not_after,
	status, temporary, allow_list, enrolled_count, created_at`

// CreateEnrollmentGroup stores a new enrollment group of a device type of the account, with its
// first key (sealed), and the audit entry ctx carries: ENOTFOUND if the account has no such type,
// EINVALID if the type holds devreg.MaxEnrollmentGroupsPerType already. The type's row is locked
// first, so that two servers adding at once cannot both take the last place. The caller has
// checked the group's pattern against the type's other groups (overlap), which it read with
// EnrollmentGroups; the lock makes that check hold only if it is repeated here, so the caller
// passes check, which runs under the lock with the type's groups as they are.
func (s *DB) CreateEnrollmentGroup(ctx context.Context, g devreg.EnrollmentGroup, check func(others []devreg.EnrollmentGroup) error) error {
	if len(g.Keys) != 1 {
		return devreg.Errorf(devreg.EINTERNAL, "a new enrollment group has one key, not %d", len(g.Keys))
	}
	return s.inTx(ctx, func(tx handle) error {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM device_types WHERE account_id = ? AND id = ?`+s.d.lockRows(), g.AccountID, g.DeviceTypeID).Scan(&id)
		if err != nil {
			return notFound(err, "no device type %s", g.DeviceTypeID)
		}
		others, err := enrollmentGroupsOf(ctx, tx, `device_type_id = ? AND account_id = ?`, g.DeviceTypeID, g.AccountID)
		if err != nil {
			return err
		}
		if len(others) >= devreg.MaxEnrollmentGroupsPerType {
			return devreg.Errorf(devreg.EINVALID, "device type %s has %d enrollment groups, the most a type may hold; delete one first", g.DeviceTypeID, len(others))
		}
		if check != nil {
			if err := check(others); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollment_groups (`+enrollmentGroupColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			g.ID, g.AccountID, g.DeviceTypeID, g.Name, g.IDPattern, g.MaxDevices, g.MaxPerHour, nullTime(g.NotBefore), nullTime(g.NotAfter),
			string(g.Status), g.Temporary, g.AllowList, 0, micros(g.CreatedAt)); err != nil {
			return err
		}
		k := g.Keys[0]
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollment_group_keys (group_id, id, seal_key_id, sealed, created_at, not_after) VALUES (?, ?, ?, ?, ?, ?)`,
			g.ID, k.ID, k.SealKeyID, k.Sealed, micros(k.CreatedAt), nullTime(k.NotAfter)); err != nil {
			return err
		}
		return s.audit(ctx, tx, g.AccountID)
	})
}

// EnrollmentGroups returns the account's enrollment groups, oldest first (the order in which
// they are tried: the older group wins), each with its keys, sealed. With deviceTypeID, only that
// type's.
func (s *DB) EnrollmentGroups(ctx context.Context, accountID, deviceTypeID string) ([]devreg.EnrollmentGroup, error) {
	if deviceTypeID != "" {
		return enrollmentGroupsOf(ctx, s.h, `device_type_id = ? AND account_id = ?`, deviceTypeID, accountID)
	}
	return enrollmentGroupsOf(ctx, s.h, `account_id = ?`, accountID)
}

// enrollmentGroupsOf reads the groups where holds, oldest first, with their keys.
func enrollmentGroupsOf(ctx context.Context, q handle, where string, args ...any) ([]devreg.EnrollmentGroup, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+enrollmentGroupColumns+` FROM enrollment_groups WHERE `+where+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, err
	}
	groups := []devreg.EnrollmentGroup{}
	index := map[string]int{}
	for rows.Next() {
		g, err := scanEnrollmentGroup(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		index[g.ID] = len(groups)
		groups = append(groups, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(groups) == 0 {
		return groups, err
	}
	keys, err := q.QueryContext(ctx, `SELECT k.group_id, k.id, k.seal_key_id, k.sealed, k.created_at, k.not_after
		FROM enrollment_group_keys k WHERE k.group_id IN (SELECT id FROM enrollment_groups WHERE `+where+`) ORDER BY k.created_at, k.id`, args...)
	if err != nil {
		return nil, err
	}
	defer keys.Close()
	for keys.Next() {
		var groupID string
		var k devreg.EnrollmentKey
		var created int64
		var notAfter sql.NullInt64
		if err := keys.Scan(&groupID, &k.ID, &k.SealKeyID, &k.Sealed, &created, &notAfter); err != nil {
			return nil, err
		}
		k.CreatedAt, k.NotAfter = fromMicros(created), fromNullMicros(notAfter)
		if i, ok := index[groupID]; ok {
			groups[i].Keys = append(groups[i].Keys, k)
		}
	}
	return groups, keys.Err()
}

// EnrollmentGroup returns one enrollment group of a device type of the account, with its keys.
func (s *DB) EnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string) (devreg.EnrollmentGroup, error) {
	groups, err := enrollmentGroupsOf(ctx, s.h, `id = ? AND device_type_id = ? AND account_id = ?`, groupID, deviceTypeID, accountID)
	if err != nil {
		return devreg.EnrollmentGroup{}, err
	}
	if len(groups) == 0 {
		return devreg.EnrollmentGroup{}, devreg.Errorf(devreg.ENOTFOUND, "device type %s has no enrollment group %s", deviceTypeID, groupID)
	}
	return groups[0], nil
}

func scanEnrollmentGroup(rows *sql.Rows) (devreg.EnrollmentGroup, error) {
	var g devreg.EnrollmentGroup
	var notBefore, notAfter sql.NullInt64
	var status string
	var created int64
	err := rows.Scan(&g.ID, &g.AccountID, &g.DeviceTypeID, &g.Name, &g.IDPattern, &g.MaxDevices, &g.MaxPerHour, &notBefore, &notAfter,
		&status, &g.Temporary, &g.AllowList, &g.EnrolledCount, &created)
	if err != nil {
		return g, err
	}
	g.NotBefore, g.NotAfter, g.Status, g.CreatedAt = fromNullMicros(notBefore), fromNullMicros(notAfter), devreg.DeviceStatus(status), fromMicros(created)
	g.Keys = []devreg.EnrollmentKey{}
	return g, nil
}

// UpdateEnrollmentGroup changes an enrollment group of a device type of the account, with the
// audit entry ctx carries: ENOTFOUND if there is no such group. Like CreateEnrollmentGroup it
// locks the type's row first and reads the type's groups under the lock; decide gets the group as
// it is and the type's other groups, and returns the group as it should be (or an error, and
// nothing is written). Only the fields an administrator sets are written: name, id_pattern,
// max_devices, max_per_hour, not_before, not_after, status and temporary; never enrolled_count,
// which enrollments count up meanwhile, nor the keys or the allow-list.
func (s *DB) UpdateEnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string,
	decide func(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error)) (devreg.EnrollmentGroup, error) {
	var out devreg.EnrollmentGroup
	err := s.inTx(ctx, func(tx handle) error {
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id FROM device_types WHERE account_id = ? AND id = ?`+s.d.lockRows(), accountID, deviceTypeID).Scan(&id)
		if err != nil {
			return notFound(err, "no device type %s", deviceTypeID)
		}
		groups, err := enrollmentGroupsOf(ctx, tx, `device_type_id = ? AND account_id = ?`, deviceTypeID, accountID)
		if err != nil {
			return err
		}
		var current devreg.EnrollmentGroup
		others := make([]devreg.EnrollmentGroup, 0, len(groups))
		for _, g := range groups {
			if g.ID == groupID {
				current = g
			} else {
				others = append(others, g)
			}
		}
		if current.ID == "" {
			return devreg.Errorf(devreg.ENOTFOUND, "device type %s has no enrollment group %s", deviceTypeID, groupID)
		}
		g, err := decide(current, others)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enrollment_groups SET name = ?, id_pattern = ?, max_devices = ?, max_per_hour = ?,
			not_before = ?, not_after = ?, status = ?, temporary = ? WHERE id = ? AND account_id = ?`,
			g.Name, g.IDPattern, g.MaxDevices, g.MaxPerHour, nullTime(g.NotBefore), nullTime(g.NotAfter), string(g.Status), g.Temporary,
			groupID, accountID); err != nil {
			return err
		}
		// The rest as stored: the decision cannot change the group's identity, count or keys.
		g.ID, g.AccountID, g.DeviceTypeID, g.AllowList, g.EnrolledCount, g.CreatedAt, g.Keys =
			current.ID, current.AccountID, current.DeviceTypeID, current.AllowList, current.EnrolledCount, current.CreatedAt, current.Keys
		out = g
		return s.audit(ctx, tx, accountID)
	})
	return out, err
}

// DeleteEnrollmentGroup removes an enrollment group of a device type of the account with its keys
// and allow-list, with the audit entry ctx carries. What it registered stays: the devices, their
// batches (which keep the group's ID), and its rows of enrollments, so that an ID that enrolled
// once does not enrol again through a newer group of the account (reenroll re-allows it).
func (s *DB) DeleteEnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string) error {
	return s.changeOne(ctx, accountID, `DELETE FROM enrollment_groups WHERE id = ? AND device_type_id = ? AND account_id = ?`,
		[]any{groupID, deviceTypeID, accountID}, "device type %s has no enrollment group %s", deviceTypeID, groupID)
}

// AddEnrollmentKey adds key k (sealed) to an enrollment group of a device type of the account, with
// the audit entry ctx carries: a rotation. Every key of the group that has no end, or ends after
// oldNotAfter, ends at oldNotAfter then, so that devices made with an older key keep enrolling
// until that time. A group holds at most devreg.MaxEnrollmentGroupKeys keys: when it is full, its
// keys that have ended by now are removed, longest ended first, as many as the new key needs;
// if none has ended, the rotation is EINVALID. ENOTFOUND if there is no such group. The group's
// row is locked first, so that two rotations at once cannot both take the last place.
func (s *DB) AddEnrollmentKey(ctx context.Context, accountID, deviceTypeID, groupID string, k devreg.EnrollmentKey, oldNotAfter, now time.Time) error {
	return s.inTx(ctx, func(tx handle) error {
		if err := lockEnrollmentGroup(ctx, tx, accountID, deviceTypeID, groupID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE enrollment_group_keys SET not_after = ? WHERE group_id = ? AND (not_after IS NULL OR not_after > ?)`,
			micros(oldNotAfter), groupID, micros(oldNotAfter)); err != nil {
			return err
		}
		var n, ended int
		if err := tx.QueryRowContext(ctx, `SELECT count(*), count(CASE WHEN not_after <= ? THEN 1 END) FROM enrollment_group_keys WHERE group_id = ?`,
			micros(now), groupID).Scan(&n, &ended); err != nil {
			return err
		}
		if over := n + 1 - devreg.MaxEnrollmentGroupKeys; over > 0 {
			if ended < over {
				var first int64
				if err := tx.QueryRowContext(ctx, `SELECT min(not_after) FROM enrollment_group_keys WHERE group_id = ?`, groupID).Scan(&first); err != nil {
					return err
				}
				return devreg.Errorf(devreg.EINVALID, "enrollment group %s holds %d keys, the most a group may hold, and none has ended yet (the first ends at %s); "+
					"rotate with old_keys_not_after at or before now to end the old keys at once, or rotate again after that time",
					groupID, n, fromMicros(first).Format(time.RFC3339))
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM enrollment_group_keys WHERE group_id = ? AND id IN (
				SELECT id FROM enrollment_group_keys WHERE group_id = ? AND not_after <= ? ORDER BY not_after, created_at, id LIMIT ?)`,
				groupID, groupID, micros(now), over); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO enrollment_group_keys (group_id, id, seal_key_id, sealed, created_at, not_after) VALUES (?, ?, ?, ?, ?, ?)`,
			groupID, k.ID, k.SealKeyID, k.Sealed, micros(k.CreatedAt), nullTime(k.NotAfter)); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}
