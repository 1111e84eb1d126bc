package devreg

import "time"

// DefaultEnrollmentPerHour is the max_per_hour of a group created without one.
const DefaultEnrollmentPerHour = 100

// DefaultOldKeysGrace is how long a group's older keys keep working after a rotation that does
// not say when they end: a week, time enough to flash the new key into a factory line.
const DefaultOldKeysGrace = 7 * 24 * time.Hour

// NewEnrollmentGroup is what an administrator gives to create an enrollment group. Nil fields
// take their defaults: max_per_hour DefaultEnrollmentPerHour, temporary true, no window.
type NewEnrollmentGroup struct {
	Name       string
	IDPattern  string
	MaxDevices int64
	MaxPerHour *int
	NotBefore  *time.Time
	NotAfter   *time.Time
	Temporary  *bool
}

// EnrollmentGroupUpdate changes the fields of an enrollment group that are not nil. ClearNotBefore
// and ClearNotAfter remove an end of the window (JSON null).
type EnrollmentGroupUpdate struct {
	Name           *string
	IDPattern      *string
	MaxDevices     *int64
	MaxPerHour     *int
	NotBefore      *time.Time
	ClearNotBefore bool
	NotAfter       *time.Time
	ClearNotAfter  bool
	Status         *DeviceStatus
	Temporary      *bool
}

// EnrollmentGroupKeyed is an enrollment group with the key just made for it, in the form the API
// shows once (base64): the answer to creating a group or rotating its key, and nowhere else.
type EnrollmentGroupKeyed struct {
	Group    EnrollmentGroup
	KeyID    string
	GroupKey string
}
