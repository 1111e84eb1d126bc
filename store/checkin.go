package store

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"devreg"
)

// CheckIn records that an enabled device checked in at t, with what it reported, using a token
// issued for its registration in batch batchID. A device that checks in for the first time counts
// as connected in its batch. It answers ENOTFOUND for an unknown device and EUNAUTHORIZED for a
// disabled one (or one in a disabled batch) and for one registered again since (in another batch).
func (s *DB) CheckIn(ctx context.Context, accountID, deviceID, batchID string, t time.Time, firmware *string, reported []byte) error {
	return s.inTx(ctx, func(tx handle) error {
		var status, batchStatus, current, typeID string
		var seen *int64
		err := tx.QueryRowContext(ctx, `SELECT d.status, d.batch_id, d.last_seen_at, coalesce(b.status, 'enabled'), d.device_type_id
			FROM devices d LEFT JOIN batches b ON b.id = d.batch_id WHERE `+oneDevice, accountID, deviceID).
			Scan(&status, &current, &seen, &batchStatus, &typeID)
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
			if err := s.d.lockAccount(ctx, tx, accountID); err != nil {
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
				if err := s.appendEvents(ctx, tx, accountID, []devreg.Event{firstConnection(deviceID, typeID, batchID, "check-in", t)}); err != nil {
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

// Brokers' logins are recorded in bulk, by every server, for the same devices at once (a
// reconnect storm through two servers sends each device's login to either). Writes of the same
// rows in different orders deadlock: 40P01 dropped batches of 6-8k devices at 2,350 logins/s
// through two servers. So each write locks its rows in device ID order, a chunk of seenChunk
// devices per short transaction, without the account's lock (which registrations need, and
// which one such batch held for 30 s), and a chunk that fails for a passing reason is tried
// again, seenTries times in all, after a pause that doubles from seenBackoff.
const (
	seenChunk   = 500
	seenTries   = 4
	seenBackoff = 50 * time.Millisecond
)

// MarkSeen records that the devices of an account were seen at t (a broker let them in): their
// last_seen_at moves on, and those seen for the first time count as connected in their batch. It
// writes them in order of device ID, seenChunk to a transaction; what it could not write, after
// retries, it names in its error (the rest is written all the same).
func (s *DB) MarkSeen(ctx context.Context, accountID string, deviceIDs []string, t time.Time) error {
	ids := slices.Compact(slices.Sorted(slices.Values(deviceIDs)))
	return s.inChunks(ctx, len(ids), "devices", func(i, j int) error {
		return s.inTx(ctx, func(tx handle) error { return s.markSeen(ctx, tx, accountID, ids[i:j], t) })
	})
}

// markSeen is MarkSeen for one chunk of sorted device IDs, in transaction tx.
func (s *DB) markSeen(ctx context.Context, tx handle, accountID string, ids []string, t time.Time) error {
	// Locked first, in order (the lock is taken row by row as the sorted rows come out), and read
	// as they are then: a first sighting is counted in the batch the device is in when it is
	// written, whatever a registration moving it does before or after. Only the rows locked
	// here are written: one that a registration has added since is a device registered anew,
	// after the login.
	in, inArgs := s.d.oneOf("device_id", ids)
	rows, err := tx.QueryContext(ctx, `SELECT device_id, batch_id, last_seen_at, device_type_id FROM devices WHERE account_num = `+accountNum+`
		AND `+in+` ORDER BY device_id`+s.d.lockRows(), append([]any{accountID}, inArgs...)...)
	if err != nil {
		return err
	}
	var locked []string
	var events []devreg.Event
	first := map[string]int{}
	for rows.Next() {
		var deviceID, batchID, typeID string
		var seen sql.NullInt64
		if err := rows.Scan(&deviceID, &batchID, &seen, &typeID); err != nil {
			rows.Close()
			return err
		}
		locked = append(locked, deviceID)
		if !seen.Valid {
			first[batchID]++
			events = append(events, firstConnection(deviceID, typeID, batchID, "broker", t))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(locked) == 0 {
		return nil
	}
	in, inArgs = s.d.oneOf("device_id", locked)
	if _, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_at = ? WHERE account_num = `+accountNum+`
		AND `+in+` AND (last_seen_at IS NULL OR last_seen_at < ?)`, append(append([]any{micros(t), accountID}, inArgs...), micros(t))...); err != nil {
		return err
	}
	// Batches in order too, after every device: so do registrations (see dialect.lockReplaced).
	for _, batchID := range slices.Sorted(maps.Keys(first)) {
		if _, err := tx.ExecContext(ctx, `UPDATE batches SET connected_count = connected_count + ? WHERE account_id = ? AND id = ?`,
			first[batchID], accountID, batchID); err != nil {
			return err
		}
	}
	return s.appendEvents(ctx, tx, accountID, events)
}

// inChunks calls write for [i, j) of n items, seenChunk at a time, each again after a pause if
// it fails for a passing reason (see dialect.transient), up to seenTries times. It goes on after a
// chunk that still fails, and reports how many items (what) were not written and the last error.
func (s *DB) inChunks(ctx context.Context, n int, what string, write func(i, j int) error) error {
	var lost int
	var last error
	for i := 0; i < n; i += seenChunk {
		j := min(n, i+seenChunk)
		pause := seenBackoff
		for try := 1; ; try++ {
			err := write(i, j)
			if err == nil {
				break
			}
			if try == seenTries || !s.d.transient(err) || ctx.Err() != nil {
				lost, last = lost+j-i, fmt.Errorf("after %d tries: %w", try, err)
				break
			}
			// Jitter, so that the two sides of a deadlock do not meet again.
			select {
			case <-time.After(pause/2 + rand.N(pause)):
			case <-ctx.Done():
			}
			pause *= 2
		}
	}
	if lost > 0 {
		return fmt.Errorf("%d of %d %s were not recorded: %w", lost, n, what, last)
	}
	return nil
}
