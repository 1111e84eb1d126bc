package registry

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	"devreg"
	"devreg/credential"
)

// Zero-touch enrollment (issue 24): an unknown device whose ID matches an open enrollment group's
// pattern, and whose secret is the one derived from a live key of that group (Azure DPS's
// formula, credential.DeriveSecret), is registered at its first secret login (token endpoint,
// broker, rotation) under the group's device type; then the login goes on as any other.

// ErrEnrollmentLimit is the cause of the refusal of a first connection beyond its enrollment
// group's limits: ERATELIMITED (with RetryAfter) beyond max_per_hour, EFORBIDDEN beyond
// max_devices. The device endpoints answer it as the OAuth error enrollment_limit.
var ErrEnrollmentLimit = errors.New("enrollment_limit reached")

// enrollmentCreator is what the batches of enrollments name as their creator, before the group's name.
const enrollmentCreator = "enrollment group "

// enrollThrottleKey and enrollFailKey are the throttle table's keys of a group's enrollments
// within the hour (counted against max_per_hour) and of its refused first connections.
func enrollThrottleKey(accountID, groupID string) string {
	return "enroll:" + throttleKey(accountID, groupID)
}

func enrollFailKey(accountID, groupID string) string {
	return "enrollfail:" + throttleKey(accountID, groupID)
}

// mayEnroll reports whether an unknown device's login may register it through a group: its IDs
// are ones that can exist (an ID that breaks devreg's rules is refused like any invalid ID,
// whatever pattern it matches).
func mayEnroll(d devreg.DeviceAuth, accountID, deviceID string) bool {
	return d.DeviceTypeID == "" && opaqueID(accountID) && credential.CheckDeviceID(deviceID) == ""
}

