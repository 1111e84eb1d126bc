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

// RegistrationStage holds the checked entries of one registration request apart from the
// registry, so that a request can be read in full (however slowly it arrives) before one short
// write applies it. Stores implement it.
type RegistrationStage interface {
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
