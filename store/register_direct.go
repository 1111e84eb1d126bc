package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"devreg"
	"devreg/credential"
)

// The two kinds of registration a factory sends most are applied without a stage: a file of new
// devices is written straight into the devices table, once, and a file sent again is looked up
// and writes nothing. Anything else (a conflict, a mix of new and registered devices) is staged.

// direct registers entries without a stage when the request is of one of the two kinds a factory
// sends most: every entry new (each device is then written once) or every entry registered
// already with the same secret and type (then nothing is written). The entries' device IDs must
// be known to be distinct. It returns done=false, having written nothing and called decide not,
// for any other request: the caller stages its entries then.
func (st *stage) direct(ctx context.Context, reg devreg.Registration, entries devreg.RegistrationEntries,
	decide func(devreg.Found) (devreg.Decision, error)) (devreg.RegisterResult, bool, error) {
	resent := false
	if !reg.DryRun {
		// A sample registered already makes a resend likely: it is looked up, and waits for no
		// writer. insertNew looks at the sample again, under the write lock.
		account, err := accountNumber(ctx, st.c, reg.AccountID)
		if err == nil {
			resent, err = anyRegistered(ctx, st.c, account, reg.Sample)
		}
		if err != nil {
			return devreg.RegisterResult{}, false, err
		}
	}
	if !reg.DryRun && !resent {
		res, done, err := st.insertNew(ctx, reg, entries, decide)
		if errors.Is(err, errSomeNew) {
			return res, false, nil // no look-up can answer it: straight to the stage
		}
		if done || err != nil {
			return res, done, err
		}
	}
	return st.lookUp(ctx, reg, entries, decide)
}

// errSomeNew ends a direct insert that began and could not finish: a device was registered after
// all, or a certificate is another device's. The sample, the first entry included, was not
// registered, so the request is no resend, and a look-up (which would read it up to its first
// registered device to find that out) is skipped.
var errSomeNew = errors.New("some devices are new, and the rest cannot be written directly")

// insertNew registers entries if none of them is registered: done is false, and nothing is
// written, when one of the sample or any entry turns out to be.
func (st *stage) insertNew(ctx context.Context, reg devreg.Registration, entries devreg.RegistrationEntries,
	decide func(devreg.Found) (devreg.Decision, error)) (res devreg.RegisterResult, done bool, err error) {
	endLock := devreg.StartStage(ctx, "lock")
	defer endLock() // at once, if it returns before its end
	writeDone, err := st.s.d.readyToWrite(ctx, st.c)
	if err != nil {
		return res, false, err
	}
	defer writeDone()
	tx, err := st.conn.BeginTx(ctx, nil)
	if err != nil {
		return res, false, err
	}
	defer tx.Rollback() // does nothing once the transaction is over
	q := handle{q: tx, d: st.s.d}
	if err := st.s.d.lockAccount(ctx, q, reg.AccountID); err != nil {
		return res, false, err
	}
	account, err := accountNumber(ctx, q, reg.AccountID)
	if err != nil {
		return res, false, err
	}
	if found, err := anyRegistered(ctx, q, account, reg.Sample); err != nil || found {
		return res, false, err
	}
	endLock()
	endInsert := devreg.StartStage(ctx, "insert")
	err = st.s.d.insertDevices(ctx, st, tx, reg, account, entries)
	endInsert()
	if st.s.d.uniqueViolation(err) {
		return res, false, errSomeNew // one is registered after all: the rollback undoes the rest
	}
	if err != nil {
		return res, false, fmt.Errorf("register devices: %w", err)
	}
	if taken, err := st.certificatesTakenIn(ctx, q, reg, account); err != nil {
		return res, false, err
	} else if taken {
		return res, false, errSomeNew // the stage names the entries
	}
	defer devreg.StartStage(ctx, "commit")()
	n := int64(entries.Len())
	f := devreg.Found{Total: n, New: n}
	if f.Caller, err = readCaller(ctx, q, reg, true); err != nil {
		return res, false, err
	}
	d, err := decide(f)
	if err != nil {
		return res, true, err
	}
	if err := insertCertificateDetails(ctx, q, account, reg.Certificates); err != nil {
		return res, true, err
	}
	res = f.Outcome(d)
	res.BatchID = reg.Batch.ID
	if err := runSteps(ctx, q, batchSteps(reg, n, 0, n)); err != nil {
		return devreg.RegisterResult{}, true, err
	}
	if d.Audit != nil {
		if err := st.s.appendAudit(ctx, q, reg.AccountID, d.Audit); err != nil {
			return devreg.RegisterResult{}, true, err
		}
	}
	return res, true, tx.Commit()
}