// enroll is the login of device deviceID, which the account does not have, with secret: in the
// device's turn (loginAttempt), it registers the device through the first of the account's
// groups (oldest first: the older group wins) whose pattern matches the ID and that is open now,
// if secret is derived from one of its live keys, and returns the device as it is then, the
// credential that let it in, or the refusal (counted in the device's throttle by loginAttempt, and
// in the group's failures), or an error: ErrEnrollmentLimit beyond the group's limits.
//
// The store counts both limits in the transaction that registers the device, under the
// account's lock, so that parallel first connections on any servers register exactly the
// limits' worth; only registrations count (the hour's in the throttle table, under
// enrollThrottleKey, as other hourly limits are). Unlike just-in-time registration, whose limit
// is reserved in a statement of its own before the transaction, the first connections of an
// account are written together (enrollTogether) and count with them: a statement less for each.
func (s *Service) enroll(ctx context.Context, accountID, deviceID, secret string, now time.Time) (devreg.DeviceAuth, devreg.StoredCredential, error, error) {
	var none devreg.StoredCredential
	g, err := s.enrollmentGroupFor(ctx, accountID, deviceID, now)
	if err != nil {
		return devreg.DeviceAuth{}, none, nil, err
	}
	if g == nil {
		s.matchSecret(devreg.DeviceAuth{}, accountID, deviceID, secret, now) // costs what an unknown device costs
		return devreg.DeviceAuth{}, none, ErrInvalidClient, nil
	}
	key, ok := s.derivedKey(*g, deviceID, secret, now)
	if !ok {
		return devreg.DeviceAuth{}, none, s.enrollRefused(ctx, *g, deviceID, "the secret is not derived from a live key of the group"), nil
	}
	current := s.keys.Current()
	audit := s.auditEntry(ctx, devreg.AuditActor{Type: devreg.ActorEnrollmentGroup, ID: g.ID, Name: g.Name}, "device.enroll",
		devreg.AuditObject{Type: "device", ID: deviceID}, map[string]any{"group_id": g.ID, "group_key_id": key})
	audit.DeviceTypeID = g.DeviceTypeID
	res, err := s.enrollTogether(ctx, devreg.Enrollment{AccountID: accountID, GroupID: g.ID, IDPattern: g.IDPattern, KeyID: key,
		HourKey: enrollThrottleKey(accountID, g.ID), DeviceID: deviceID,
		HashKeyID: current.ID, SecretHash: credential.Hash(current, accountID, deviceID, secret), Now: now,
		Batch: devreg.Batch{ID: credential.RandomID("bat", 16), CreatedBy: enrollmentCreator + g.Name}, Audit: audit})
	if err != nil {
		return devreg.DeviceAuth{}, none, nil, err
	}
	switch {
	case res.HourFull:
		wait := res.RetryAfter
		s.logEnroll("enrollment refused: the group's max_per_hour is reached", *g, deviceID, "max_per_hour", g.MaxPerHour)
		return devreg.DeviceAuth{}, none, nil, &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait, Err: ErrEnrollmentLimit,
			Message: fmt.Sprintf("the enrollment group has registered the most devices it may within the hour (max_per_hour); retry in %s",
				max(wait.Round(time.Second), time.Second))}
	case res.Full:
		s.logEnroll("enrollment refused: the group's max_devices is reached", *g, deviceID, "max_devices", g.MaxDevices)
		return devreg.DeviceAuth{}, none, nil, &devreg.Error{Code: devreg.EFORBIDDEN, Err: ErrEnrollmentLimit,
			Message: fmt.Sprintf("the enrollment group has registered %d devices, the most it allows (max_devices); an administrator of the account may raise the group's max_devices", g.MaxDevices)}
	case res.EnrolledBefore:
		return devreg.DeviceAuth{}, none, s.enrollRefused(ctx, *g, deviceID, "the device ID enrolled through a group before (an administrator may re-allow it: reenroll)"), nil
	case res.GroupClosed:
		return devreg.DeviceAuth{}, none, s.enrollRefused(ctx, *g, deviceID, "the group was closed, changed or lost the key meanwhile"), nil
	case res.NotAllowed:
		return devreg.DeviceAuth{}, none, s.enrollRefused(ctx, *g, deviceID, "the device ID is not on the group's allow-list"), nil
	case res.BatchDisabled:
		return devreg.DeviceAuth{}, none, s.enrollRefused(ctx, *g, deviceID, fmt.Sprintf("today's batch of the group (%s) is disabled; enable it to let devices enrol today (tomorrow's batch is made afresh)", res.BatchID)), nil
	}
	if res.Registered { // with the derived secret as its one credential
		return res.Device, res.Device.Credentials[0], nil, nil
	}
	// Registered by another login meanwhile: the device's own credentials decide, as for any
	// device.
	d, err := s.store.DeviceAuth(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND { // deleted at once
		return devreg.DeviceAuth{}, none, ErrInvalidClient, nil
	}
	if err != nil {
		return devreg.DeviceAuth{}, none, nil, err
	}
	cred, ok := s.matchSecret(d, accountID, deviceID, secret, now)
	if !ok || !d.Enabled {
		return devreg.DeviceAuth{}, none, ErrInvalidClient, nil
	}
	return d, cred, nil, nil
}

// enrollmentGroupFor returns the group that decides whether device deviceID enrols at now: the
// first of the account's groups, oldest first, whose pattern matches the ID and that is open.
// nil: none, or the caller (a broker's key) does not reach the group's device type.
func (s *Service) enrollmentGroupFor(ctx context.Context, accountID, deviceID string, now time.Time) (*devreg.EnrollmentGroup, error) {
	groups, err := s.store.EnrollingGroups(ctx, accountID)
	if err != nil {
		return nil, err
	}
	for i, g := range groups {
		if !g.OpenAt(now) {
			continue
		}
		re, err := s.patterns.compile(g.IDPattern)
		if err != nil {
			s.logEnroll("enrollment group's pattern does not compile; the group is skipped", g, deviceID, "error", err.Error())
			continue
		}
		if !re.MatchString(deviceID) {
			continue
		}
		// A broker's key restricted to some device types enrols no device of another: the
		// group decides all the same (which group does must not depend on the door).
		if c, ok := devreg.CallerFromContext(ctx); ok && !c.Reaches(g.DeviceTypeID) {
			return nil, nil
		}
		return &groups[i], nil
	}
	return nil, nil
}

