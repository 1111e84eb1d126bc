package devreg

import (
	"crypto/x509"
	"encoding/json"
	"time"
)

// DeviceStatus says whether a device may authenticate.
type DeviceStatus string

// The device statuses.
const (
	StatusEnabled  DeviceStatus = "enabled"
	StatusDisabled DeviceStatus = "disabled"
)

// Valid reports whether s is a known status.
func (s DeviceStatus) Valid() bool { return s == StatusEnabled || s == StatusDisabled }

// Device is a registered device. It never carries its secret; the keyed hash stays in the store.
type Device struct {
	DeviceID        string          `json:"device_id"`
	DeviceTypeID    string          `json:"device_type_id"`
	Status          DeviceStatus    `json:"status"`
	BatchID         string          `json:"batch_id"`
	CreatedAt       time.Time       `json:"created_at"`
	LastSeenAt      *time.Time      `json:"last_seen_at"`
	FirmwareVersion *string         `json:"firmware_version"`
	ReportedStatus  json.RawMessage `json:"reported_status"`
	Seq             int64           `json:"-"` // registration order, for paging
}

// DeviceFilter selects devices of one account. Empty fields do not filter.
type DeviceFilter struct {
	DeviceTypeID string
	BatchID      string
	Prefix       string
	Status       DeviceStatus
	Connected    *bool
	// Contains selects the devices whose ID contains it. Unlike the other filters it has no index
	// of its own: a page of such a search reads at most SearchWindow devices in ID order from
	// its cursor, and a page it did not fill ends there, with a cursor to search on.
	Contains string
	Sort     DeviceSort
	Limit    int
	After    Cursor // where the page starts: the cursor handed out with the page before

	// DeviceTypeIDs, when not nil, are the only device types whose devices match: the types a
	// restricted key reaches (the registry sets it; a request cannot). Empty matches nothing.
	DeviceTypeIDs []string
}

// Listing limits.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// SearchWindow is how many devices a page of a substring search (DeviceFilter.Contains)
	// reads at most: a page that finds too few reads the window's IDs twice, from the index alone,
	// in 0.1-0.17 s on SQLite and 0.23-0.27 s on PostgreSQL (2 shared cores).
	SearchWindow = 100000
)

// DeviceSort is the order of a device listing. Each one is a walk of an index from the page's
// position, so a deep page costs what the first one costs.
type DeviceSort string

// The orders of a device listing.
const (
	SortRegistered DeviceSort = ""          // registration order, oldest first (the default)
	SortNewest     DeviceSort = "newest"    // registration order, newest first
	SortID         DeviceSort = "id"        // device ID order (byte order); prefix and substring searches list this way
	SortLastSeen   DeviceSort = "last_seen" // most recently seen first, then those never seen, newest first
)

// Valid reports whether s is a known order.
func (s DeviceSort) Valid() bool {
	return s == SortRegistered || s == SortNewest || s == SortID || s == SortLastSeen
}

// ByID reports whether a listing with filter f is in device ID order.
func (f DeviceFilter) ByID() bool { return f.Sort == SortID || f.Prefix != "" || f.Contains != "" }

// OnConflict says what a registration does with a device ID that is already registered with a
// different secret or under another device type.
type OnConflict string

// The conflict policies.
const (
	ConflictFail    OnConflict = "fail"
	ConflictSkip    OnConflict = "skip"
	ConflictReplace OnConflict = "replace"
)

// Valid reports whether o is a known policy.
func (o OnConflict) Valid() bool {
	return o == ConflictFail || o == ConflictSkip || o == ConflictReplace
}

// DeviceEntry is one device of a registration request as it arrives: an ID, its secret, and where
// it stood in the request. Problem is set by a parser that already found the entry malformed.
type DeviceEntry struct {
	Index    int
	Line     int // 1-based line of a CSV body; 0 for JSON
	DeviceID string
	Secret   string
	// Certificate (PEM) or CertificateSHA256 (hex) stand in for Secret in an entry that
	// registers a device by its certificate.
	Certificate       string
	CertificateSHA256 string
	// Intermediates are CA certificates offered with Certificate to chain it to one of the
	// type's CAs (a chip vendor's manifest names the CA that signed each part); they are
	// trusted for nothing themselves.
	Intermediates []*x509.Certificate
	Problem       string
}

// EntrySource yields the entries of a registration request one at a time, so that a request of a
// million devices need not be held in memory. Next returns io.EOF after the last entry.
type EntrySource interface {
	Next() (DeviceEntry, error)
}

// CredentialsOnReplace says what a registration with on_conflict=replace does with the other
// credentials of the devices it replaces.
type CredentialsOnReplace string

// The choices of what a replace does with a device's other credentials.
const (
	// CredentialsKeep keeps the credentials a device made itself, so that re-running a factory
	// file cannot lock out a device that has rotated its secret.
	CredentialsKeep CredentialsOnReplace = "keep"
	// CredentialsReset leaves the registered secret as the device's only credential, dropping
	// those it made too: the way out when a factory secret leaked and someone rotated it first.
	CredentialsReset CredentialsOnReplace = "reset"
)

// Valid reports whether c is a known choice.
func (c CredentialsOnReplace) Valid() bool { return c == CredentialsKeep || c == CredentialsReset }

// RegisterOptions are the knobs of one registration request.
type RegisterOptions struct {
	OnConflict  OnConflict
	Credentials CredentialsOnReplace // with OnConflict replace; "" is CredentialsKeep
	DryRun      bool
	Filename    string
	// BatchName is the optional name of the batch the registration makes (?batch_name=): at
	// most MaxBatchName characters, none of them control or invisible ones.
	BatchName string
	// Problems, when set, is given every problem of a refused registration, not only the first
	// MaxProblems its error lists: kind by kind, each kind in index order.
	Problems func(Problem)
}

// MaxBatchName is how many characters a batch's name may have.
const MaxBatchName = 100

// RegisterResult counts what a registration did (or, in a dry run, would do).
type RegisterResult struct {
	BatchID   string `json:"batch_id"`
	Created   int64  `json:"created"`
	Unchanged int64  `json:"unchanged"`
	Replaced  int64  `json:"replaced"`
	Skipped   int64  `json:"skipped"`
	DryRun    bool   `json:"dry_run,omitempty"`
	// DeviceCredentialsDropped counts, under CredentialsReset, the credentials the replaced
	// devices had made themselves and lost.
	DeviceCredentialsDropped int64 `json:"device_credentials_dropped,omitempty"`
}