// batchSteps are the statements that record a registration's batch of count devices, connected
// of which have checked in before, and add typeDelta devices to its device type.
func batchSteps(reg devreg.Registration, count, connected, typeDelta int64) []step {
	b := reg.Batch
	return []step{
		{sql: `INSERT INTO batches (id, account_id, device_type_id, created_at, created_by, source, filename, device_count, connected_count, status,
				name, creator_type, creator_id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'enabled', ?, ?, ?)`,
			args: []any{b.ID, reg.AccountID, reg.DeviceTypeID, micros(b.CreatedAt), b.CreatedBy, string(b.Source), b.Filename, count, connected,
				b.Name, b.CreatorType, b.CreatorID}},
		{sql: `UPDATE device_types SET device_count = device_count + ? WHERE account_id = ? AND id = ?`,
			args: []any{typeDelta, reg.AccountID, reg.DeviceTypeID}, one: true},
	}
}

// dryRunType returns devreg.ErrDeviceTypeDeleted when a dry run's device type is not in the
// snapshot it reads (deleted while the request was read), as a run that writes finds when it adds
// its devices to the type's count (runSteps).
func dryRunType(ctx context.Context, q handle, reg devreg.Registration) error {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM device_types WHERE account_id = ? AND id = ?`, reg.AccountID, reg.DeviceTypeID).Scan(&n); err != nil {
		return fmt.Errorf("register devices: %w", err)
	}
	if n == 0 {
		return devreg.ErrDeviceTypeDeleted
	}
	return nil
}

// accountNumber returns the number of an account, which keys the unique index of devices.
func accountNumber(ctx context.Context, q handle, accountID string) (int64, error) {
	var num int64
	if err := q.QueryRowContext(ctx, `SELECT num FROM accounts WHERE id = ?`, accountID).Scan(&num); err != nil {
		return 0, fmt.Errorf("account %s: %w", accountID, err)
	}
	return num, nil
}

// anyRegistered reports whether any of ids is a registered device ID of the account.
func anyRegistered(ctx context.Context, q handle, account int64, ids []string) (bool, error) {
	if len(ids) == 0 {
		return false, nil
	}
	in, args := q.d.oneOf("device_id", ids)
	var found int
	err := q.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE account_num = ? AND `+in, append([]any{account}, args...)...).Scan(&found)
	return found > 0, err
}

// currentHash returns the part of an entry's hashes made with the registration's current key,
// the last.
func currentHash(reg devreg.Registration, e devreg.StagedEntry) ([]byte, error) {
	at := credential.HashSize * (len(reg.KeyIDs) - 1)
	if len(e.Hashes) != at+credential.HashSize {
		return nil, fmt.Errorf("entry %d has %d bytes of hashes for %d keys", e.Index, len(e.Hashes), len(reg.KeyIDs))
	}
	return e.Hashes[at:], nil
}

// errMixed ends a look-up that has found a request to be neither all new nor all unchanged.
var errMixed = errors.New("some devices are new, some registered")