// derivedKey returns the ID of the live key of g from which secret is derived for deviceID. Every
// live key is compared, in constant time, whether or not an earlier one matched.
func (s *Service) derivedKey(g devreg.EnrollmentGroup, deviceID, secret string, now time.Time) (string, bool) {
	match := ""
	for _, k := range g.Keys {
		if !k.LiveAt(now) {
			continue
		}
		raw, err := s.keys.Open(k.SealKeyID, k.Sealed, groupKeyAD(g.AccountID, g.ID, k.ID))
		if err != nil {
			// Never the key: Open's errors name the server key only.
			s.logEnroll("enrollment group key does not open; it derives nothing", g, deviceID, "group_key_id", k.ID, "error", err.Error())
			continue
		}
		if subtle.ConstantTimeCompare([]byte(credential.DeriveSecret(raw, deviceID)), []byte(secret)) == 1 && match == "" {
			match = k.ID
		}
		clear(raw)
	}
	return match, match != ""
}

// enrollRefused counts a first connection that group g refused among its failures (which its
// page shows per hour), logs why, and returns the answer the device gets: invalid_client, which
// loginAttempt counts in the device's throttle as it counts a wrong secret.
func (s *Service) enrollRefused(ctx context.Context, g devreg.EnrollmentGroup, deviceID, why string) error {
	if _, _, err := s.store.ReserveAttempt(context.WithoutCancel(ctx), enrollFailKey(g.AccountID, g.ID), s.now(), devreg.EnrollmentWindow); err != nil {
		return err
	}
	s.logEnroll("enrollment refused: "+why, g, deviceID)
	return ErrInvalidClient
}

// EnrollmentFailures returns how many first connections enrollment group groupID of the account
// refused (a secret not derived from a live key, an ID off the allow-list or enrolled before)
// within the hour. The caller needs an admin key of the account.
func (s *Service) EnrollmentFailures(ctx context.Context, accountID, groupID string) (int, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return 0, err
	}
	if c.AccountID != accountID || !opaqueID(groupID) {
		return 0, notFound("enrollment group", groupID)
	}
	n, _, err := s.store.Failures(ctx, enrollFailKey(accountID, groupID), s.now(), devreg.EnrollmentWindow)
	return n, err
}

// logEnroll logs a refused enrollment an administrator may want to know of: never the secret or a key.
func (s *Service) logEnroll(msg string, g devreg.EnrollmentGroup, deviceID string, args ...any) {
	if s.Log == nil {
		return
	}
	s.Log.Info(msg, append([]any{"account_id", g.AccountID, "enrollment_group_id", g.ID, "device_type_id", g.DeviceTypeID, "device_id", deviceID}, args...)...)
}

// maxCachedPatterns bounds the compiled patterns kept: 20 groups per type of many types of many
// accounts, each a few KiB compiled.
const maxCachedPatterns = 4096

// patternCache keeps the enrollment groups' compiled patterns by their text, so that a first
// connection does not compile them again. The zero value is ready to use.
type patternCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

// compile returns pattern compiled (RE2 syntax) to match whole device IDs only: the groups API
// takes only anchored patterns, and anchoring it again here makes sure that a pattern that
// slipped through unanchored (^A|B$ anchors one side of each branch) still cannot match an ID
// by a part of it.
func (c *patternCache) compile(pattern string) (*regexp.Regexp, error) {
	c.mu.Lock()
	re, ok := c.m[pattern]
	c.mu.Unlock()
	if ok {
		return re, nil
	}
	re, err := regexp.Compile(`^(?:` + pattern + `)$`)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedPatterns {
		c.m = map[string]*regexp.Regexp{} // start afresh rather than track use: patterns change rarely
	}
	c.m[pattern] = re
	return re, nil
}

// MaxReenrollIDs is how many device IDs one reenroll request may name.
const MaxReenrollIDs = 10000

