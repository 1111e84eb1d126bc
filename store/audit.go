package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
)

// audit appends the audit entry that ctx carries, if any, in the transaction tx that makes its
// change. Every audited write calls it last, after its change has succeeded, so that the head's
// lock, which serializes an account's appends, is held only until the commit.
func (s *DB) audit(ctx context.Context, tx handle, accountID string) error {
	e := devreg.AuditFromContext(ctx)
	if e == nil {
		return nil
	}
	return s.appendAudit(ctx, tx, accountID, e)
}

// auditHead is an account's newest audit entry and newest event, locked.
type auditHead struct {
	devreg.AuditHead
	time     int64 // of the newest entry, in microseconds
	eventSeq int64 // the newest event's seq
}

// lockAuditHead locks the account's audit head in tx, making it at the account's first entry,
// and returns it. The row's lock (a row lock on PostgreSQL, the one writer on SQLite) serializes
// the account's appends of audit entries and events on every server.
func lockAuditHead(ctx context.Context, tx handle, accountID string) (auditHead, error) {
	var head auditHead
	for {
		err := tx.QueryRowContext(ctx, lockAuditHeadSQL, accountID).Scan(&head.Seq, &head.time, &head.Hash, &head.eventSeq)
		if err == nil {
			return head, nil
		}
		if err != sql.ErrNoRows {
			return head, fmt.Errorf("audit head: %w", err)
		}
		if _, err := tx.ExecContext(ctx, makeAuditHeadSQL, accountID, devreg.GenesisHash); err != nil {
			return head, fmt.Errorf("audit head: %w", err)
		}
	}
}

// lockAuditHeadSQL locks an account's audit head (its one argument), returning its seq, time,
// hash and event seq; makeAuditHeadSQL makes it (account, genesis hash) unless it exists.
const (
	lockAuditHeadSQL = `UPDATE audit_heads SET seq = seq + 1 WHERE account_id = ? RETURNING seq - 1, time, hash, event_seq`
	makeAuditHeadSQL = `INSERT INTO audit_heads (account_id, seq, time, hash) VALUES (?, 0, 0, ?) ON CONFLICT (account_id) DO NOTHING`
)

// queueAuditHead queues on q the statements that lock the account's audit head, making it at
// the account's first entry, into head, and that set *found.
func queueAuditHead(q stmtQueue, accountID string, head *auditHead, found *bool) {
	q.exec(makeAuditHeadSQL, []any{accountID, devreg.GenesisHash}, nil)
	q.query(lockAuditHeadSQL, []any{accountID}, func(scan func(...any) error) error {
		*found = true
		return scan(&head.Seq, &head.time, &head.Hash, &head.eventSeq)
	})
}

// appendAudit appends e to the account's chain in tx, filling in its ID, seq, hash and (so that
// times never go back within an account) a time no earlier than the previous entry's.
func (s *DB) appendAudit(ctx context.Context, tx handle, accountID string, e *devreg.AuditEntry) error {
	return s.appendAudits(ctx, tx, accountID, []*devreg.AuditEntry{e})
}

// auditChunk is how many entries one INSERT of appendAudits writes (10 parameters each).
const auditChunk = 256

// appendAudits appends es to the account's chain in tx, in order, as appendAudit appends one:
// with the head locked and written once, and the entries in as few statements as their number
// allows (enrollments written together append many).
func (s *DB) appendAudits(ctx context.Context, tx handle, accountID string, es []*devreg.AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	head, err := lockAuditHead(ctx, tx, accountID)
	if err != nil {
		return err
	}
	q := &handleQueue{h: tx}
	if err := queueAudits(q, accountID, head, es); err != nil {
		return err
	}
	if err := q.flush(ctx); err != nil {
		return fmt.Errorf("audit entry: %w", err)
	}
	return nil
}