// lookUp applies a registration that writes nothing: a dry run whose devices are all new, or any
// run whose devices are all registered unchanged (the same device type, and the secret of the
// device's credential; under on_conflict=replace one valid now). It reads one snapshot and
// returns done=false for any other request, as soon as it knows. decide is given what it found,
// and the caller read in the same snapshot.
//
// A big request's look-ups are spread over the stage's connection and as many more as it may
// take (lookUpConns), each reading the same snapshot: SQLite looks an entry up in about a
// microsecond, on one core per connection.
func (st *stage) lookUp(ctx context.Context, reg devreg.Registration, entries devreg.RegistrationEntries,
	decide func(devreg.Found) (devreg.Decision, error)) (res devreg.RegisterResult, done bool, err error) {
	defer devreg.StartStage(ctx, "lookup")()
	chunk := st.s.d.lookUpChunk()
	conns, release := st.lookUpConns(ctx, entries.Len(), chunk)
	defer release(1)
	txs, endTxs, err := st.s.d.beginSnapshots(ctx, st.s, conns)
	if err != nil {
		return res, false, err
	}
	end := sync.OnceFunc(endTxs)
	defer end()
	release(len(txs))
	// The caller first, in the same snapshot: the other connections can go back as soon as
	// they are done.
	q := handle{q: txs[0], d: st.s.d}
	account, err := accountNumber(ctx, q, reg.AccountID)
	if err != nil {
		return res, false, err
	}
	caller, err := readCaller(ctx, q, reg, false)
	if err != nil {
		return res, false, err
	}
	if reg.DryRun {
		if err := dryRunType(ctx, q, reg); err != nil {
			return res, true, err
		}
	}
	var c lookUpCount
	g, gctx := errgroup.WithContext(ctx)
	chunks := make(chan []devreg.StagedEntry, len(txs))
	g.Go(func() error {
		defer close(chunks)
		return entries.Replay(chunk, func(es []devreg.StagedEntry) error {
			select {
			case chunks <- es:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
	})
	for _, tx := range txs {
		g.Go(func() error { return st.lookUpChunks(ctx, gctx.Done(), tx, reg, account, chunk, chunks, &c) })
	}
	err = g.Wait()
	end()
	release(1)
	if err != nil && ctx.Err() != nil {
		// The request ended (its client gone): say so, not what became of the statements its
		// transactions took with them ("sql: statement is closed", a connection dropped).
		return res, false, ctx.Err()
	}
	f := devreg.Found{Total: c.total, Caller: caller}
	switch {
	case errors.Is(err, errMixed):
		return res, false, nil
	case err != nil:
		return res, false, err
	case c.unchanged == c.total:
		f.Unchanged = c.total
	case c.found == 0 && reg.DryRun && !isCertificates(reg): // certificates may be other devices': the stage tells
		f.New = c.total
	default:
		return res, false, nil // new devices for a run that writes: the sample found some that are gone now
	}
	d, err := decide(f)
	if err != nil {
		return res, true, err
	}
	res = f.Outcome(d)
	res.DryRun = reg.DryRun
	return res, true, nil
}

// maxLookUpConns bounds the connections of one look-up.
const maxLookUpConns = 4

// lookUpConns returns the connections a look-up of n entries reads on: the stage's, and one
// more for each further core and chunk of entries while a registration slot is free (a
// look-up never waits for a slot; for a connection of the pool it may, as any query does); and
// release, which gives back those from the from-th on.
func (st *stage) lookUpConns(ctx context.Context, n, chunk int) (conns []*sql.Conn, release func(from int)) {
	conns = []*sql.Conn{st.conn}
	releases := []func(){nil} // the stage's is the stage's to give back
	for len(conns) < min(maxLookUpConns, runtime.GOMAXPROCS(0), (n+chunk-1)/chunk) {
		slotDone, ok := st.s.regs.trySlot()
		if !ok {
			break
		}
		c, err := st.s.db.Conn(ctx)
		if err != nil {
			slotDone()
			break // the stage's connection does it alone
		}
		conns = append(conns, c)
		releases = append(releases, func() { c.Close(); slotDone() })
	}
	return conns, func(from int) {
		for i := max(from, 1); i < len(releases); i++ {
			if releases[i] != nil {
				releases[i]()
				releases[i] = nil
			}
		}
	}
}

// lookUpCount is what a look-up's connections have counted so far.
type lookUpCount struct {
	mu                      sync.Mutex
	found, unchanged, total int64
}

// add counts a chunk's entries, found and unchanged, and reports whether the entries counted so
// far are neither all new nor all unchanged.
func (c *lookUpCount) add(found, unchanged, total int64) (mixed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.found, c.unchanged, c.total = c.found+found, c.unchanged+unchanged, c.total+total
	return c.found > 0 && c.unchanged < c.total
}

// lookUpChunks looks up the chunks of entries it receives in tx, a transaction of the look-up's
// snapshot, and counts them in c, until chunks is closed or what has been counted is mixed
// (errMixed). Once stop is closed (another connection has ended the look-up) it lets the chunks
// run out: a statement cut off by a context's end would cost PostgreSQL's connection, the
// stage's among them.
func (st *stage) lookUpChunks(ctx context.Context, stop <-chan struct{}, tx *sql.Tx, reg devreg.Registration, account int64, chunk int,
	chunks <-chan []devreg.StagedEntry, c *lookUpCount) error {
	q := handle{q: tx, d: st.s.d}
	full, err := tx.PrepareContext(ctx, st.s.d.bind(lookUpSQL(st.s.d, reg, chunk)))
	if err != nil {
		return err
	}
	defer full.Close()
	fixed := []any{reg.DeviceTypeID}
	for _, id := range reg.KeyIDs {
		fixed = append(fixed, id)
	}
	args := make([]any, 0, len(fixed)+2*chunk+1)
	for es := range chunks {
		select {
		case <-stop:
			continue
		default:
		}
		args = append(args[:0], fixed...)
		for _, e := range es {
			args = append(args, e.DeviceID, e.Hashes)
		}
		args = append(args, account)
		var row *sql.Row
		if len(es) == chunk {
			row = full.QueryRowContext(ctx, args...)
		} else {
			row = q.QueryRowContext(ctx, lookUpSQL(st.s.d, reg, len(es)), args...)
		}
		var f, u int64
		if err := row.Scan(&f, &u); err != nil {
			return fmt.Errorf("look up devices: %w", err)
		}
		if c.add(f, u, int64(len(es))) {
			return errMixed
		}
	}
	return nil
}

// lookUpSQL counts how many of rows entries are registered, and how many of those unchanged.
// Its parameters: the device type, the registration's key IDs, each entry's device ID and
// hashes, then the account number. The entry's hash under the key that made the stored one is
// compared.
func lookUpSQL(d dialect, reg devreg.Registration, rows int) string {
	var b strings.Builder
	b.WriteString(`SELECT count(*), coalesce(sum(CASE WHEN d.device_type_id = ? AND d.secret_hash = substr(v.column2, CASE d.key_id`)
	for i := range reg.KeyIDs {
		fmt.Fprintf(&b, " WHEN ? THEN %d", 1+credential.HashSize*i)
	}
	fmt.Fprintf(&b, " END, %d)", credential.HashSize)
	if reg.Unchanged != devreg.UnchangedAnyCredential {
		// A replace is asked to make the registered secret work: one whose credential is
		// disabled or outside its window is replaced, not left unchanged.
		b.WriteString(ownCredentialValid(reg))
	}
	if reg.Unchanged == devreg.UnchangedOnlyCredential {
		b.WriteString(onlyRegisteredCredential)
	}
	b.WriteString(` THEN 1 ELSE 0 END), 0) FROM ` + d.lookUpFrom(rows) + ` WHERE d.account_num = ? AND d.device_id = v.column1`)
	return b.String()
}
