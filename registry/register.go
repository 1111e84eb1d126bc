package registry

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"devreg"
	"devreg/credential"
)

// Register registers the devices src yields under a device type, all or nothing. The whole
// request is read, checked, hashed and spooled before it takes a database connection, so a slow
// upload holds neither a lock nor a connection, and a bad entry anywhere leaves the registry
// untouched; only then does the store register it in one short transaction, from which it asks
// decide (this package's policy and wording) what to do with what it found.
func (s *Service) Register(ctx context.Context, deviceTypeID string, src devreg.EntrySource, opts devreg.RegisterOptions) (res devreg.RegisterResult, err error) {
	c, err := authorize(ctx, devreg.ScopeRegister)
	if err != nil {
		return res, err
	}
	// A registration asks again whether its caller may, in the transaction that would write
	// (the policy's decide reads Found.Caller). One refused before it gets there still tells
	// about the registry, so it answers only a caller who may still have the answer at its end.
	var policy *registrationPolicy
	defer func() {
		if err == nil && !opts.DryRun {
			s.Metrics.Registered(res.Created, res.Replaced)
		}
	}()
	defer func() {
		if policy != nil && policy.rechecked || refusesCaller(err) {
			return
		}
		if rerr := s.recheck(ctx, c, notRegistered); refusesCaller(rerr) || rerr != nil && err == nil {
			res, err = devreg.RegisterResult{}, rerr
		}
	}()
	if opts.OnConflict == "" {
		opts.OnConflict = devreg.ConflictFail
	}
	if !opts.OnConflict.Valid() {
		return res, devreg.Errorf(devreg.EBADREQUEST, "on_conflict must be fail, skip or replace; it is %q", opts.OnConflict)
	}
	if opts.OnConflict == devreg.ConflictReplace && !c.Scope.Allows(devreg.ScopeAdmin) {
		return res, devreg.Errorf(devreg.EFORBIDDEN, "on_conflict=replace needs an API key with scope \"admin\"; this key has scope %q", c.Scope)
	}
	opts.BatchName = strings.TrimSpace(opts.BatchName)
	if err := checkName("batch_name", opts.BatchName, 0, devreg.MaxBatchName); err != nil {
		// A query parameter, refused before the body is read, as on_conflict's are.
		return res, devreg.Errorf(devreg.EBADREQUEST, "%s", devreg.ErrorMessage(err))
	}
	if opts.Credentials == "" {
		opts.Credentials = devreg.CredentialsKeep
	}
	if !opts.Credentials.Valid() {
		return res, devreg.Errorf(devreg.EBADREQUEST, "credentials must be keep or reset; it is %q", opts.Credentials)
	}
	if opts.Credentials == devreg.CredentialsReset && opts.OnConflict != devreg.ConflictReplace {
		return res, devreg.Errorf(devreg.EBADREQUEST, "credentials=reset works only with on_conflict=replace (it says what a replace does with "+
			"the credentials devices made themselves); send on_conflict=replace&credentials=reset, with an admin key "+
			"(in the console's Bulk Upload: choose Replace as well as resetting credentials)")
	}
	if !opaqueID(deviceTypeID) || !c.Reaches(deviceTypeID) {
		return res, notFound("device type", deviceTypeID)
	}
	dt, err := s.store.DeviceType(ctx, c.AccountID, deviceTypeID)
	if err != nil {
		return res, err
	}
	opts.Filename = CleanFilename(opts.Filename)

	trust, err := s.trustOf(ctx, c.AccountID, dt)
	if err != nil {
		return res, err
	}
	spool := newEntrySpool(spoolMemory)
	defer spool.Close()
	endRead := devreg.StartStage(ctx, "read")
	read := s.readEntries(c.AccountID, dt, trust, src, spool, opts.Problems)
	endRead()
	if read.err != nil {
		return res, read.err
	}
	if read.total == 0 {
		return res, devreg.Errorf(devreg.EINVALIDROWS, "the request lists no devices; nothing was registered")
	}
	if read.invalid.Count > 0 && !read.maybeDuplicates {
		return res, invalidRows(read.invalid, read.total)
	}

	keyIDs := make([]string, len(read.keys))
	for i, k := range read.keys {
		keyIDs[i] = k.ID
	}
	if read.certificates {
		// A certificate's "hash" is its fingerprint, under no key.
		keyIDs = []string{devreg.CertificateKeyID}
	}
	now := s.now()
	batchID := credential.RandomID("bat", 16)
	audit := s.auditEntry(ctx, actorOf(c), "devices.register", devreg.AuditObject{Type: "batch", ID: batchID}, nil)
	reg := devreg.Registration{
		AccountID:    c.AccountID,
		DeviceTypeID: dt.ID,
		KeyIDs:       keyIDs,
		DryRun:       opts.DryRun,
		Batch: devreg.Batch{
			ID:           batchID,
			DeviceTypeID: dt.ID,
			CreatedAt:    now,
			CreatedBy:    c.Name,
			Source:       c.Source,
			Filename:     opts.Filename,
			Name:         opts.BatchName,
			CreatorType:  actorOf(c).Type,
			CreatorID:    actorOf(c).ID,
		},
		Unchanged:    unchangedRule(opts),
		KeyID:        c.KeyID,
		UserID:       c.UserID,
		Certificates: read.details,
		Sample:       read.sample,
		MayRepeat:    read.maybeDuplicates,
		Refused:      read.invalid.Count > 0,
	}
	policy = &registrationPolicy{s: s, c: c, typeID: dt.ID, batchID: batchID, opts: opts, read: &read, audit: audit}
	defer s.forgetDevices() // a replaced device may have moved to another type
	res, err = s.store.Register(ctx, reg, spool, policy.decide)
	if errors.Is(err, devreg.ErrDeviceTypeDeleted) {
		return res, devreg.Errorf(devreg.ENOTFOUND, "device type %s was deleted while the request was read; nothing was registered "+
			"(create the device type again, or choose another, and send the file again)", dt.ID)
	}
	return res, err
}

