package devreg

import "time"

// A device holds from one to MaxCredentials credentials: secrets it may authenticate with, each
// enabled or disabled and valid within an optional window, so that a new secret can be rolled out
// while the old one still works.
const MaxCredentials = 5

// Rotation grace: how long the credential a device rotates away from keeps working, unless its
// device type says otherwise (in seconds, from 0 to MaxRotationGraceSeconds).
const (
	DefaultRotationGraceSeconds = 7 * 24 * 60 * 60
	MaxRotationGraceSeconds     = 30 * 24 * 60 * 60
)

// Rotation limit: how many times a device may rotate its secret itself in an hour, unless its
// device type says otherwise (from 1 to MaxRotationsPerHourLimit). A device rotates once when it
// first connects and then every few months; five leaves room for retries, and every rotation is
// an audit entry, so a leaked secret cannot flood the log.
const (
	DefaultMaxRotationsPerHour = 5
	MaxRotationsPerHourLimit   = 1000
)

// CredentialSource says who made a credential.
type CredentialSource string

// The credential sources.
const (
	CredentialFromRegistration CredentialSource = "registration"
	CredentialFromAPI          CredentialSource = "api"
	CredentialFromConsole      CredentialSource = "console"
	CredentialFromDevice       CredentialSource = "device" // the device rotated its secret itself
)

// Credential is one of a device's secrets, as anyone may see it: never the secret, never its hash.
type Credential struct {
	ID         string           `json:"id"`
	CreatedAt  time.Time        `json:"created_at"`
	NotBefore  *time.Time       `json:"not_before"` // nil: no limit
	NotAfter   *time.Time       `json:"not_after"`  // nil: no limit
	Status     DeviceStatus     `json:"status"`
	LastUsedAt *time.Time       `json:"last_used_at"`
	Source     CredentialSource `json:"source"`
	Kind       CredentialKind   `json:"kind"`
	// SHA256 is a certificate credential's fingerprint (hex, lowercase); Subject, Issuer and
	// Serial (hex, as OpenSSL prints it) are there when the certificate was given whole, not by
	// fingerprint alone.
	SHA256  string `json:"sha256,omitempty"`
	Subject string `json:"subject,omitempty"`
	Issuer  string `json:"issuer,omitempty"`
	Serial  string `json:"serial,omitempty"`
	// Secret is set only in the one answer that hands out a secret the server generated.
	Secret string `json:"secret,omitempty"`
}

// ValidAt reports whether the credential authenticates its device at t: it is enabled and t is
// inside its window (from NotBefore on, and before NotAfter).
func (c Credential) ValidAt(t time.Time) bool {
	return c.Status == StatusEnabled && (c.NotBefore == nil || !t.Before(*c.NotBefore)) &&
		(c.NotAfter == nil || t.Before(*c.NotAfter))
}

// ExpiredAt reports whether the credential's window has ended by t.
func (c Credential) ExpiredAt(t time.Time) bool {
	return c.NotAfter != nil && !t.Before(*c.NotAfter)
}

// NewCredential is a credential to add to a device: a secret given by the caller or, with
// Generate, one the server makes and returns once; or a certificate (PEM), whose validity
// narrows the window.
type NewCredential struct {
	Secret      string
	Certificate string
	Generate    bool
	NotBefore   *time.Time
	NotAfter    *time.Time
}

// CredentialUpdate holds the fields of a PATCH of a credential; fields not set stay as they are.
// A window end set to nil removes that limit.
type CredentialUpdate struct {
	Status       *DeviceStatus
	SetNotBefore bool
	NotBefore    *time.Time
	SetNotAfter  bool
	NotAfter     *time.Time
}

// Rotation is what a device gets when it replaces its secret itself: the new credential's ID and
// secret (shown this once), and the credential it authenticated with, which works until
// PreviousNotAfter.
type Rotation struct {
	CredentialID         string    `json:"credential_id"`
	Secret               string    `json:"secret"`
	PreviousCredentialID string    `json:"previous_credential_id"`
	PreviousNotAfter     time.Time `json:"previous_not_after"`
}

// CredentialKind says what a credential is: a secret or a certificate.
type CredentialKind string

// The credential kinds.
const (
	CredentialSecret      CredentialKind = "secret"
	CredentialCertificate CredentialKind = "certificate"
)

// CertificateKeyID is the key ID a certificate credential is stored under, in place of the
// server key of a secret's hash; its hash is then the SHA-256 of the certificate's DER. No server
// key can have this ID, since key IDs hold no ':'.
const CertificateKeyID = "x509:sha256"

// CertificateDetails are what a certificate given whole says about itself, kept beside its
// fingerprint.
type CertificateDetails struct {
	SHA256    [32]byte
	Subject   string
	Issuer    string
	Serial    string // hexadecimal
	NotBefore time.Time
	NotAfter  time.Time
}

// StoredCredential is a credential with what checking a secret against it needs; it never leaves
// the registry.
type StoredCredential struct {
	Credential
	KeyID string // the server key the hash was made with
	Hash  []byte
	// InDevice says the store keeps this credential in the device's own row (the registration's
	// credential, or the one that took its place); the store needs it back to update it.
	InDevice bool
}

// DeviceAuth is what authenticating a device, or honouring its token, needs from the store.
type DeviceAuth struct {
	DeviceTypeID string
	BatchID      string
	Enabled      bool // the device and its batch are enabled
	Credentials  []StoredCredential
}

// Credential returns the device's credential with the given ID.
func (d DeviceAuth) Credential(id string) (StoredCredential, bool) {
	for _, c := range d.Credentials {
		if c.ID == id {
			return c, true
		}
	}
	return StoredCredential{}, false
}

// CredentialChange is what the registry decided to do with one device's credentials, for the
// store to write in the transaction that read them.
type CredentialChange struct {
	Delete []string           // the IDs of credentials to delete
	Update []StoredCredential // credentials whose status and window change (by ID)
	Add    *StoredCredential  // a new credential
	// Certificate holds what the added credential's certificate says, when it is one given whole.
	Certificate *CertificateDetails
}

// CredentialUse says that a device authenticated with one of its credentials.
type CredentialUse struct {
	DeviceID     string
	CredentialID string
	InDevice     bool
}

// BatchRevocation is what revoking the credentials a batch's devices made themselves did: one
// transaction for the lot, which leaves alone every device that nothing else would let in.
type BatchRevocation struct {
	Devices        int64 `json:"devices"`         // the devices of the batch
	Deleted        int64 `json:"deleted"`         // the credentials deleted
	DevicesChanged int64 `json:"devices_changed"` // the devices that lost at least one
	DevicesLeft    int64 `json:"devices_left"`    // the devices left as they were
	// Problems says, for the first MaxProblems devices left, why; Index is the device's position
	// in the batch, in registration order. ProblemCount is DevicesLeft.
	Problems     []Problem `json:"problems,omitempty"`
	ProblemCount int64     `json:"problem_count,omitempty"`
}

// DeviceLeft is a device of a batch that a revocation of its device-made credentials left as it
// was, since none of its other credentials lets it in now.
type DeviceLeft struct {
	Index    int64 // its position in the batch, in registration order
	DeviceID string
	Others   int // how many credentials it holds that it did not make itself (none valid now)
}
