package store

import (
	"context"
	"database/sql"
	"strings"

	"devreg"
)

// insertChunk is how many devices one of SQLite's INSERT statements writes: one statement per
// row would spend most of a big request's time crossing from Go into the database.
const insertChunk = 256

// insertDevices writes entries into SQLite's devices table, in their order (which is the order
// a batch lists them in), failing with a unique violation if one is registered.
func insertDevices(ctx context.Context, tx *sql.Tx, plan devreg.RegistrationPlan, account int64, entries devreg.RegistrationEntries) error {
	full, err := tx.PrepareContext(ctx, insertDevicesSQL(insertChunk))
	if err != nil {
		return err
	}
	defer full.Close()
	fixed := []any{plan.AccountID, account, plan.DeviceTypeID, plan.Batch.ID, plan.KeyIDs[len(plan.KeyIDs)-1], micros(plan.Batch.CreatedAt)}
	args := make([]any, 0, len(fixed)+2*insertChunk)
	return entries.Replay(insertChunk, func(es []devreg.StagedEntry) error {
		args = append(args[:0], fixed...)
		for _, e := range es {
			hash, err := currentHash(plan, e)
			if err != nil {
				return err
			}
			args = append(args, e.DeviceID, hash)
		}
		var err error
		if len(es) == insertChunk {
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, insertDevicesSQL(len(es)), args...)
		}
		return err
	})
}

// insertDevicesSQL inserts rows devices. Its parameters: the account ID and number, the device
// type, the batch, the key ID, the time, then each device's ID and hash. They are anonymous
// ('?', not '?NNN'): the driver looks up each numbered parameter's name, in a list as long as
// the statement's parameters. OR ROLLBACK: a registered device (or certificate) ends the whole
// transaction, as insertNew wants anyway, so SQLite keeps no statement journal. With ABORT it
// copied every page a statement touched that an earlier one had written: few for the indexes
// that append, but a page per row for the fingerprints' index, whose keys are random (1.1 s of
// 3 s of CPU for 100,000 devices by fingerprint, from the bench's CPU profile).
func insertDevicesSQL(rows int) string {
	return `INSERT OR ROLLBACK INTO devices (account_id, account_num, device_id, device_type_id, batch_id, status, key_id, secret_hash, created_at)
		SELECT ?, ?, column1, ?, ?, 'enabled', ?, column2, ? FROM (VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?), ", rows), ", ") + `)`
}