// registrationPolicy decides a registration from what its store found (the decide of
// store.Register): it asks again whether the caller may, refuses with every problem named, or
// skips or replaces the conflicting devices, and makes the audit entry.
type registrationPolicy struct {
	s               *Service
	c               devreg.Caller
	typeID, batchID string
	opts            devreg.RegisterOptions
	read            *readResult
	audit           *devreg.AuditEntry
	rechecked       bool // decide has asked again whether the caller may
}

// decide is the decide of store.Register: it refuses (nothing is written) or says what to write.
func (p *registrationPolicy) decide(f devreg.Found) (devreg.Decision, error) {
	replace := p.opts.OnConflict == devreg.ConflictReplace
	if p.c.KeyID != "" || p.c.UserID != "" {
		p.rechecked = true
		k, found := devreg.APIKey{}, f.Caller != nil
		if found {
			k = *f.Caller
		}
		if err := p.s.stillAuthorized(p.c, k, found, notRegistered); err != nil {
			return devreg.Decision{}, err
		}
	}
	if f.Repeats > 0 || p.read.invalid.Count > 0 {
		dups := devreg.ProblemList{Sink: p.opts.Problems}
		if f.EachRepeat != nil {
			if err := f.EachRepeat(func(r devreg.Repeat) { dups.Add(repeatProblem(r)) }); err != nil {
				return devreg.Decision{}, err
			}
		}
		return devreg.Decision{}, invalidRows(p.read.invalid.Merge(dups), p.read.total)
	}
	refused := devreg.ProblemList{Sink: p.opts.Problems}
	refuse := func(k devreg.Conflict) { refused.Add(refusedProblem(k, p.c, p.typeID, p.read.certificates)) }
	if f.TakenNew > 0 || replace && f.TakenConflicting > 0 {
		if err := f.EachTaken(replace, refuse); err != nil {
			return devreg.Decision{}, err
		}
		return devreg.Decision{}, invalidRows(refused, p.read.total)
	}
	if f.Conflicting > 0 && p.opts.OnConflict == devreg.ConflictFail {
		if err := f.EachConflict(refuse); err != nil {
			return devreg.Decision{}, err
		}
		return devreg.Decision{}, refused.Error(devreg.ECONFLICT, fmt.Sprintf("%d of %d devices are already registered differently; nothing was registered "+
			"(on_conflict=skip leaves them, on_conflict=replace overwrites them)", f.Conflicting, f.Total))
	}
	d := devreg.Decision{Replace: replace, Audit: p.audit}
	out := f.Outcome(d)
	p.audit.Details = map[string]any{"device_type_id": p.typeID, "batch_id": p.batchID, "on_conflict": string(p.opts.OnConflict), "filename": p.opts.Filename,
		"name": p.opts.BatchName, "created": out.Created, "unchanged": out.Unchanged, "replaced": out.Replaced, "skipped": out.Skipped}
	if p.opts.Credentials == devreg.CredentialsReset {
		p.audit.Details["credentials"] = string(p.opts.Credentials)
		p.audit.Details["device_credentials_dropped"] = out.DeviceCredentialsDropped
	}
	return d, nil
}

