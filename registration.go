package devreg

import "context"

// RegistrationPlan says what a staged registration is to do when it is applied.
type RegistrationPlan struct {
	AccountID    string
	DeviceTypeID string
	KeyIDs       []string // the server keys the staged hashes were made with, in order; the last is current
	OnConflict   OnConflict
	DryRun       bool
	Batch        Batch // recorded when the registration creates or replaces at least one device
	// VisibleTypes, when not nil, are the only device types the caller may see: a conflict with
	// a device of another type does not name that type.
	VisibleTypes []string
	// Audit, when set, makes the audit entry of a registration that writes, from its result; it
	// is appended in the registration's transaction.
	Audit func(RegisterResult) *AuditEntry
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
	// Duplicates reports every staged entry whose device ID an earlier entry already had.
	Duplicates(ctx context.Context, problems *ProblemList) error
	// Apply registers the staged entries as the plan says, atomically. Conflicts under
	// ConflictFail return an *Error with code ECONFLICT listing them; nothing is written then.
	Apply(ctx context.Context, plan RegistrationPlan) (RegisterResult, error)
	// Close discards the stage.
	Close() error
}