// queueAudits queues on q the statements that append es to the account's chain after its head
// (locked), filling in their IDs, seqs and hashes and times no earlier than the previous entry's,
// that append the event each makes (devreg.EventOf), and that move the head to the last of both.
func queueAudits(q stmtQueue, accountID string, head auditHead, es []*devreg.AuditEntry) error {
	last := fromMicros(head.time)
	rows := make([]any, 0, 10*len(es))
	var events []any
	for _, e := range es {
		if e.ID == "" {
			e.ID = credential.RandomID("aud", 16)
		}
		e.Seq, e.AccountID = head.Seq+1, accountID
		e.Time = e.Time.UTC().Truncate(time.Microsecond)
		if e.Time.Before(last) {
			e.Time = last
		}
		canonical, err := e.Canonical()
		if err != nil {
			return fmt.Errorf("audit entry: %w", err)
		}
		e.Hash = devreg.ChainHash(head.Hash, canonical)
		head.Seq, head.Hash, last = e.Seq, e.Hash, e.Time
		rows = append(rows, accountID, e.Seq, micros(e.Time), e.Action, e.Actor.Type, e.Actor.ID, e.Object.Type, e.Object.ID, string(canonical), e.Hash)
		if ev, ok := devreg.EventOf(e); ok {
			head.eventSeq++
			events = append(events, accountID, head.eventSeq, newEventID(), micros(e.Time), ev.Type, ev.DeviceTypeID, string(ev.Data))
		}
	}
	for chunk := range slices.Chunk(rows, 10*auditChunk) {
		q.exec(`INSERT INTO audit_log (account_id, seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash) VALUES `+
			strings.TrimSuffix(strings.Repeat("("+placeholders(10)+"), ", len(chunk)/10), ", "), chunk, nil)
	}
	queueEvents(q, events)
	q.exec(`UPDATE audit_heads SET seq = ?, time = ?, hash = ?, event_seq = ? WHERE account_id = ?`,
		[]any{head.Seq, micros(last), head.Hash, head.eventSeq, accountID}, nil)
	return nil
}

// appendEvents appends events that record no user's change (a device's first connection) to the
// account's events in tx, numbered after its newest under the audit head's lock; their IDs are
// made here.
func (s *DB) appendEvents(ctx context.Context, tx handle, accountID string, evs []devreg.Event) error {
	if len(evs) == 0 {
		return nil
	}
	head, err := lockAuditHead(ctx, tx, accountID)
	if err != nil {
		return err
	}
	rows := make([]any, 0, 7*len(evs))
	for _, ev := range evs {
		head.eventSeq++
		rows = append(rows, accountID, head.eventSeq, newEventID(), micros(ev.Time), ev.Type, ev.DeviceTypeID, string(ev.Data))
	}
	q := &handleQueue{h: tx}
	queueEvents(q, rows)
	// The lock moved seq on: put it back, with the new event seq.
	q.exec(`UPDATE audit_heads SET seq = ?, event_seq = ? WHERE account_id = ?`, []any{head.Seq, head.eventSeq, accountID}, nil)
	if err := q.flush(ctx); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// firstConnection is the event of a device's first connection.
func firstConnection(deviceID, deviceTypeID, batchID, via string, t time.Time) devreg.Event {
	data, _ := json.Marshal(map[string]string{"device_id": deviceID, "device_type_id": deviceTypeID, "batch_id": batchID, "via": via})
	return devreg.Event{Type: devreg.EventFirstConnection, Time: t.UTC(), DeviceTypeID: deviceTypeID, Data: data}
}

// changeOne runs a statement that changes one row of the account, in a transaction that appends
// the audit entry ctx carries; a statement that changes no row is ENOTFOUND (with the message
// format and args make), and nothing is appended then.
func (s *DB) changeOne(ctx context.Context, accountID, query string, args []any, format string, fmtArgs ...any) error {
	return s.inTx(ctx, func(tx handle) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err := affectedOne(res, err, format, fmtArgs...); err != nil {
			return err
		}
		return s.audit(ctx, tx, accountID)
	})
}

// AppendAudit appends an entry that records no change of the store's own (a console login), in a
// transaction of its own.
func (s *DB) AppendAudit(ctx context.Context, accountID string, e *devreg.AuditEntry) error {
	return s.inTx(ctx, func(tx handle) error { return s.appendAudit(ctx, tx, accountID, e) })
}

// AuditHead returns the newest entry of the account's chain ({0, GenesisHash} before the first).
func (s *DB) AuditHead(ctx context.Context, accountID string) (devreg.AuditHead, error) {
	h := devreg.AuditHead{Hash: devreg.GenesisHash}
	err := s.h.QueryRowContext(ctx, `SELECT seq, hash FROM audit_heads WHERE account_id = ?`, accountID).Scan(&h.Seq, &h.Hash)
	if err == sql.ErrNoRows {
		err = nil
	}
	return h, err
}

// decodeAudit makes an entry of a stored row: the canonical JSON and its hash.
func decodeAudit(entry, hash string) (devreg.AuditEntry, error) {
	var e devreg.AuditEntry
	if err := json.Unmarshal([]byte(entry), &e); err != nil {
		return e, fmt.Errorf("audit entry: %w", err)
	}
	e.Hash = hash
	return e, nil
}

