package registry

import (
	"context"
	"errors"
	"fmt"
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

	keys := s.keys.Keys()
	hashers := make([]*credential.Hasher, len(keys))
	keyIDs := make([]string, len(keys))
	for i, k := range keys {
		hashers[i], keyIDs[i] = credential.NewHasher(k), k.ID
	}
	var invalid devreg.ProblemList
	total := 0
	hashes := make([]byte, 0, len(keys)*credential.HashSize)
	for {
		e, err := src.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, err
		}
		total++
		msg := e.Problem
		if msg == "" {
			msg = credential.CheckDeviceID(e.DeviceID)
		}
		if msg == "" {
			msg = credential.CheckSecret(e.Secret, dt.MinSecretLength)
		}
		if msg != "" {
			invalid.Add(devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: msg})
			continue
		}
		hashes = hashes[:0]
		if invalid.Count == 0 { // once the request is refused, hashing is wasted work
			for _, h := range hashers {
				hashes = h.Append(hashes, c.AccountID, e.DeviceID, e.Secret)
			}
		}
		if err := stage.Add(ctx, e.Index, e.Line, e.DeviceID, hashes); err != nil {
			return res, err
		}
	}
	if total == 0 {
		return res, devreg.Errorf(devreg.EINVALIDROWS, "the request lists no devices; nothing was registered")
	}
	var dups devreg.ProblemList
	if err := stage.Duplicates(ctx, &dups); err != nil {
		return res, err
	}
	if problems := merge(invalid, dups); problems.Count > 0 {
		return res, &devreg.Error{
			Code:         devreg.EINVALIDROWS,
			Message:      fmt.Sprintf("%d of %d devices are invalid; nothing was registered", problems.Count, total),
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
