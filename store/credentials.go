package store

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"devreg"
)

// A device's first credential lives in its own row: key_id and secret_hash, and the cred_
// columns, which are NULL where they take their default (so a registration writes nothing more).
// Its further credentials are rows of the credentials table. Whenever the credential in the row
// is deleted, another takes its place in the row, so a device always has one there.

// registrationCredentialID is the ID of the credential a registration made in batch batchID, as
// long as the device's row does not name another: 'cr_' and the batch ID. Credential IDs are
// unique per device, so the devices of a batch may share it.
func registrationCredentialID(batchID string) string { return "cr_" + batchID }

// deviceAuthColumns are what deviceAuthRows reads of a device, its batch's status and one of the
// credentials in the credentials table (NULL where it has none).
const deviceAuthColumns = `d.device_type_id, d.batch_id, d.status, coalesce(b.status, 'enabled'), d.created_at,
	d.key_id, d.secret_hash, d.cred_id, d.cred_created_at, d.cred_not_before, d.cred_not_after, d.cred_status, d.cred_last_used_at, d.cred_source,
	c.id, c.key_id, c.secret_hash, c.created_at, c.not_before, c.not_after, c.status, c.last_used_at, c.source`

// deviceAuthJoins join a device d to its batch and its credentials.
const deviceAuthJoins = ` LEFT JOIN batches b ON b.id = d.batch_id
	LEFT JOIN credentials c ON c.account_num = d.account_num AND c.device_id = d.device_id`

// deviceAuthQuery reads a device, its batch's status and every credential, one row per credential
// in the credentials table (or one row without).
const deviceAuthQuery = `SELECT ` + deviceAuthColumns + ` FROM devices d` + deviceAuthJoins + `
	WHERE d.account_num = ` + accountNum + ` AND d.device_id = ?`

// deviceLoginQuery is deviceAuthQuery with the login throttle's row in front: it always gives at
// least one row, whose device columns are NULL when the device does not exist.
const deviceLoginQuery = `SELECT f.window_start, f.count, ` + deviceAuthColumns + `
	FROM (SELECT 1 AS one) AS o
	LEFT JOIN failures f ON f.key = ? AND f.window_start > ?
	LEFT JOIN devices d ON d.account_num = ` + accountNum + ` AND d.device_id = ?` + deviceAuthJoins

// DeviceAuth returns what authenticating a device needs, in one read: its type, its batch,
// whether it and its batch are enabled, and its credentials, oldest first.
// Every topic check and token a broker asks about reads it: its statement is prepared once.
func (s *DB) DeviceAuth(ctx context.Context, accountID, deviceID string) (devreg.DeviceAuth, error) {
	stmt, err := s.deviceAuthStmt.prepare(ctx, s.db, s.h, deviceAuthQuery)
	if err != nil {
		return devreg.DeviceAuth{}, err
	}
	rows, err := stmt.QueryContext(ctx, accountID, deviceID)
	return readDeviceAuth(rows, err, deviceID)
}

// deviceAuth is DeviceAuth in a transaction.
func (s *DB) deviceAuth(ctx context.Context, q handle, accountID, deviceID string) (devreg.DeviceAuth, error) {
	rows, err := q.QueryContext(ctx, deviceAuthQuery, accountID, deviceID)
	return readDeviceAuth(rows, err, deviceID)
}

