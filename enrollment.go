package devreg

import "time"

// Enrollment groups (issue 24): a group of a device type registers, at its first connection, a
// device the account does not have whose ID matches the group's pattern and whose secret is the
// one derived from a live key of the group (credential.DeriveSecret, Azure DPS's formula).

// SourceEnrollment is the source of the batches enrollment fills (one per group and UTC day) and
// of the credential a device enrolled with.
const SourceEnrollment Source = "enrollment"

// CredentialFromEnrollment is the source of the derived secret a device enrolled with.
const CredentialFromEnrollment CredentialSource = "enrollment"

// ActorEnrollmentGroup is the audit actor of a device's enrollment: the group that registered it.
const ActorEnrollmentGroup = "enrollment_group"

// Limits of enrollment groups.
const (
	MaxEnrollmentGroupsPerType = 20      // groups per device type
	MaxEnrollmentDevices       = 1 << 40 // the largest max_devices
	MaxEnrollmentPerHour       = 100000  // the largest max_per_hour
	MaxEnrollmentGroupKeys     = 5       // keys a group holds at once, live or not yet removed
)

// EnrollmentGroup is a device type's enrollment group, as the API shows it: never its keys.
type EnrollmentGroup struct {
	ID           string       `json:"id"`
	AccountID    string       `json:"-"`
	DeviceTypeID string       `json:"device_type_id"`
	Name         string       `json:"name"`
	IDPattern    string       `json:"id_pattern"`
	MaxDevices   int64        `json:"max_devices"`
	MaxPerHour   int          `json:"max_per_hour"`
	NotBefore    *time.Time   `json:"not_before"`
	NotAfter     *time.Time   `json:"not_after"`
	Status       DeviceStatus `json:"status"`
	// Temporary makes the derived secret a device enrolled with end after its type's rotation
	// grace: the device is expected to rotate to a secret of its own (POST /device/v1/credentials).
	Temporary bool `json:"temporary"`
	// AllowList restricts the group to the device IDs put in its allow-list.
	AllowList     bool            `json:"allow_list"`
	EnrolledCount int64           `json:"enrolled_count"`
	CreatedAt     time.Time       `json:"created_at"`
	Keys          []EnrollmentKey `json:"keys"`
}

// EnrollmentKey is one key of a group, as the API shows it: its ID and window, never the key.
type EnrollmentKey struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	NotAfter  *time.Time `json:"not_after"` // nil: no end
	// SealKeyID and Sealed are the key sealed with the server key SealKeyID (credential.Seal);
	// only the store and the registry see them.
	SealKeyID string `json:"-"`
	Sealed    []byte `json:"-"`
}

// LiveAt reports whether the key may derive secrets at now.
func (k EnrollmentKey) LiveAt(now time.Time) bool {
	return k.NotAfter == nil || now.Before(*k.NotAfter)
}

// OpenAt reports whether the group registers devices at now: enabled and inside its window.
func (g EnrollmentGroup) OpenAt(now time.Time) bool {
	return g.Status == StatusEnabled && (g.NotBefore == nil || !now.Before(*g.NotBefore)) && (g.NotAfter == nil || now.Before(*g.NotAfter))
}

// Enrollment is a device registering itself through an enrollment group at its first
// connection, as the registry decided it may: its ID matched the group's pattern and its secret
// is the one derived from the group's key KeyID. The store checks the rest again under the
// account's lock (see EnrollResult).
type Enrollment struct {
	AccountID string
	GroupID   string
	IDPattern string // the pattern the ID matched: a group whose pattern changed since refuses
	KeyID     string // the group key whose derived secret the device presented
	// HourKey is the throttle table's key under which the group's enrollments within the hour
	// are counted against its max_per_hour.
	HourKey  string
	DeviceID string
	// HashKeyID and SecretHash are the derived secret as stored: hashed with the server key
	// HashKeyID (credential.Hash), as every secret is.
	HashKeyID  string
	SecretHash []byte
	Now        time.Time
	// Batch is the batch to make when the group has none of Now's UTC day yet (its ID and
	// CreatedBy; the store sets the rest).
	Batch Batch
	// Audit is appended in the enrollment's transaction; the store adds device_type_id,
	// batch_id and batch_created to its details.
	Audit *AuditEntry
}

// EnrollResult is what the store found, under the account's lock, and did. It writes nothing
// unless Registered.
type EnrollResult struct {
	Registered     bool // the device is registered now, by this call
	Exists         bool // the device ID is registered already: its own credentials decide
	EnrolledBefore bool // the ID enrolled through a group before (and was deleted since)
	// GroupClosed: the group is gone, disabled or outside its window, its pattern changed, or the
	// key is no longer live.
	GroupClosed bool
	NotAllowed  bool // the group has its allow-list on, and the ID is not in it
	Full        bool // the group has registered max_devices devices
	// HourFull: the group has registered max_per_hour devices within the hour, whose end is
	// RetryAfter away.
	HourFull      bool
	RetryAfter    time.Duration
	BatchID       string // the day's batch
	BatchCreated  bool   // this call made it
	BatchDisabled bool   // the day's batch is disabled
	// Device is the device as registered, when Registered: what DeviceAuth would read of it.
	Device DeviceAuth
}

// MinEnrollmentCredentialLife is the least time the derived secret of a device enrolled through
// a temporary group stays valid, however short its type's rotation grace: a grace of 0 would end
// it at the very enrollment, and the device could never log in to rotate.
const MinEnrollmentCredentialLife = time.Hour

// EnrollmentWindow is the window of a group's max_per_hour, and of the failures its page shows.
const EnrollmentWindow = time.Hour
