package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
)

// eventColumns are the columns an INSERT of events gives, in order.
const eventColumns = `account_id, seq, id, time, type, device_type_id, data`

func newEventID() string { return credential.RandomID("evt", 16) }

// queueEvents queues the INSERTs of events, their columns (eventColumns) in one flat list.
func queueEvents(q stmtQueue, events []any) {
	const n = 7
	for chunk := range slices.Chunk(events, n*auditChunk) {
		q.exec(`INSERT INTO events (`+eventColumns+`) VALUES `+
			strings.TrimSuffix(strings.Repeat("("+placeholders(n)+"), ", len(chunk)/n), ", "), chunk, nil)
	}
}

// Events returns up to limit of the account's events after seq after, in seq order.
func (s *DB) Events(ctx context.Context, accountID string, after int64, limit int) ([]devreg.Event, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT seq, id, time, type, device_type_id, data FROM events
		WHERE account_id = ? AND seq > ? ORDER BY seq LIMIT ?`, accountID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	events := []devreg.Event{}
	for rows.Next() {
		e := devreg.Event{AccountID: accountID}
		var t int64
		var data string
		if err := rows.Scan(&e.Seq, &e.ID, &t, &e.Type, &e.DeviceTypeID, &data); err != nil {
			return nil, err
		}
		e.Time, e.Data = fromMicros(t), json.RawMessage(data)
		events = append(events, e)
	}
	return events, rows.Err()
}

// DeleteEventsBefore deletes up to limit events older than before that every enabled webhook of
// their account has delivered, oldest first, and returns how many it deleted: retention, in
// batches small enough not to hold up the account's writers.
func (s *DB) DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx handle) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE (account_id, seq) IN (
			SELECT e.account_id, e.seq FROM events e WHERE e.time < ?
			AND NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.account_id = e.account_id AND w.enabled AND w.delivered_seq < e.seq)
			ORDER BY e.time LIMIT ?)`, micros(before), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

const webhookColumns = `id, url, event_types, enabled, created_at, delivered_seq, attempts, failing_since, next_attempt, disabled_reason, seal_key_id, sealed_secret`

func scanWebhook(scan func(...any) error) (devreg.Webhook, error) {
	var w devreg.Webhook
	var types string
	var created, failing, next int64
	if err := scan(&w.ID, &w.URL, &types, &w.Enabled, &created, &w.DeliveredSeq, &w.Attempts, &failing, &next, &w.DisabledReason,
		&w.SealKeyID, &w.SealedSecret); err != nil {
		return w, err
	}
	if err := json.Unmarshal([]byte(types), &w.EventTypes); err != nil {
		return w, err
	}
	w.CreatedAt = fromMicros(created)
	if failing > 0 {
		t := fromMicros(failing)
		w.FailingSince = &t
	}
	if next > 0 {
		t := fromMicros(next)
		w.NextAttempt = &t
	}
	return w, nil
}

// CreateWebhook stores a new webhook of the account, which delivers the events after the
// account's newest, with the audit entry ctx carries: EINVALID when the account has
// devreg.MaxWebhooks already. The account's audit head is locked first, so two servers adding
// at once cannot both take the last place.
func (s *DB) CreateWebhook(ctx context.Context, accountID string, w *devreg.Webhook) error {
	types, err := json.Marshal(w.EventTypes)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx handle) error {
		head, err := lockAuditHead(ctx, tx, accountID)
		if err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM webhooks WHERE account_id = ?`, accountID).Scan(&n); err != nil {
			return err
		}
		if n >= devreg.MaxWebhooks {
			return devreg.Errorf(devreg.EINVALID, "the account has %d webhooks, the most it may have; delete one first", n)
		}
		w.DeliveredSeq = head.eventSeq
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhooks (id, account_id, url, event_types, enabled, created_at, delivered_seq, seal_key_id, sealed_secret)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, w.ID, accountID, w.URL, string(types), w.Enabled, micros(w.CreatedAt), w.DeliveredSeq,
			w.SealKeyID, w.SealedSecret); err != nil {
			return err
		}
		// The head is locked already: append the entry under it.
		if e := devreg.AuditFromContext(ctx); e != nil {
			q := &handleQueue{h: tx}
			if err := queueAudits(q, accountID, head, []*devreg.AuditEntry{e}); err != nil {
				return err
			}
			return q.flush(ctx)
		}
		return nil
	})
}

// Webhooks returns the account's webhooks, oldest first.
func (s *DB) Webhooks(ctx context.Context, accountID string) ([]devreg.Webhook, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE account_id = ? ORDER BY created_at, id`, accountID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ws := []devreg.Webhook{}
	for rows.Next() {
		w, err := scanWebhook(rows.Scan)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, rows.Err()
}

// Webhook returns one webhook of the account.
func (s *DB) Webhook(ctx context.Context, accountID, id string) (devreg.Webhook, error) {
	w, err := scanWebhook(s.h.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE account_id = ? AND id = ?`, accountID, id).Scan)
	return w, notFound(err, "no webhook %s", id)
}

// UpdateWebhook changes a webhook of the account as u says, with the audit entry ctx carries, and
// returns it changed. Enabling it, or moving where it resumes, clears its failures. It ends the
// webhook's lease, if a server holds one: that server took the webhook as it was (its URL, its
// types, where it resumes), so its next RecordDelivery finds the lease gone and it stops, instead
// of going on delivering to a disabled webhook, an old URL or events the change skipped; the next
// claim takes the webhook as it is now.
func (s *DB) UpdateWebhook(ctx context.Context, accountID, id string, u devreg.WebhookUpdate) (devreg.Webhook, error) {
	var w devreg.Webhook
	err := s.inTx(ctx, func(tx handle) error {
		var err error
		w, err = scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE account_id = ? AND id = ?`+s.d.lockRows(), accountID, id).Scan)
		if err != nil {
			return notFound(err, "no webhook %s", id)
		}
		reset := false
		if u.URL != nil {
			w.URL = *u.URL
		}
		if u.EventTypes != nil {
			w.EventTypes = *u.EventTypes
		}
		if u.Enabled != nil {
			reset = reset || *u.Enabled && !w.Enabled
			w.Enabled = *u.Enabled
		}
		if u.ResumeAfter != nil {
			// A seq past the newest event would silence the webhook until the account has made
			// that many, and let retention delete the events it has not had meanwhile.
			var newest int64
			if err := tx.QueryRowContext(ctx, `SELECT event_seq FROM audit_heads WHERE account_id = ?`, accountID).Scan(&newest); err != nil && err != sql.ErrNoRows {
				return err
			}
			if *u.ResumeAfter > newest {
				return devreg.Errorf(devreg.EINVALID, "resume_after %d is past the account's newest event, %d; give a seq of 0 to %d", *u.ResumeAfter, newest, newest)
			}
			w.DeliveredSeq, reset = *u.ResumeAfter, true
		}
		if reset {
			w.Attempts, w.FailingSince, w.NextAttempt, w.DisabledReason = 0, nil, nil, ""
		}
		types, err := json.Marshal(w.EventTypes)
		if err != nil {
			return err
		}
		args := []any{w.URL, string(types), w.Enabled, w.DeliveredSeq, w.Attempts, w.DisabledReason}
		sets := `url = ?, event_types = ?, enabled = ?, delivered_seq = ?, attempts = ?, disabled_reason = ?, lease_owner = '', lease_until = 0`
		if reset {
			sets += `, failing_since = 0, next_attempt = 0`
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET `+sets+` WHERE id = ?`, append(args, id)...); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
	return w, err
}

// DeleteWebhook deletes a webhook of the account and its deliveries, with the audit entry ctx
// carries.
func (s *DB) DeleteWebhook(ctx context.Context, accountID, id string) error {
	return s.changeOne(ctx, accountID, `DELETE FROM webhooks WHERE account_id = ? AND id = ?`, []any{accountID, id}, "no webhook %s", id)
}

// WebhookDeliveries returns a webhook's latest tries, newest first.
func (s *DB) WebhookDeliveries(ctx context.Context, accountID, id string) ([]devreg.WebhookDelivery, error) {
	if _, err := s.Webhook(ctx, accountID, id); err != nil {
		return nil, err
	}
	rows, err := s.h.QueryContext(ctx, `SELECT time, event_id, event_seq, event_type, attempt, status, error, answer, duration_ms
		FROM webhook_deliveries WHERE webhook_id = ? ORDER BY time DESC LIMIT ?`, id, devreg.MaxWebhookDeliveries)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	ds := []devreg.WebhookDelivery{}
	for rows.Next() {
		var d devreg.WebhookDelivery
		var t int64
		if err := rows.Scan(&t, &d.EventID, &d.EventSeq, &d.EventType, &d.Attempt, &d.Status, &d.Error, &d.Answer, &d.DurationMS); err != nil {
			return nil, err
		}
		d.Time = fromMicros(t)
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// ClaimWebhooks leases to owner, until now+lease, up to limit enabled webhooks that have events to
// deliver and whose next try is due, and whose lease (if any) has run out: each webhook is
// delivered by one server at a time, and a server that dies loses its leases when they run out.
// On PostgreSQL, servers claiming at once skip each other's rows (FOR UPDATE SKIP LOCKED).
func (s *DB) ClaimWebhooks(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int, except []string) ([]devreg.WebhookLease, error) {
	due := `SELECT w.id, w.account_id FROM webhooks w JOIN audit_heads h ON h.account_id = w.account_id
		WHERE w.enabled AND w.next_attempt <= ? AND w.lease_until <= ? AND h.event_seq > w.delivered_seq`
	args := []any{micros(now), micros(now)}
	if len(except) > 0 {
		due += ` AND w.account_id NOT IN (` + placeholders(len(except)) + `)`
		for _, a := range except {
			args = append(args, a)
		}
	}
	var leases []devreg.WebhookLease
	until := now.Add(lease)
	// Those waiting longest first: a webhook given back has its lease's end at the time it was.
	err := s.claimDue(ctx, due, "w", "w.next_attempt, w.lease_until", args, limit, func(tx handle, row []string) error {
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET lease_owner = ?, lease_until = ? WHERE id = ?`, owner, micros(until), row[0]); err != nil {
			return err
		}
		w, err := scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = ?`, row[0]).Scan)
		if err != nil {
			return err
		}
		leases = append(leases, devreg.WebhookLease{Webhook: w, AccountID: row[1], Owner: owner, Until: until})
		return nil
	})
	return leases, err
}

// claimDue leases the rows that query due (with args) selects, up to limit in order of order,
// in a write transaction: lease is called with each row's columns. On PostgreSQL the rows of
// alias are locked with SKIP LOCKED, so that servers claiming at once take different rows. Most
// polls find nothing: a look without a write transaction (SQLite's one writer) comes first.
func (s *DB) claimDue(ctx context.Context, due, alias, order string, args []any, limit int, lease func(tx handle, row []string) error) error {
	var n int
	if err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM (`+due+` LIMIT 1) AS d`, args...).Scan(&n); err != nil || n == 0 {
		return err
	}
	return s.inTx(ctx, func(tx handle) error {
		rows, err := tx.QueryContext(ctx, due+` ORDER BY `+order+` LIMIT ?`+s.d.claimRows(alias), append(args, limit)...)
		if err != nil {
			return err
		}
		cols, err := rows.Columns()
		if err != nil {
			rows.Close()
			return err
		}
		var found [][]string
		for rows.Next() {
			row := make([]string, len(cols))
			ptrs := make([]any, len(cols))
			for i := range row {
				ptrs[i] = &row[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return err
			}
			found = append(found, row)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, row := range found {
			if err := lease(tx, row); err != nil {
				return err
			}
		}
		return nil
	})
}

// RecordDeliveries records tries of l's webhook, in order, and where the webhook goes on: every
// try but the last delivered its event; a delivered last one moves the webhook past its event
// (or past passed, events not of its types after it); a failed one counts an attempt and sets
// the next after devreg.WebhookBackoff, and one that has failed for devreg.WebhookGiveUp
// disables the webhook. With no tries, it moves the webhook past passed. The lease then lasts
// until renew (the server goes on delivering). It does nothing, and reports false, when l's
// lease is no longer held: another server has the webhook now, and decides.
func (s *DB) RecordDeliveries(ctx context.Context, l devreg.WebhookLease, ds []devreg.WebhookDelivery, passed int64, renew time.Time) (bool, error) {
	held := false
	err := s.inTx(ctx, func(tx handle) error {
		var owner string
		var until, failing int64
		var attempts int
		err := tx.QueryRowContext(ctx, `SELECT lease_owner, lease_until, attempts, failing_since FROM webhooks WHERE id = ?`+s.d.lockRows(), l.ID).
			Scan(&owner, &until, &attempts, &failing)
		if err == sql.ErrNoRows {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if owner != l.Owner || until != micros(l.Until) {
			return nil
		}
		held = true
		if _, err := tx.ExecContext(ctx, `UPDATE webhooks SET lease_until = ? WHERE id = ?`, micros(renew), l.ID); err != nil {
			return err
		}
		forward := func(seq int64) error {
			_, err := tx.ExecContext(ctx, `UPDATE webhooks SET delivered_seq = CASE WHEN delivered_seq > ? THEN delivered_seq ELSE ? END,
				attempts = 0, failing_since = 0, next_attempt = 0 WHERE id = ?`, seq, seq, l.ID)
			return err
		}
		if len(ds) == 0 {
			return forward(passed)
		}
		const n = 10
		rows := make([]any, 0, n*len(ds))
		for _, d := range ds {
			rows = append(rows, l.ID, micros(d.Time), d.EventID, d.EventSeq, d.EventType, d.Attempt, d.Status, d.Error, d.Answer, d.DurationMS)
		}
		for chunk := range slices.Chunk(rows, n*100) {
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, time, event_id, event_seq, event_type, attempt, status, error, answer, duration_ms)
				VALUES `+strings.TrimSuffix(strings.Repeat("("+placeholders(n)+"), ", len(chunk)/n), ", "), chunk...); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND time < (
			SELECT min(time) FROM (SELECT time FROM webhook_deliveries WHERE webhook_id = ? ORDER BY time DESC LIMIT ?) AS kept)`,
			l.ID, l.ID, devreg.MaxWebhookDeliveries); err != nil {
			return err
		}
		last := ds[len(ds)-1]
		if last.Delivered() {
			return forward(max(last.EventSeq, passed))
		}
		if len(ds) > 1 {
			if err := forward(ds[len(ds)-2].EventSeq); err != nil {
				return err
			}
			attempts, failing = 0, 0
		}
		if failing == 0 {
			failing = micros(last.Time)
		}
		attempts++
		next := last.Time.Add(devreg.WebhookBackoff(attempts))
		if last.Time.Sub(fromMicros(failing)) >= devreg.WebhookGiveUp {
			_, err := tx.ExecContext(ctx, `UPDATE webhooks SET enabled = ?, attempts = ?, failing_since = ?, next_attempt = 0, disabled_reason = ? WHERE id = ?`,
				false, attempts, failing, "event "+last.EventID+" failed for 3 days ("+devreg.Thousands(int64(attempts))+" tries); devreg disabled the webhook: enable it to try again", l.ID)
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhooks SET attempts = ?, failing_since = ?, next_attempt = ? WHERE id = ?`, attempts, failing, micros(next), l.ID)
		return err
	})
	return held, err
}

// HoldsLease reports whether l's lease is still held: a PATCH of the webhook ends it (see
// UpdateWebhook), and a server checks before each delivery, so that the change holds from the
// next one.
func (s *DB) HoldsLease(ctx context.Context, l devreg.WebhookLease) (bool, error) {
	var n int
	err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM webhooks WHERE id = ? AND lease_owner = ? AND lease_until = ?`,
		l.ID, l.Owner, micros(l.Until)).Scan(&n)
	return n == 1, err
}

// ReleaseWebhook ends l's lease at now, early, so that the webhook's next event need not wait for it to
// run out.
func (s *DB) ReleaseWebhook(ctx context.Context, l devreg.WebhookLease, now time.Time) error {
	_, err := s.exec(ctx, `UPDATE webhooks SET lease_owner = '', lease_until = ? WHERE id = ? AND lease_owner = ? AND lease_until = ?`,
		micros(now), l.ID, l.Owner, micros(l.Until))
	return err
}

// ClaimCursors leases to owner, until now+lease, up to limit accounts whose events sink has not
// published to its end, and whose lease (if any) has run out, making the cursors of accounts it
// meets first (at seq 0: a new sink gets the events kept). As webhooks are, each account's events
// go to a sink from one server at a time.
func (s *DB) ClaimCursors(ctx context.Context, sink, owner string, now time.Time, lease time.Duration, limit int) ([]devreg.CursorLease, error) {
	const due = `SELECT c.account_id FROM event_cursors c JOIN audit_heads h ON h.account_id = c.account_id
		WHERE c.sink = ? AND c.lease_until <= ? AND h.event_seq > c.seq`
	var n int
	if err := s.h.QueryRowContext(ctx, `SELECT count(*) FROM audit_heads h WHERE h.event_seq > 0 AND NOT EXISTS
		(SELECT 1 FROM event_cursors c WHERE c.sink = ? AND c.account_id = h.account_id)`, sink).Scan(&n); err != nil {
		return nil, err
	}
	if n > 0 {
		if _, err := s.exec(ctx, `INSERT INTO event_cursors (sink, account_id, seq) SELECT ?, account_id, 0 FROM audit_heads
			WHERE event_seq > 0 ON CONFLICT (sink, account_id) DO NOTHING`, sink); err != nil {
			return nil, err
		}
	}
	var leases []devreg.CursorLease
	until := now.Add(lease)
	err := s.claimDue(ctx, due, "c", "c.lease_until", []any{sink, micros(now)}, limit, func(tx handle, row []string) error {
		l := devreg.CursorLease{Sink: sink, AccountID: row[0], Owner: owner, Until: until}
		if err := tx.QueryRowContext(ctx, `UPDATE event_cursors SET lease_owner = ?, lease_until = ? WHERE sink = ? AND account_id = ? RETURNING seq`,
			owner, micros(until), sink, row[0]).Scan(&l.Seq); err != nil {
			return err
		}
		leases = append(leases, l)
		return nil
	})
	return leases, err
}

// AdvanceCursor moves l's cursor to seq, and renews the lease until renew, or ends it when
// renew is zero; it reports false, and changes nothing, when the lease is no longer held.
func (s *DB) AdvanceCursor(ctx context.Context, l devreg.CursorLease, seq int64, renew time.Time) (bool, error) {
	until, owner := micros(renew), l.Owner
	if renew.IsZero() {
		until, owner = 0, ""
	}
	res, err := s.exec(ctx, `UPDATE event_cursors SET seq = CASE WHEN seq > ? THEN seq ELSE ? END, lease_owner = ?, lease_until = ?
		WHERE sink = ? AND account_id = ? AND lease_owner = ? AND lease_until = ?`, seq, seq, owner, until, l.Sink, l.AccountID, l.Owner, micros(l.Until))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// AddWebhookDelivery records a try that is no part of the webhook's progress (a test event).
func (s *DB) AddWebhookDelivery(ctx context.Context, accountID, id string, d devreg.WebhookDelivery) error {
	return s.inTx(ctx, func(tx handle) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM webhooks WHERE account_id = ? AND id = ?`, accountID, id).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return devreg.Errorf(devreg.ENOTFOUND, "no webhook %s", id)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (webhook_id, time, event_id, event_seq, event_type, attempt, status, error, answer, duration_ms)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, id, micros(d.Time), d.EventID, d.EventSeq, d.EventType, d.Attempt, d.Status, d.Error, d.Answer, d.DurationMS)
		return err
	})
}