// readDeviceAuth reads the rows of deviceAuthQuery.
func readDeviceAuth(rows *sql.Rows, err error, deviceID string) (devreg.DeviceAuth, error) {
	if err != nil {
		return devreg.DeviceAuth{}, err
	}
	defer rows.Close()
	var r deviceAuthRows
	for rows.Next() {
		if err := r.scan(rows); err != nil {
			return devreg.DeviceAuth{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return devreg.DeviceAuth{}, err
	}
	return r.result(deviceID)
}

// DeviceLogin is DeviceAuth and Failures(key) in one read, for a device's login: both come from
// the same snapshot, and a login that succeeds takes no other. A device that does not exist comes
// back without credentials (and without an error: the throttle's state is there all the same).
func (s *DB) DeviceLogin(ctx context.Context, accountID, deviceID, key string, now time.Time, window time.Duration) (devreg.DeviceAuth, int, time.Time, error) {
	stmt, err := s.deviceLogin.prepare(ctx, s.db, s.h, deviceLoginQuery)
	if err != nil {
		return devreg.DeviceAuth{}, 0, time.Time{}, err
	}
	rows, err := stmt.QueryContext(ctx, key, micros(now.Add(-window)), accountID, deviceID)
	if err != nil {
		return devreg.DeviceAuth{}, 0, time.Time{}, err
	}
	defer rows.Close()
	var r deviceAuthRows
	var start, count sql.NullInt64
	for rows.Next() {
		if err := r.scan(rows, &start, &count); err != nil {
			return devreg.DeviceAuth{}, 0, time.Time{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return devreg.DeviceAuth{}, 0, time.Time{}, err
	}
	var since time.Time
	if count.Valid {
		since = fromMicros(start.Int64)
	}
	d, err := r.result(deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.DeviceAuth{}, int(count.Int64), since, nil
	}
	return d, int(count.Int64), since, err
}

// deviceAuthRows gathers a DeviceAuth from the rows of deviceAuthColumns.
type deviceAuthRows struct {
	d     devreg.DeviceAuth
	found bool
}

// scan reads one row: first into lead, the columns in front of deviceAuthColumns, if any.
func (r *deviceAuthRows) scan(rows *sql.Rows, lead ...any) error {
	var typeID, batchID, status, batchStatus, ownKey sql.NullString
	var created sql.NullInt64
	var own devreg.StoredCredential
	var ownID, ownStatus, ownSource sql.NullString
	var ownCreated, ownNotBefore, ownNotAfter, ownUsed sql.NullInt64
	var extraID, extraKey, extraStatus, extraSource sql.NullString
	var extraHash []byte
	var extraCreated, extraNotBefore, extraNotAfter, extraUsed sql.NullInt64
	if err := rows.Scan(append(lead, &typeID, &batchID, &status, &batchStatus, &created,
		&ownKey, &own.Hash, &ownID, &ownCreated, &ownNotBefore, &ownNotAfter, &ownStatus, &ownUsed, &ownSource,
		&extraID, &extraKey, &extraHash, &extraCreated, &extraNotBefore, &extraNotAfter, &extraStatus, &extraUsed, &extraSource)...); err != nil {
		return err
	}
	if !typeID.Valid { // no such device
		return nil
	}
	d := &r.d
	if !r.found {
		r.found = true
		d.DeviceTypeID, d.BatchID = typeID.String, batchID.String
		d.Enabled = status.String == string(devreg.StatusEnabled) && batchStatus.String == string(devreg.StatusEnabled)
		own.KeyID = ownKey.String
		own.InDevice = true
		own.ID = registrationCredentialID(d.BatchID)
		if ownID.Valid {
			own.ID = ownID.String
		}
		own.CreatedAt = fromMicros(created.Int64)
		if ownCreated.Valid {
			own.CreatedAt = fromMicros(ownCreated.Int64)
		}
		own.NotBefore, own.NotAfter, own.LastUsedAt = fromNullMicros(ownNotBefore), fromNullMicros(ownNotAfter), fromNullMicros(ownUsed)
		own.Status, own.Source = devreg.StatusEnabled, devreg.CredentialFromRegistration
		if ownStatus.Valid {
			own.Status = devreg.DeviceStatus(ownStatus.String)
		}
		if ownSource.Valid {
			own.Source = devreg.CredentialSource(ownSource.String)
		}
		d.Credentials = append(d.Credentials, own)
	}
	if extraID.Valid {
		d.Credentials = append(d.Credentials, devreg.StoredCredential{
			Credential: devreg.Credential{
				ID: extraID.String, CreatedAt: fromMicros(extraCreated.Int64),
				NotBefore: fromNullMicros(extraNotBefore), NotAfter: fromNullMicros(extraNotAfter),
				Status: devreg.DeviceStatus(extraStatus.String), LastUsedAt: fromNullMicros(extraUsed),
				Source: devreg.CredentialSource(extraSource.String),
			},
			KeyID: extraKey.String, Hash: extraHash,
		})
	}
	return nil
}

// result returns the DeviceAuth read, its credentials oldest first; ENOTFOUND if there was no
// device.
func (r *deviceAuthRows) result(deviceID string) (devreg.DeviceAuth, error) {
	d := r.d
	if !r.found {
		return d, devreg.Errorf(devreg.ENOTFOUND, "no device %s", deviceID)
	}
	for i := range d.Credentials {
		c := &d.Credentials[i]
		c.Kind = devreg.CredentialSecret
		if c.KeyID == devreg.CertificateKeyID {
			c.Kind, c.SHA256 = devreg.CredentialCertificate, hex.EncodeToString(c.Hash)
		}
	}
	sort.SliceStable(d.Credentials, func(i, j int) bool {
		a, b := d.Credentials[i], d.Credentials[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.Before(b.CreatedAt)
		}
		if a.InDevice != b.InDevice {
			return a.InDevice
		}
		return a.ID < b.ID
	})
	return d, nil
}

// CredentialUsed records, at a credential's first use, that the device authenticated with it at t,
// and moves its hash to another key when keyID is set, in one write. A credential that has
// changed since it was read (another hash, or gone) is left alone.
//
// A first use (t set, and the credential never used before) is also the credential.first_use
// event, in the same transaction, once however many servers see it at once.
func (s *DB) CredentialUsed(ctx context.Context, accountID, deviceID string, c devreg.StoredCredential, t time.Time, keyID string, hash []byte) error {
	if keyID == "" {
		keyID, hash = c.KeyID, c.Hash
	}
	if !t.IsZero() && c.LastUsedAt == nil {
		return s.inTx(ctx, func(tx handle) error { return s.firstUse(ctx, tx, accountID, deviceID, c, t, keyID, hash) })
	}
	if c.InDevice {
		_, err := s.exec(ctx, `UPDATE devices SET cred_last_used_at = coalesce(?, cred_last_used_at), key_id = ?, secret_hash = ?
			WHERE `+oneDevice+` AND key_id = ? AND secret_hash = ?`,
			nullMicros(t), keyID, hash, accountID, deviceID, c.KeyID, c.Hash)
		return err
	}
	_, err := s.exec(ctx, `UPDATE credentials SET last_used_at = coalesce(?, last_used_at), key_id = ?, secret_hash = ?
		WHERE account_num = `+accountNum+` AND device_id = ? AND id = ? AND key_id = ? AND secret_hash = ?`,
		nullMicros(t), keyID, hash, accountID, deviceID, c.ID, c.KeyID, c.Hash)
	return err
}

// firstUse is CredentialUsed for a credential's first use, in tx.
func (s *DB) firstUse(ctx context.Context, tx handle, accountID, deviceID string, c devreg.StoredCredential, t time.Time, keyID string, hash []byte) error {
	var res sql.Result
	var err error
	if c.InDevice {
		res, err = tx.ExecContext(ctx, `UPDATE devices SET cred_last_used_at = ?, key_id = ?, secret_hash = ?
			WHERE `+oneDevice+` AND key_id = ? AND secret_hash = ? AND cred_last_used_at IS NULL`,
			micros(t), keyID, hash, accountID, deviceID, c.KeyID, c.Hash)
	} else {
		res, err = tx.ExecContext(ctx, `UPDATE credentials SET last_used_at = ?, key_id = ?, secret_hash = ?
			WHERE account_num = `+accountNum+` AND device_id = ? AND id = ? AND key_id = ? AND secret_hash = ? AND last_used_at IS NULL`,
			micros(t), keyID, hash, accountID, deviceID, c.ID, c.KeyID, c.Hash)
	}
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // used since, by another server, or changed: that one records it
	}
	var typeID string
	if err := tx.QueryRowContext(ctx, `SELECT device_type_id FROM devices WHERE `+oneDevice, accountID, deviceID).Scan(&typeID); err != nil {
		return err
	}
	kind := "secret"
	if c.SHA256 != "" {
		kind = "certificate"
	}
	data, _ := json.Marshal(map[string]string{"device_id": deviceID, "credential_id": c.ID, "device_type_id": typeID, "kind": kind})
	return s.appendEvents(ctx, tx, accountID, []devreg.Event{{Type: devreg.EventCredentialFirstUse, Time: t.UTC(), DeviceTypeID: typeID, Data: data}})
}

// AppendEvents appends, in a transaction of its own, events that record no user's change and no
// write of the store's own (a device's lock-out).
func (s *DB) AppendEvents(ctx context.Context, accountID string, evs []devreg.Event) error {
	return s.inTx(ctx, func(tx handle) error { return s.appendEvents(ctx, tx, accountID, evs) })
}

// nullMicros is t in microseconds, or NULL for the zero time.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return micros(t)
}

// MarkCredentialsUsed moves on the last use of credentials that have been used before (a first
// use is written at once, by CredentialUsed). As MarkSeen, it writes in order of device ID,
// seenChunk to a transaction, each of which first locks its devices' rows in that order (as
// every change of a device's credentials does before it touches them), and names in its error
// what it could not write after retries.
func (s *DB) MarkCredentialsUsed(ctx context.Context, accountID string, uses []devreg.CredentialUse, t time.Time) error {
	uses = slices.Clone(uses)
	slices.SortFunc(uses, func(a, b devreg.CredentialUse) int {
		return cmp.Or(strings.Compare(a.DeviceID, b.DeviceID), strings.Compare(a.CredentialID, b.CredentialID), boolCompare(a.InDevice, b.InDevice))
	})
	uses = slices.Compact(uses)
	return s.inChunks(ctx, len(uses), "credentials", func(i, j int) error {
		return s.inTx(ctx, func(tx handle) error { return s.markCredentialsUsed(ctx, tx, accountID, uses[i:j], t) })
	})
}

// markCredentialsUsed is MarkCredentialsUsed for one chunk of sorted uses, in transaction tx.
func (s *DB) markCredentialsUsed(ctx context.Context, tx handle, accountID string, uses []devreg.CredentialUse, t time.Time) error {
	var devices, own []string
	var extra []devreg.CredentialUse
	for k, u := range uses {
		if k == 0 || u.DeviceID != uses[k-1].DeviceID {
			devices = append(devices, u.DeviceID)
		}
		if u.InDevice {
			own = append(own, u.DeviceID)
		} else {
			extra = append(extra, u)
		}
	}
	if err := s.d.lockDevices(ctx, tx, accountID, devices); err != nil {
		return err
	}
	if len(own) > 0 {
		in, inArgs := s.d.oneOf("device_id", own)
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET cred_last_used_at = ? WHERE account_num = `+accountNum+`
			AND `+in+` AND cred_last_used_at < ?`, append(append([]any{micros(t), accountID}, inArgs...), micros(t))...); err != nil {
			return err
		}
	}
	if len(extra) > 0 {
		args := []any{micros(t), accountID}
		for _, u := range extra {
			args = append(args, u.DeviceID, u.CredentialID)
		}
		pairs := strings.TrimSuffix(strings.Repeat("(?, ?), ", len(extra)), ", ")
		if _, err := tx.ExecContext(ctx, `UPDATE credentials SET last_used_at = ? WHERE account_num = `+accountNum+`
			AND (device_id, id) IN (VALUES `+pairs+`) AND last_used_at < ?`, append(args, micros(t))...); err != nil {
			return err
		}
	}
	return nil
}

// boolCompare orders false before true.
func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// validAt is the condition that a credential is valid at t, as Credential.ValidAt decides:
// enabled, and t within its window. prefix names its columns: "d.cred_" for the credential in a
// device's row (whose status is NULL there when enabled), "c." for a row of credentials.
func validAt(prefix string, t time.Time) string {
	now := micros(t)
	return fmt.Sprintf(`coalesce(%[1]sstatus, 'enabled') = 'enabled' AND coalesce(%[1]snot_before, %[2]d) <= %[2]d AND coalesce(%[1]snot_after, %[3]d) > %[2]d`,
		prefix, now, now+1)
}

// ChangeCredentials reads a device's credentials and writes what decide makes of them, in one
// transaction that holds the device, so that no other change of them falls in between (the
// limit of five depends on it). An error from decide writes nothing and is returned.
func (s *DB) ChangeCredentials(ctx context.Context, accountID, deviceID string, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error {
	return s.changeCredentials(ctx, accountID, deviceID, false, decide)
}

// AddCertificateCredential is ChangeCredentials for a change that adds a certificate: it also
// refuses one that another device holds. On PostgreSQL it takes the account's lock, as a
// registration does, before the device's row (the order a registration takes them in), so that a
// registration cannot give the same certificate to another device in between.
func (s *DB) AddCertificateCredential(ctx context.Context, accountID, deviceID string, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error {
	return s.changeCredentials(ctx, accountID, deviceID, true, decide)
}

func (s *DB) changeCredentials(ctx context.Context, accountID, deviceID string, lockAccount bool, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error {
	return s.inTx(ctx, func(tx handle) error {
		if lockAccount {
			if err := s.d.lockAccount(ctx, tx, accountID); err != nil {
				return err
			}
		}
		if err := s.d.lock(ctx, tx, `SELECT 1 FROM devices WHERE `+oneDevice+s.d.lockRowsExclusive(), accountID, deviceID); err != nil {
			return err
		}
		d, err := s.deviceAuth(ctx, tx, accountID, deviceID)
		if err != nil {
			return err
		}
		ch, err := decide(d)
		if err != nil {
			return err
		}
		if ch.Add != nil && ch.Add.KeyID == devreg.CertificateKeyID && !lockAccount {
			return fmt.Errorf("add a certificate credential with AddCertificateCredential, which holds the account's lock")
		}
		if err := checkAddedCertificate(ctx, tx, accountID, deviceID, ch); err != nil {
			return err
		}
		if err := s.applyCredentialChange(ctx, tx, accountID, deviceID, d, ch); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}

func (s *DB) applyCredentialChange(ctx context.Context, tx handle, accountID, deviceID string, d devreg.DeviceAuth, ch devreg.CredentialChange) error {
	creds := map[string]devreg.StoredCredential{}
	var own devreg.StoredCredential
	for _, c := range d.Credentials {
		creds[c.ID] = c
		if c.InDevice {
			own = c
		}
	}
	for _, u := range ch.Update {
		c, ok := creds[u.ID]
		if !ok {
			return fmt.Errorf("update credential %s: the device has no such credential", u.ID)
		}
		c.Status, c.NotBefore, c.NotAfter = u.Status, u.NotBefore, u.NotAfter
		creds[u.ID] = c
		var err error
		if c.InDevice {
			_, err = tx.ExecContext(ctx, `UPDATE devices SET cred_status = ?, cred_not_before = ?, cred_not_after = ? WHERE `+oneDevice,
				string(c.Status), nullTime(c.NotBefore), nullTime(c.NotAfter), accountID, deviceID)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE credentials SET status = ?, not_before = ?, not_after = ?
				WHERE account_num = `+accountNum+` AND device_id = ? AND id = ?`,
				string(c.Status), nullTime(c.NotBefore), nullTime(c.NotAfter), accountID, deviceID, c.ID)
		}
		if err != nil {
			return err
		}
	}
	ownDeleted := false
	for _, id := range ch.Delete {
		c, ok := creds[id]
		if !ok {
			return fmt.Errorf("delete credential %s: the device has no such credential", id)
		}
		delete(creds, id)
		if c.InDevice {
			ownDeleted = true
			continue
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = `+accountNum+` AND device_id = ? AND id = ?`,
			accountID, deviceID, id); err != nil {
			return err
		}
	}
	add := ch.Add
	if ownDeleted {
		// The oldest credential left takes the row's place; the new one if none is left.
		var next *devreg.StoredCredential
		for _, c := range d.Credentials {
			if c, ok := creds[c.ID]; ok && !c.InDevice {
				next = &c
				break
			}
		}
		if next == nil {
			next, add = add, nil
		}
		if next == nil {
			return fmt.Errorf("delete credential %s: it is the device's last", own.ID)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET key_id = ?, secret_hash = ?, cred_id = ?, cred_created_at = ?, cred_not_before = ?,
			cred_not_after = ?, cred_status = ?, cred_last_used_at = ?, cred_source = ? WHERE `+oneDevice,
			next.KeyID, next.Hash, next.ID, micros(next.CreatedAt), nullTime(next.NotBefore), nullTime(next.NotAfter), string(next.Status),
			nullTime(next.LastUsedAt), string(next.Source), accountID, deviceID); err != nil {
			return err
		}
		if next != ch.Add {
			if _, err := tx.ExecContext(ctx, `DELETE FROM credentials WHERE account_num = `+accountNum+` AND device_id = ? AND id = ?`,
				accountID, deviceID, next.ID); err != nil {
				return err
			}
		}
	}
	if add != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO credentials (account_num, device_id, id, key_id, secret_hash, created_at, not_before, not_after, status, last_used_at, source)
			VALUES (`+accountNum+`, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			accountID, deviceID, add.ID, add.KeyID, add.Hash, micros(add.CreatedAt), nullTime(add.NotBefore), nullTime(add.NotAfter),
			string(add.Status), nullTime(add.LastUsedAt), string(add.Source)); err != nil {
			return err
		}
	}
	return nil
}

// nullTime is *t in microseconds, or NULL.
func nullTime(t *time.Time) any {
	if t == nil {
		return nil
	}
	return micros(*t)
}

// preparedQuery is a statement prepared once for the pool (database/sql prepares it on each
// connection the first time it runs there), for the query every device login makes: preparing
// one with joins costs SQLite more than running it. The zero value prepares on first use.
type preparedQuery struct {
	stmt atomic.Pointer[sql.Stmt]
	mu   sync.Mutex // held while preparing
}

// prepare returns the statement of query on db, preparing it the first time.
func (p *preparedQuery) prepare(ctx context.Context, db *sql.DB, h handle, query string) (*sql.Stmt, error) {
	if stmt := p.stmt.Load(); stmt != nil {
		return stmt, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if stmt := p.stmt.Load(); stmt != nil {
		return stmt, nil
	}
	stmt, err := db.PrepareContext(ctx, h.d.bind(query))
	if err != nil {
		return nil, err
	}
	p.stmt.Store(stmt)
	return stmt, nil
}

// close closes the statement, if it was prepared.
func (p *preparedQuery) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if stmt := p.stmt.Swap(nil); stmt != nil {
		stmt.Close()
	}
}