// enrollmentGroupOf returns the caller's enrollment group groupID of device type deviceTypeID,
// for managing it (admin only), or ENOTFOUND as if it did not exist.
func (s *Service) enrollmentGroupOf(ctx context.Context, deviceTypeID, groupID string) (devreg.Caller, devreg.EnrollmentGroup, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return c, devreg.EnrollmentGroup{}, err
	}
	if !opaqueID(deviceTypeID) || !c.Reaches(deviceTypeID) {
		return c, devreg.EnrollmentGroup{}, notFound("device type", deviceTypeID)
	}
	if !opaqueID(groupID) {
		return c, devreg.EnrollmentGroup{}, notFound("enrollment group", groupID)
	}
	g, err := s.store.EnrollmentGroup(ctx, c.AccountID, deviceTypeID, groupID)
	return c, g, err
}

// SetAllowedIDs replaces the allow-list of an enrollment group with the device IDs src yields
// (their secrets, if any, are ignored; the Operations API sends a file of IDs only) and turns the
// group's allow-list on: from then on only listed IDs enrol through it. All or nothing: every ID
// that breaks devreg's ID rules or does not match the group's pattern (it could never enrol
// through it) is reported with its index and line, and the list is then left as it was. An
// empty list allows no ID at all. It returns how many distinct IDs the list holds (a repeat
// counts once). The IDs are spooled until the request has arrived whole, as a registration's
// are, so a slow upload holds no transaction, and a million of them take bounded memory.
func (s *Service) SetAllowedIDs(ctx context.Context, deviceTypeID, groupID string, src devreg.EntrySource) (int64, error) {
	c, g, err := s.enrollmentGroupOf(ctx, deviceTypeID, groupID)
	if err != nil {
		return 0, err
	}
	re, err := s.patterns.compile(g.IDPattern)
	if err != nil {
		return 0, devreg.Errorf(devreg.EINVALID, "the group's id_pattern does not compile (%v); correct it first", err)
	}
	spool := newEntrySpool(spoolMemory)
	defer spool.Close()
	var problems devreg.ProblemList
	total := 0
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		total++
		msg := e.Problem
		if msg == "" {
			msg = credential.CheckDeviceID(e.DeviceID)
		}
		if msg == "" && !re.MatchString(e.DeviceID) {
			msg = fmt.Sprintf("device ID does not match the group's id_pattern %s, so it could never enrol through the group", g.IDPattern)
		}
		if msg != "" {
			problems.Add(devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: msg})
			continue
		}
		if problems.Count == 0 {
			if err := spool.Add(devreg.StagedEntry{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID}); err != nil {
				return 0, err
			}
		}
	}
	if problems.Count > 0 {
		return 0, problems.Error(devreg.EINVALIDROWS, fmt.Sprintf("%d of %d device IDs are invalid; the allow-list was not changed", problems.Count, total))
	}
	entry := s.auditEntry(ctx, actorOf(c), "enrollment_group.allowed_ids", devreg.AuditObject{Type: "enrollment_group", ID: g.ID}, nil)
	return s.store.SetAllowedIDs(ctx, c.AccountID, deviceTypeID, groupID, spool, func(allowed int64) *devreg.AuditEntry {
		entry.Details = map[string]any{"device_type_id": deviceTypeID, "allowed": allowed, "listed": total}
		return entry
	})
}