// unchangedRule is when a registration with opts counts a registered device unchanged.
func unchangedRule(opts devreg.RegisterOptions) devreg.UnchangedRule {
	switch {
	case opts.Credentials == devreg.CredentialsReset:
		return devreg.UnchangedOnlyCredential
	case opts.OnConflict == devreg.ConflictReplace:
		return devreg.UnchangedValidCredential
	}
	return devreg.UnchangedAnyCredential
}

// notRegistered is what a refused registration did.
const notRegistered = "nothing was registered"

func repeatProblem(r devreg.Repeat) devreg.Problem {
	msg := fmt.Sprintf("device ID is listed more than once; first at index %d", r.FirstIndex)
	if r.FirstLine > 0 {
		msg += fmt.Sprintf(" (line %d)", r.FirstLine)
	}
	return devreg.Problem{Index: r.Index, Line: r.Line, DeviceID: r.DeviceID, Message: msg, Kind: "device ID is listed more than once"}
}

// refusedProblem says why entry k refuses a registration into device type typeID: its
// certificate is another device's, or its device is registered differently (under a device type
// named where the caller may see it).
func refusedProblem(k devreg.Conflict, c devreg.Caller, typeID string, certificates bool) devreg.Problem {
	p := devreg.Problem{Index: k.Index, Line: k.Line, DeviceID: k.DeviceID}
	credentialWord := "secret"
	if certificates {
		credentialWord = "credential (a secret, or another certificate)"
	}
	switch {
	case k.CertificateTaken:
		p.Message = "certificate is a credential of another device already; a certificate may belong to one device only"
	case k.RegisteredType == typeID:
		p.Message = "device ID is already registered with a different " + credentialWord
	case !c.Reaches(k.RegisteredType):
		p.Message = "device ID is already registered under a device type this key does not reach"
	default:
		p.Message = "device ID is already registered under device type " + k.RegisteredType
	}
	return p
}

func invalidRows(problems devreg.ProblemList, total int) error {
	return problems.Error(devreg.EINVALIDROWS, fmt.Sprintf("%d of %d devices are invalid; nothing was registered", problems.Count, total))
}

// CleanFilename keeps an uploaded file's name as a user would read it: valid UTF-8 without
// control characters, at most 255 characters. Invisible characters that could make it look like
// another name (those names refuse: format characters such as bidi overrides and zero-width
// spaces, line and paragraph separators, Hangul fillers, ...) are dropped too: the name is only a
// note on the batch, and the upload should not fail over it.
func CleanFilename(name string) string {
	rs := []rune(strings.ToValidUTF8(name, ""))
	kept := make([]rune, 0, len(rs))
	for i, r := range rs {
		if !unicode.IsControl(r) && !invisible(rs, i) {
			kept = append(kept, r)
		}
	}
	return string(kept[:min(len(kept), 255)])
}

// checkChunk is how many entries a worker checks and hashes at a time.
const checkChunk = 256

// maxScreened is how many device IDs readEntries screens for repeats in memory (8 bytes of hash
// each); a larger request leaves the check to the stage.
const maxScreened = 8 << 20

type readResult struct {
	keys            []credential.Key // the server keys the hashes were made with, the current last
	certificates    bool             // the entries register certificates (their hashes are fingerprints)
	details         []devreg.CertificateDetails
	total           int
	invalid         devreg.ProblemList
	maybeDuplicates bool     // some device ID may repeat: the stage must check
	sample          []string // the device IDs of the sampled entries (devreg.Sampled)
	err             error
}

// checkBatch is a run of entries on their way from the body to the spool: read in order, checked
// and hashed by any worker, spooled in order once done is closed.
type checkBatch struct {
	entries  []devreg.DeviceEntry
	staged   []devreg.StagedEntry
	problems []devreg.Problem
	certs    []bool // whether each staged entry registers a certificate
	details  []devreg.CertificateDetails
	done     chan struct{}
}