// auditRange turns a time range into a range of seq (times never go back within an account), so
// that every listing walks one index from its start: the first seq at or after since, and the
// first at or after until (an exclusive end).
func (s *DB) auditRange(ctx context.Context, accountID string, since, until *time.Time) (lo, hi int64, err error) {
	first := func(t time.Time) (int64, error) {
		var seq int64
		err := s.h.QueryRowContext(ctx, `SELECT seq FROM audit_log WHERE account_id = ? AND time >= ? ORDER BY time, seq LIMIT 1`,
			accountID, micros(t)).Scan(&seq)
		if err == sql.ErrNoRows {
			return 1 << 62, nil
		}
		return seq, err
	}
	lo, hi = 1, 1<<62
	if since != nil {
		if lo, err = first(*since); err != nil {
			return 0, 0, err
		}
	}
	if until != nil {
		if hi, err = first(*until); err != nil {
			return 0, 0, err
		}
	}
	return lo, hi, nil
}

// ListAudit returns up to f.Limit of the account's entries that match f, newest first, before
// f.After.Seq when set.
func (s *DB) ListAudit(ctx context.Context, accountID string, f devreg.AuditFilter) ([]devreg.AuditEntry, error) {
	lo, hi, err := s.auditRange(ctx, accountID, f.Since, f.Until)
	if err != nil {
		return nil, err
	}
	if f.After.Seq > 0 {
		hi = min(hi, f.After.Seq)
	}
	var where strings.Builder
	args := []any{accountID}
	for _, filter := range []struct{ col, v string }{{"action", f.Action}, {"actor_type", f.ActorType}, {"actor_id", f.ActorID},
		{"object_type", f.ObjectType}, {"object_id", f.ObjectID}} {
		if filter.v != "" {
			where.WriteString(" AND " + filter.col + " = ?")
			args = append(args, filter.v)
		}
	}
	args = append(args, lo, hi, f.Limit)
	rows, err := s.h.QueryContext(ctx, `SELECT entry, hash FROM audit_log WHERE account_id = ?`+where.String()+`
		AND seq >= ? AND seq < ? ORDER BY seq DESC LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	entries := []devreg.AuditEntry{}
	for rows.Next() {
		var entry, hash string
		if err := rows.Scan(&entry, &hash); err != nil {
			return nil, err
		}
		e, err := decodeAudit(entry, hash)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	return entries, rows.Err()
}

// auditBatch is how many entries one query of a walk through a chain reads.
const auditBatch = 1000

// WalkAudit calls fn with the account's entries in the time range (either end may be nil) in
// order, as stored. It reads them in batches, each a query of its own, so a chain of millions
// streams in bounded memory without holding a transaction open.
func (s *DB) WalkAudit(ctx context.Context, accountID string, since, until *time.Time, fn func(devreg.StoredAuditEntry) error) error {
	lo, hi, err := s.auditRange(ctx, accountID, since, until)
	if err != nil {
		return err
	}
	for lo < hi {
		rows, err := s.h.QueryContext(ctx, `SELECT seq, time, action, actor_type, actor_id, object_type, object_id, entry, hash FROM audit_log
			WHERE account_id = ? AND seq >= ? AND seq < ? ORDER BY seq LIMIT ?`, accountID, lo, hi, auditBatch)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			var e devreg.StoredAuditEntry
			var t int64
			var entry string
			if err := rows.Scan(&e.Seq, &t, &e.Action, &e.Actor.Type, &e.Actor.ID, &e.Object.Type, &e.Object.ID, &entry, &e.Hash); err != nil {
				rows.Close()
				return err
			}
			e.Time, e.Entry = fromMicros(t), []byte(entry)
			n++
			lo = e.Seq + 1
			if err := fn(e); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n < auditBatch {
			return nil
		}
	}
	return nil
}

// AuditAccounts returns the IDs of every account, with the head of its chain as stored.
func (s *DB) AuditAccounts(ctx context.Context) (map[string]devreg.AuditHead, error) {
	rows, err := s.h.QueryContext(ctx, `SELECT a.id, coalesce(h.seq, 0), coalesce(h.hash, ?) FROM accounts a LEFT JOIN audit_heads h ON h.account_id = a.id`,
		devreg.GenesisHash)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	heads := map[string]devreg.AuditHead{}
	for rows.Next() {
		var id string
		var h devreg.AuditHead
		if err := rows.Scan(&id, &h.Seq, &h.Hash); err != nil {
			return nil, err
		}
		heads[id] = h
	}
	return heads, rows.Err()
}
