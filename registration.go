package devreg

import (
	"errors"
)

// Registration says what one registration request asks of a store: where its checked entries
// go, and what the store must know before it can tell which of them are new, unchanged or
// conflicting. What to do about the conflicts is decided later, from what the store finds (see
// Found and Decision).
type Registration struct {
	AccountID    string
	DeviceTypeID string
	KeyIDs       []string // the server keys the entries' hashes were made with, in order; the last is current
	DryRun       bool
	Batch        Batch // recorded when the registration creates or replaces at least one device
	// Unchanged says when a registered device that the request lists with the same device type
	// counts as unchanged rather than conflicting.
	Unchanged UnchangedRule
	// KeyID and UserID name whom the registration runs for: an API key, or a console user (no
	// key). A body may take minutes to arrive, so the store reads that key (or user) again in the
	// transaction that would write, and hands it to decide in Found.Caller. On PostgreSQL the
	// key's row is held from that read to the commit, so that a revocation waits for the commit
	// and comes after it.
	KeyID, UserID string
	// Certificates holds what the certificates given whole said, kept when the registration
	// writes. A registration of certificates has KeyIDs [CertificateKeyID], and its entries'
	// hashes are the certificates' fingerprints.
	Certificates []CertificateDetails
	// Sample holds the device IDs of the sampled entries (see Sampled), which are looked up first
	// to tell a file of new devices and a file sent again from the rest.
	Sample []string
	// MayRepeat says that a device ID may be listed more than once: the store then looks for
	// repeats, and if there are any hands them to decide (Found.Repeats), which must refuse,
	// without looking further.
	MayRepeat bool
	// Refused says that the request is refused already (some entries are invalid): the store
	// only looks for repeats (when MayRepeat), hands them to decide, which must refuse, and
	// writes nothing.
	Refused bool
}

// UnchangedRule says when a registration counts a registered device unchanged: of the same
// device type and with the secret of one of its credentials, as each rule adds.
type UnchangedRule int

const (
	// UnchangedAnyCredential: the secret of any of the device's credentials.
	UnchangedAnyCredential UnchangedRule = iota
	// UnchangedValidCredential: the secret of a credential valid at the batch's time. A replace
	// asks for it: it is to make the registered secret work.
	UnchangedValidCredential
	// UnchangedOnlyCredential: the device holds that credential alone, as a registration leaves
	// it (enabled, without a window). A replace that resets credentials asks for it; the store
	// then counts what the conflicting devices made themselves (Found.DeviceCredentials), which
	// replacing them drops.
	UnchangedOnlyCredential
)

// Found is what a store found of a registration's entries in the transaction that would write
// them, handed to the registration's decide before anything is written.
type Found struct {
	Total       int64 // entries
	New         int64 // entries whose device ID is not registered
	Unchanged   int64 // entries registered already as they are (see UnchangedRule)
	Conflicting int64 // entries registered with another secret or under another device type
	// Repeats counts the entries whose device ID an earlier entry had, when the registration
	// says they may repeat. A Found with repeats (or of a refused registration) holds nothing
	// else but Total and the caller: nothing was looked up.
	Repeats int64
	// TakenNew and TakenConflicting count the entries of a registration of certificates whose
	// certificate is a credential of another device: among the new entries, and among the
	// conflicting ones (which only a replace would write).
	TakenNew, TakenConflicting int64
	// DeviceCredentials counts the credentials that the conflicting devices made themselves,
	// under UnchangedOnlyCredential: what replacing them drops. Unless it is a dry run, those
	// devices are held from this count to the commit, so that it is exact.
	DeviceCredentials int64
	// Caller is the key (or for a console user, a key holding the scope of the user's role)
	// named by Registration.KeyID or UserID, as stored now; nil once it is gone, or when the
	// registration names neither.
	Caller *APIKey

	// EachRepeat, EachConflict and EachTaken hand the repeats, the conflicting entries, and the
	// entries whose certificate another device holds (among the conflicting ones too when
	// replace), in index order, to fn: all of them, however many. Each is set whenever its
	// count may be above zero, and may be called only while decide runs.
	EachRepeat   func(fn func(Repeat)) error
	EachConflict func(fn func(Conflict)) error
	EachTaken    func(replace bool, fn func(Conflict)) error
}

// Decision is what a registration does with what its store found: skip the conflicting devices
// or replace them, and the audit entry to append when it writes. A registration that is refused
// is not a decision but decide's error: nothing is written then.
type Decision struct {
	Replace bool
	Audit   *AuditEntry
}

// Outcome is the result of a registration that found f and decided d, without BatchID and
// DryRun, which the store sets.
func (f Found) Outcome(d Decision) RegisterResult {
	r := RegisterResult{Created: f.New, Unchanged: f.Unchanged, Skipped: f.Conflicting}
	if d.Replace {
		r.Replaced, r.Skipped, r.DeviceCredentialsDropped = f.Conflicting, 0, f.DeviceCredentials
	}
	return r
}

// ErrDeviceTypeDeleted is what a store returns when a registration's device type was deleted
// while its request was read: nothing was registered.
var ErrDeviceTypeDeleted = errors.New("device type deleted meanwhile")

// StagedEntry is a checked entry of a registration request. Hashes holds the secret's keyed hash
// under each of the registration's keys, concatenated in the same order (empty once the request
// is known to be refused).
type StagedEntry struct {
	Index    int
	Line     int
	DeviceID string
	Hashes   []byte
}

// RegistrationEntries are the checked entries of a registration request, kept until the request
// has arrived whole, and handed out again in order as often as asked.
type RegistrationEntries interface {
	Len() int
	// Replay hands the entries to fn in order, at most chunk at a time. fn may keep the slices
	// it is given (to hand them to another goroutine, say): they are never handed out again.
	Replay(chunk int, fn func([]StagedEntry) error) error
	// Release says that the entries will not be replayed again: a spool gives its disk space
	// back, which a registration does not need while it writes what it has staged.
	Release()
}

// Sampled reports whether the entry at index is one of a registration's sample, whose device
// IDs are looked up before its devices are written: the entries at index 0, 1, 2, 4, 8, ...
func Sampled(index int) bool { return index&(index-1) == 0 }

// Repeat is an entry of a registration request whose device ID an earlier entry had.
type Repeat struct {
	Index, Line           int
	DeviceID              string
	FirstIndex, FirstLine int // the first entry with the device ID
}

// Conflict is an entry of a registration request whose device ID is registered with another
// secret or under another device type.
type Conflict struct {
	Index, Line    int
	DeviceID       string
	RegisteredType string // the device type it is registered under
	// CertificateTaken says that the entry's certificate is the credential of another device
	// (from Found.EachTaken), not that the device ID is registered differently.
	CertificateTaken bool
}