// readEntries reads src to its end, checks every entry against the device type's rules, hashes
// the secrets of valid ones under every server key and spools them. Reading runs on this
// goroutine, checking and hashing on a worker per core and spooling on one more, since with the
// database out of the way until the body is whole, these are all a registration's first half
// does. It screens the device IDs for repeats by their 64-bit hashes: distinct hashes prove the
// IDs distinct; a repeated hash (a repeated ID, or rarely a collision) leaves the exact check to
// the stage.
func (s *Service) readEntries(accountID string, dt devreg.DeviceType, trust typeTrust, src devreg.EntrySource, spool *entrySpool,
	sink func(devreg.Problem)) readResult {
	r := readResult{keys: s.keys.Keys(), invalid: devreg.ProblemList{Sink: sink}}
	workers := max(1, runtime.GOMAXPROCS(0))
	work := make(chan *checkBatch, workers)
	ordered := make(chan *checkBatch, 2*workers)
	stop := make(chan struct{}) // closed when the spool fails: stop reading
	var refused atomic.Bool     // an entry is invalid: hashing the rest is wasted work

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hashers := make([]*credential.Hasher, len(r.keys))
			for i, k := range r.keys {
				hashers[i] = credential.NewHasher(k)
			}
			for b := range work {
				s.checkBatch(accountID, dt, trust, hashers, b, &refused)
				close(b.done)
			}
		}()
	}
	spooled := make(chan error, 1)
	go func() {
		var err error
		seed := maphash.MakeSeed()
		// The IDs' hashes, sorted once the body is read: half the memory of a set, and
		// sorting them takes less time than filling a set does.
		var screened []uint64
		var kinds credentialKinds
		for b := range ordered {
			<-b.done
			if err != nil {
				continue // drain, so that reading ends
			}
			r.details = append(r.details, b.details...)
			// The chunk's problems, in index order, so that a list of the first problems and
			// a sink that sorts runs (the console's download of every problem) see one run: those
			// its check found, and the staged entries' kinds.
			next := 0
			for i, e := range b.staged {
				for ; next < len(b.problems) && b.problems[next].Index < e.Index; next++ {
					r.invalid.Add(b.problems[next])
				}
				if p, ok := kinds.check(e, b.certs[i]); !ok {
					r.invalid.Add(p)
					refused.Store(true)
					continue
				}
				if devreg.Sampled(e.Index) {
					r.sample = append(r.sample, e.DeviceID)
				}
				if !r.maybeDuplicates {
					if len(screened) == maxScreened {
						r.maybeDuplicates, screened = true, nil
					} else {
						screened = append(screened, maphash.String(seed, e.DeviceID))
					}
				}
				if err = spool.Add(e); err != nil {
					close(stop)
					break
				}
			}
			for ; next < len(b.problems); next++ {
				r.invalid.Add(b.problems[next])
			}
		}
		slices.Sort(screened)
		for i := 1; i < len(screened) && !r.maybeDuplicates; i++ {
			r.maybeDuplicates = screened[i] == screened[i-1]
		}
		r.certificates = kinds.certificates
		r.invalid = r.invalid.Merge(kinds.repeats(sink))
		spooled <- err
	}()

	r.err = func() error {
		defer func() { close(work); close(ordered) }()
		for done := false; !done; {
			b := &checkBatch{entries: make([]devreg.DeviceEntry, 0, checkChunk), done: make(chan struct{})}
			for len(b.entries) < checkChunk {
				e, err := src.Next()
				if errors.Is(err, io.EOF) {
					done = true
					break
				}
				if err != nil {
					return err
				}
				b.entries = append(b.entries, e)
			}
			r.total += len(b.entries)
			select {
			case ordered <- b:
			case <-stop:
				return nil
			}
			work <- b
		}
		return nil
	}()
	wg.Wait()
	if err := <-spooled; r.err == nil {
		r.err = err
	}
	return r
}

// checkBatch checks the entries of b and hashes the secrets of the valid ones, unless the
// request is refused already.
func (s *Service) checkBatch(accountID string, dt devreg.DeviceType, trust typeTrust, hashers []*credential.Hasher, b *checkBatch, refused *atomic.Bool) {
	b.staged = make([]devreg.StagedEntry, 0, len(b.entries))
	b.certs = make([]bool, 0, len(b.entries))
	now := s.now()
	for _, e := range b.entries {
		msg := e.Problem
		if msg == "" {
			msg = credential.CheckDeviceID(e.DeviceID)
		}
		if msg == "" && (e.Certificate != "" || e.CertificateSHA256 != "") {
			fp, details, msg := trust.checkEntry(e, now)
			if msg != "" {
				refused.Store(true)
				b.problems = append(b.problems, devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: msg})
				continue
			}
			if details != nil {
				b.details = append(b.details, *details)
			}
			b.staged = append(b.staged, devreg.StagedEntry{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Hashes: fp[:]})
			b.certs = append(b.certs, true)
			continue
		}
		if msg == "" {
			msg = credential.CheckSecret(e.Secret, dt.MinSecretLength)
		}
		if msg != "" {
			refused.Store(true)
			b.problems = append(b.problems, devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: msg})
			continue
		}
		var hashes []byte
		if !refused.Load() {
			hashes = make([]byte, 0, len(hashers)*credential.HashSize)
			for _, h := range hashers {
				hashes = h.Append(hashes, accountID, e.DeviceID, e.Secret)
			}
		}
		b.staged = append(b.staged, devreg.StagedEntry{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Hashes: hashes})
		b.certs = append(b.certs, false)
	}
}
