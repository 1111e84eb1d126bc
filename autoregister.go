package devreg

import "time"

// SourceAutoRegister is the source of the batches that just-in-time registration fills: one per
// device type and UTC day, made by the day's first device that registers itself.
const SourceAutoRegister Source = "auto_register"

// AutoRegistration is a device registering itself by the certificate it presented (just-in-time
// registration), as the registry decided it may: under DeviceTypeID, with the certificate pinned
// as its credential, into the type's batch of Now's UTC day.
type AutoRegistration struct {
	AccountID    string
	DeviceTypeID string
	DeviceID     string
	Certificate  CertificateDetails
	Now          time.Time
	// Batch is the batch to make when the type has no batch of SourceAutoRegister for Now's UTC
	// day yet (its ID, CreatedBy; the store sets the rest).
	Batch Batch
	// Audit is appended in the registration's transaction; the store adds batch_id and
	// batch_created to its details.
	Audit *AuditEntry
}

// AutoRegisterResult is what the store found, under the account's lock, and did. It writes
// nothing unless Registered.
type AutoRegisterResult struct {
	Registered    bool   // the device is registered now, by this call
	Exists        bool   // the device ID is registered already
	TypeOff       bool   // the device type is gone or no longer has auto_register on
	BatchID       string // the day's batch
	BatchCreated  bool   // this call made it
	BatchDisabled bool   // the day's batch is disabled
	// CertificateHolder is the device that holds the certificate as a credential already, if any.
	CertificateHolder string
}
