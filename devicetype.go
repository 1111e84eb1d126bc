package devreg

import "time"

// DeviceType groups devices of one model; its secret policy applies to their registration.
type DeviceType struct {
	ID              string    `json:"id"`
	AccountID       string    `json:"-"`
	Name            string    `json:"name"`
	Description     string    `json:"description"`
	MinSecretLength int       `json:"min_secret_length"`
	DeviceCount     int64     `json:"device_count"`
	CreatedAt       time.Time `json:"created_at"`
	// MQTTPublish and MQTTSubscribe are the MQTT topic filters its devices may publish to and
	// subscribe to, with {device_id}, {account_id} and {device_type_id} replaced per device.
	MQTTPublish   []string `json:"mqtt_publish"`
	MQTTSubscribe []string `json:"mqtt_subscribe"`
	// RotationGraceSeconds is how long the credential a device rotates away from keeps working;
	// nil when creating a type takes DefaultRotationGraceSeconds. The store always sets it.
	RotationGraceSeconds *int `json:"rotation_grace_seconds"`
	// MaxRotationsPerHour is how many times a device of this type may rotate its secret itself in
	// an hour; nil when creating a type takes DefaultMaxRotationsPerHour. The store always sets it.
	MaxRotationsPerHour *int `json:"max_rotations_per_hour"`
	// CertificateIDField is where its devices' certificates carry the device ID: "subject_cn"
	// (the default, when empty), "san_uri" or "san_dns" (see devcert.IDField).
	CertificateIDField string `json:"certificate_id_field"`
	// AutoRegister lets a device whose certificate chains to one of the type's trusted CAs
	// register itself at its first connection, at most AutoRegisterLimit devices an hour.
	AutoRegister bool `json:"auto_register"`
	// AutoRegisterLimit is how many devices may register themselves in an hour; nil when
	// creating a type takes DefaultAutoRegisterLimit. The store always sets it.
	AutoRegisterLimit *int `json:"auto_register_limit"`
}

// Limits of a device type's certificate settings.
const (
	DefaultCertificateIDField = "subject_cn"
	DefaultAutoRegisterLimit  = 100
	MaxAutoRegisterLimit      = 100000
	MaxTrustedCAs             = 10 // trusted CA certificates per device type
)

// AutoRegisterMax is how many devices of this type may register themselves in an hour.
func (t DeviceType) AutoRegisterMax() int {
	if t.AutoRegisterLimit == nil {
		return DefaultAutoRegisterLimit
	}
	return *t.AutoRegisterLimit
}

// IDField is where the type's devices' certificates carry the device ID, the default if unset.
func (t DeviceType) IDField() string {
	if t.CertificateIDField == "" {
		return DefaultCertificateIDField
	}
	return t.CertificateIDField
}

// TrustedCA is a CA certificate a device type trusts: devices whose certificates chain to it may
// authenticate with them (and, with AutoRegister, register themselves).
type TrustedCA struct {
	ID           string    `json:"id"`
	DeviceTypeID string    `json:"device_type_id"`
	SHA256       string    `json:"sha256"`  // of the DER certificate, lowercase hex
	Subject      string    `json:"subject"` // the subject's distinguished name, RFC 2253 style
	NotAfter     time.Time `json:"not_after"`
	CreatedAt    time.Time `json:"created_at"`
	DER          []byte    `json:"-"` // the certificate itself
}

// RotationLimit is how many times a device of this type may rotate its secret itself in an hour.
func (t DeviceType) RotationLimit() int {
	if t.MaxRotationsPerHour == nil {
		return DefaultMaxRotationsPerHour
	}
	return *t.MaxRotationsPerHour
}

// RotationGrace is how long the credential a device of this type rotates away from keeps working.
func (t DeviceType) RotationGrace() time.Duration {
	if t.RotationGraceSeconds == nil {
		return DefaultRotationGraceSeconds * time.Second
	}
	return time.Duration(*t.RotationGraceSeconds) * time.Second
}

// DeviceTypeUpdate holds the fields of a PATCH; nil fields stay as they are.
type DeviceTypeUpdate struct {
	Name            *string  `json:"name"`
	Description     *string  `json:"description"`
	MinSecretLength *int     `json:"min_secret_length"`
	MQTTPublish     []string `json:"mqtt_publish"`
	MQTTSubscribe   []string `json:"mqtt_subscribe"`
	// RotationGraceSeconds, when set, is the new grace of device-initiated rotation.
	RotationGraceSeconds *int `json:"rotation_grace_seconds"`
	// MaxRotationsPerHour, when set, is the new limit of device-initiated rotations.
	MaxRotationsPerHour *int `json:"max_rotations_per_hour"`
	// CertificateIDField, AutoRegister and AutoRegisterLimit, when set, are new certificate settings.
	CertificateIDField *string `json:"certificate_id_field"`
	AutoRegister       *bool   `json:"auto_register"`
	AutoRegisterLimit  *int    `json:"auto_register_limit"`
}
