package registry

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sort"
	"strings"
	"unicode"

	"devreg"
	"devreg/credential"
)

// Register registers the devices src yields under a device type, all or nothing. The whole
// request is read, checked and staged before anything is written, so a slow upload holds no lock
// and a bad entry anywhere leaves the registry untouched.
func (s *Service) Register(ctx context.Context, deviceTypeID string, src devreg.EntrySource, opts devreg.RegisterOptions) (devreg.RegisterResult, error) {
	var res devreg.RegisterResult
	c, err := authorize(ctx, devreg.ScopeRegister)
	if err != nil {
		return res, err
	}
	if opts.OnConflict == "" {
		opts.OnConflict = devreg.ConflictFail
	}
	if !opts.OnConflict.Valid() {
		return res, devreg.Errorf(devreg.EBADREQUEST, "on_conflict must be fail, skip or replace; it is %q", opts.OnConflict)
	}
	if opts.OnConflict == devreg.ConflictReplace && !c.Scope.Allows(devreg.ScopeAdmin) {
		return res, devreg.Errorf(devreg.EFORBIDDEN, "on_conflict=replace needs an API key with scope \"admin\"; this key has scope %q", c.Scope)
	}
	if !opaqueID(deviceTypeID) {
		return res, notFound("device type", deviceTypeID)
	}
	dt, err := s.store.DeviceType(ctx, c.AccountID, deviceTypeID)
	if err != nil {
		return res, err
	}
	opts.Filename = cleanFilename(opts.Filename)
	stage, err := s.store.NewStage(ctx)
	if err != nil {
		return res, err
	}
	defer stage.Close()

	keyIDs := make([]string, len(s.keys.Keys()))
	for i, k := range s.keys.Keys() {
		keyIDs[i] = k.ID
	}
	// Reading, checking and hashing the entries runs beside the staging writes, each on a core.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := make(chan []devreg.StagedEntry, 4)
	var read readResult
	go func() {
		defer close(chunks)
		read = s.readEntries(ctx, c.AccountID, dt, src, chunks)
	}()
	var stageErr error
	for chunk := range chunks {
		if stageErr == nil {
			if stageErr = stage.Add(ctx, chunk); stageErr != nil {
				cancel()
			}
		}
	}
	if stageErr != nil {
		return res, stageErr
	}
	if read.err != nil {
		return res, read.err
	}
	if read.total == 0 {
		return res, devreg.Errorf(devreg.EINVALIDROWS, "the request lists no devices; nothing was registered")
	}
	var dups devreg.ProblemList
	if read.maybeDuplicates {
		if err := stage.Duplicates(ctx, &dups); err != nil {
			return res, err
		}
	}
	if problems := merge(read.invalid, dups); problems.Count > 0 {
		return res, &devreg.Error{
			Code:         devreg.EINVALIDROWS,
			Message:      fmt.Sprintf("%d of %d devices are invalid; nothing was registered", problems.Count, read.total),
			Problems:     problems.Items,
			ProblemCount: problems.Count,
		}
	}
	now := s.now()
	return stage.Apply(ctx, devreg.RegistrationPlan{
		AccountID:    c.AccountID,
		DeviceTypeID: dt.ID,
		KeyIDs:       keyIDs,
		OnConflict:   opts.OnConflict,
		DryRun:       opts.DryRun,
		Batch: devreg.Batch{
			ID:           credential.RandomID("bat", 16),
			DeviceTypeID: dt.ID,
			CreatedAt:    now,
			CreatedBy:    c.Name,
			Source:       c.Source,
			Filename:     opts.Filename,
		},
	})
}

// merge combines two problem lists in index order, keeping the first MaxProblems. Each list holds
// the lowest indexes of its kind, so the first MaxProblems of the merge are the lowest overall.
func merge(a, b devreg.ProblemList) devreg.ProblemList {
	items := append(append([]devreg.Problem{}, a.Items...), b.Items...)
	sort.SliceStable(items, func(i, j int) bool { return items[i].Index < items[j].Index })
	if len(items) > devreg.MaxProblems {
		items = items[:devreg.MaxProblems]
	}
	return devreg.ProblemList{Items: items, Count: a.Count + b.Count}
}

// cleanFilename keeps an uploaded file's name as a user would read it: valid UTF-8 without
// control characters, at most 255 characters.
func cleanFilename(name string) string {
	name = strings.ToValidUTF8(name, "")
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, name)
	if r := []rune(name); len(r) > 255 {
		name = string(r[:255])
	}
	return name
}

// stageChunk is how many entries go to the stage at a time.
const stageChunk = 256

// maxScreened is how many device IDs readEntries screens for repeats in memory (8 bytes of hash
// and 4 of index each); a larger request leaves the check to the stage.
const maxScreened = 8 << 20

type readResult struct {
	total           int
	invalid         devreg.ProblemList
	maybeDuplicates bool // some device ID may repeat: the stage must check
	err             error
}

// readEntries reads src to its end, checks every entry against the device type's rules, hashes
// the secrets of valid ones under every server key and sends them on in chunks. It screens the
// device IDs for repeats with a set of 64-bit hashes: a miss proves an ID new, a hit (a repeat,
// or rarely a collision) leaves the exact check to the stage.
func (s *Service) readEntries(ctx context.Context, accountID string, dt devreg.DeviceType, src devreg.EntrySource, out chan<- []devreg.StagedEntry) readResult {
	var r readResult
	keys := s.keys.Keys()
	hashers := make([]*credential.Hasher, len(keys))
	for i, k := range keys {
		hashers[i] = credential.NewHasher(k)
	}
	seed := maphash.MakeSeed()
	seen := map[uint64]struct{}{}
	chunk := make([]devreg.StagedEntry, 0, stageChunk)
	send := func() bool {
		select {
		case out <- chunk:
			chunk = make([]devreg.StagedEntry, 0, stageChunk)
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.err = err
			return r
		}
		r.total++
		msg := e.Problem
		if msg == "" {
			msg = credential.CheckDeviceID(e.DeviceID)
		}
		if msg == "" {
			msg = credential.CheckSecret(e.Secret, dt.MinSecretLength)
		}
		if msg != "" {
			r.invalid.Add(devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: msg})
			continue
		}
		if !r.maybeDuplicates {
			h := maphash.String(seed, e.DeviceID)
			if _, ok := seen[h]; ok || len(seen) >= maxScreened {
				r.maybeDuplicates, seen = true, nil
			} else {
				seen[h] = struct{}{}
			}
		}
		var hashes []byte
		if r.invalid.Count == 0 { // once the request is refused, hashing is wasted work
			hashes = make([]byte, 0, len(hashers)*credential.HashSize)
			for _, h := range hashers {
				hashes = h.Append(hashes, accountID, e.DeviceID, e.Secret)
			}
		}
		chunk = append(chunk, devreg.StagedEntry{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Hashes: hashes})
		if len(chunk) == stageChunk && !send() {
			r.err = ctx.Err()
			return r
		}
	}
	if len(chunk) > 0 && !send() {
		r.err = ctx.Err()
	}
	return r
}
