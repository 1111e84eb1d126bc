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
}

// DeviceTypeUpdate holds the fields of a PATCH; nil fields stay as they are.
type DeviceTypeUpdate struct {
	Name            *string `json:"name"`
	Description     *string `json:"description"`
	MinSecretLength *int    `json:"min_secret_length"`
}