// Reenroll lets device IDs that enrolled through an enrollment group (and were deleted since)
// enrol again: it forgets that they enrolled. An ID that did not enrol through the group is left
// alone. It returns how many IDs it re-allowed.
func (s *Service) Reenroll(ctx context.Context, deviceTypeID, groupID string, deviceIDs []string) (int64, error) {
	c, g, err := s.enrollmentGroupOf(ctx, deviceTypeID, groupID)
	if err != nil {
		return 0, err
	}
	if len(deviceIDs) == 0 || len(deviceIDs) > MaxReenrollIDs {
		return 0, devreg.Errorf(devreg.EINVALID, "device_ids must list 1 to %d device IDs; it lists %d", MaxReenrollIDs, len(deviceIDs))
	}
	var problems devreg.ProblemList
	for i, id := range deviceIDs {
		if msg := credential.CheckDeviceID(id); msg != "" {
			problems.Add(devreg.Problem{Index: i, DeviceID: id, Message: msg})
		}
	}
	if problems.Count > 0 {
		return 0, problems.Error(devreg.EINVALIDROWS, fmt.Sprintf("%d of %d device IDs are invalid; nothing was re-allowed", problems.Count, len(deviceIDs)))
	}
	entry := s.auditEntry(ctx, actorOf(c), "enrollment_group.reenroll", devreg.AuditObject{Type: "enrollment_group", ID: g.ID}, nil)
	return s.store.Reenroll(ctx, c.AccountID, deviceTypeID, groupID, deviceIDs, func(n int64) *devreg.AuditEntry {
		entry.Details = map[string]any{"device_type_id": deviceTypeID, "requested": len(deviceIDs), "reenrolled": n}
		return entry
	})
}

// maxEnrollBatch bounds the enrollments written in one transaction.
const maxEnrollBatch = 256

// enrollQueues gathers, per account, the enrollments that wait while one of the account's is
// being written, so that they are written together in the next transaction (group commit): the
// account's lock makes them take turns anyway, and a transaction of many costs little more than
// one of one (the lock, the audit chain's head and the commit are paid once). The zero value is
// ready to use.
type enrollQueues struct {
	mu      sync.Mutex
	waiting map[string][]*enrollRequest // by account; present while one of the account's is written
}

// enrollRequest is one enrollment on its way to the store.
type enrollRequest struct {
	e    devreg.Enrollment
	res  devreg.EnrollResult
	err  error
	done bool          // res and err are set: written (or failed) in another's transaction
	wake chan struct{} // closed when done, or when this request is to write the next batch
}

// enrollTogether writes enrollment e, with the account's others that are waiting. When none of
// the account's is being written it writes at once, as the leader: itself and whoever waits, up
// to maxEnrollBatch; else it waits to be written by the leader, or to become the next leader.
// Each answer comes only once its transaction has ended, and its own client's leaving does not
// end the transaction that writes others too.
func (s *Service) enrollTogether(ctx context.Context, e devreg.Enrollment) (res devreg.EnrollResult, resErr error) {
	q := &s.enrolls
	r := &enrollRequest{e: e, wake: make(chan struct{})}
	q.mu.Lock()
	if q.waiting == nil {
		q.waiting = map[string][]*enrollRequest{}
	}
	others, busy := q.waiting[e.AccountID]
	q.waiting[e.AccountID] = append(others, r)
	q.mu.Unlock()
	if busy {
		<-r.wake
		if r.done {
			return r.res, r.err
		}
	}
	// The leader: first in the queue, it takes the batch.
	q.mu.Lock()
	all := q.waiting[e.AccountID]
	n := min(len(all), maxEnrollBatch)
	batch := all[:n:n]
	q.waiting[e.AccountID] = all[n:]
	q.mu.Unlock()
	es := make([]devreg.Enrollment, len(batch))
	for i, b := range batch {
		es[i] = b.e
	}
	// Whatever becomes of the write, even a panic, the batch is answered and the lead passed on:
	// a leader that left without would leave the account's first connections waiting forever.
	var results []devreg.EnrollResult
	err := errEnrollAborted
	defer func() {
		for i, b := range batch {
			if err == nil {
				b.res = results[i]
			}
			b.err, b.done = err, true
			if b != r {
				close(b.wake)
			}
		}
		// Pass the lead on to the first that waits, if any.
		q.mu.Lock()
		if next := q.waiting[e.AccountID]; len(next) > 0 {
			close(next[0].wake)
		} else {
			delete(q.waiting, e.AccountID)
		}
		q.mu.Unlock()
		res, resErr = r.res, r.err
	}()
	results, err = s.store.Enroll(context.WithoutCancel(ctx), es)
	return // the deferred function answers
}

// errEnrollAborted answers the first connections of a batch whose write ended in a panic.
var errEnrollAborted = errors.New("enrollment: the transaction writing it was aborted")
