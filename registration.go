package devreg

import (
	"context"
	"fmt"
)

// RegistrationPlan says what a staged registration is to do when it is applied.
type RegistrationPlan struct {
	AccountID    string
	DeviceTypeID string
	KeyIDs       []string // the server keys the staged hashes were made with, in order; the last is current
	OnConflict   OnConflict
	DryRun       bool
	Batch        Batch // recorded when the registration creates or replaces at least one device
	// Audit, when set, makes the audit entry of a registration that writes, from its result; it
	// is appended in the registration's transaction.
	Audit func(RegisterResult) *AuditEntry
	// ResetCredentials, with ConflictReplace, leaves each replaced device the registered
	// credential alone, dropping those it made itself too; and a device counts as unchanged only
	// if that is all it holds already (enabled, without a window).
	ResetCredentials bool
	// KeyID and UserID name whom the registration runs for: an API key, or a console user (no
	// key). A body may take minutes to arrive, so just before the registration commits the store
	// reads that key again (or whether the user still exists) and hands it to Recheck, when set;
	// an error from Recheck refuses the registration, which then writes nothing. On PostgreSQL
	// the key's row is held from that read to the commit, so that a revocation waits for the
	// commit and comes after it.
	KeyID, UserID string
	Recheck       func(key APIKey, found bool) error
	// Certificates holds what the certificates given whole said, kept when the registration
	// writes. A registration of certificates has KeyIDs [CertificateKeyID], and its entries'
	// hashes are the certificates' fingerprints.
	Certificates []CertificateDetails
	// Refused, when set, is given every entry that refuses the registration, in index order:
	// each conflict of a ConflictError (which lists the first MaxProblems only) or each entry of
	// a CertificatesTakenError.
	Refused func(Conflict)
}

// StagedEntry is a checked entry of a registration request. Hashes holds the secret's keyed hash
// under each of the plan's keys, concatenated in the same order (empty once the request is
// known to be refused).
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
	// Replay hands the entries to fn in order, at most chunk at a time.
	Replay(chunk int, fn func([]StagedEntry) error) error
}

// Sampled reports whether the entry at index is one of a registration's sample, whose device
// IDs are looked up before its devices are written: the entries at index 0, 1, 2, 4, 8, ...
func Sampled(index int) bool { return index&(index-1) == 0 }

// RegistrationStage applies the checked entries of one registration request to the registry in
// one short write, once the request has been read in full (however slowly it arrived). Stores
// implement it.
type RegistrationStage interface {
	// Direct applies the plan to entries, atomically, without staging them, when the request is
	// of one of the two kinds a factory sends most: every entry new (each device is then written
	// once) or every entry registered already with the same secret and type (then nothing is
	// written). The entries' device IDs must be known to be distinct. sample holds the device IDs
	// of a few entries spread over the request, which are looked up first to tell the kinds
	// apart. It returns done=false, having written nothing, for any other request: the caller
	// stages its entries then.
	Direct(ctx context.Context, plan RegistrationPlan, entries RegistrationEntries, sample []string) (res RegisterResult, done bool, err error)
	// Add stages valid entries.
	Add(ctx context.Context, entries []StagedEntry) error
	// Duplicates calls add, in index order, for every staged entry whose device ID an earlier
	// entry already had.
	Duplicates(ctx context.Context, add func(Repeat)) error
	// Apply registers the staged entries as the plan says, atomically. Conflicts under
	// ConflictFail return a *ConflictError; nothing is written then.
	Apply(ctx context.Context, plan RegistrationPlan) (RegisterResult, error)
	// Close discards the stage.
	Close() error
}

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
	// (a CertificatesTakenError), not that the device ID is registered differently.
	CertificateTaken bool
}

// ConflictError refuses a registration under ConflictFail that meets registered devices.
type ConflictError struct {
	Conflicts []Conflict // the first MaxProblems, in index order
	Count     int64      // all of them
	Total     int64      // entries of the request
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%d of %d devices are already registered differently", e.Count, e.Total)
}

// CertificatesTakenError refuses a registration that would give a certificate that another
// device holds to a device: a certificate is one device's only.
type CertificatesTakenError struct {
	Entries []Conflict // the first MaxProblems, in index order; RegisteredType is unused
	Count   int64
}

func (e *CertificatesTakenError) Error() string {
	return fmt.Sprintf("%d certificates are credentials of other devices already", e.Count)
}
