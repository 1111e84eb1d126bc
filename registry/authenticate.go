package registry

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"time"
	"unicode/utf8"

	"devreg"
	"devreg/credential"
)

// The device login throttle: after DeviceMaxFailures failures for one device (account ID and
// device ID) within DeviceFailureWindow of the first of them, every attempt is refused until the
// window has passed, even with the right secret. The count lives in the database, so all servers
// share it, and it is kept for IDs that do not exist too, so the answer reveals nothing.
const (
	DeviceMaxFailures   = 10
	DeviceFailureWindow = 15 * time.Minute
)

// ThrottledError says a device must wait before trying again.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return "too many failed attempts for this device; retry after " + e.RetryAfter.String()
}

// AuthenticatedDevice is a device that proved its identity.
type AuthenticatedDevice struct {
	AccountID    string
	DeviceID     string
	DeviceTypeID string
}

// ErrInvalidClient is the one answer to every failed device authentication: unknown device,
// wrong secret, disabled device or batch.
var ErrInvalidClient = devreg.Errorf(devreg.EUNAUTHORIZED, "invalid_client")

// AuthenticateDevice checks a device's credentials. An unknown device costs the same hashing as
// a known one, and every failure is ErrInvalidClient. A success moves the device's hash to the
// current server key.
func (s *Service) AuthenticateDevice(ctx context.Context, accountID, deviceID, secret string) (AuthenticatedDevice, error) {
	now := s.now()
	key := "device:" + throttleKey(accountID, deviceID)
	failures, since, err := s.store.Failures(ctx, key, now, DeviceFailureWindow)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	if failures >= DeviceMaxFailures {
		return AuthenticatedDevice{}, &ThrottledError{RetryAfter: since.Add(DeviceFailureWindow).Sub(now)}
	}
	// IDs that cannot exist are unknown without asking the database; the hashing below costs the
	// same either way.
	d, err := devreg.DeviceSecret{}, notFound("device", deviceID)
	if opaqueID(accountID) && credential.CheckDeviceID(deviceID) == "" {
		d, err = s.store.DeviceSecret(ctx, accountID, deviceID)
	}
	if err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND {
		return AuthenticatedDevice{}, err
	}
	ok := s.keys.Verify(d.KeyID, d.Hash, accountID, deviceID, secret) && d.Enabled && err == nil
	if !ok {
		if err := s.store.AddFailure(ctx, key, now, DeviceFailureWindow); err != nil {
			return AuthenticatedDevice{}, err
		}
		return AuthenticatedDevice{}, ErrInvalidClient
	}
	if current := s.keys.Current(); d.KeyID != current.ID {
		if err := s.store.SetDeviceHash(ctx, accountID, deviceID, d.KeyID, current.ID, credential.Hash(current, accountID, deviceID, secret)); err != nil {
			return AuthenticatedDevice{}, err
		}
	}
	return AuthenticatedDevice{AccountID: accountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID}, nil
}

// DeviceActive reports whether a device exists and it and its batch are enabled: whether tokens
// issued to it may still be honoured.
func (s *Service) DeviceActive(ctx context.Context, accountID, deviceID string) (bool, error) {
	d, err := s.store.DeviceSecret(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return false, nil
	}
	return d.Enabled, err
}

// MaxReportedStatus is the largest status a device may report at check-in.
const MaxReportedStatus = 16 << 10

// CheckIn records a device's check-in: now as its last_seen_at, and the firmware version and
// status it reported (nil leaves the last ones). A disabled device, or one of a disabled batch,
// is refused at once, whatever its token says.
func (s *Service) CheckIn(ctx context.Context, accountID, deviceID string, firmware *string, status json.RawMessage) error {
	if firmware != nil {
		if err := checkLength("firmware_version", *firmware, 1, 128); err != nil {
			return err
		}
	}
	if len(status) > MaxReportedStatus {
		return devreg.Errorf(devreg.ETOOLARGE, "status is larger than %d bytes", MaxReportedStatus)
	}
	var reported []byte
	if len(status) > 0 && string(status) != "null" {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(status, &obj); err != nil || !utf8.Valid(status) {
			return devreg.Errorf(devreg.EINVALID, "status must be a JSON object")
		}
		reported = status
	}
	err := s.store.CheckIn(ctx, accountID, deviceID, s.now(), firmware, reported)
	if code := devreg.ErrorCode(err); code == devreg.ENOTFOUND || code == devreg.EUNAUTHORIZED {
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the token's device is unknown or disabled")
	}
	return err
}

// throttleKey turns the parts that identify a throttled client, which anyone may send with any
// bytes, into a short key the database takes.
func throttleKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		binary.Write(h, binary.BigEndian, uint32(len(p)))
		h.Write([]byte(p))
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}
