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
}
