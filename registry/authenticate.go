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

// AuthenticatedDevice is a device that proved its identity.
type AuthenticatedDevice struct {
	AccountID    string
	DeviceID     string
	DeviceTypeID string
	// BatchID is the batch of the registration the secret belongs to. Registering the device
	// again (after a delete, or with on_conflict=replace) puts it in a new batch, so tokens tied
	// to this one end with the registration.
	BatchID string
}

// ErrInvalidClient is the one answer to every failed device authentication: unknown device,
// wrong secret, disabled device or batch.
var ErrInvalidClient = devreg.Errorf(devreg.EUNAUTHORIZED, "invalid_client")

// AuthenticateDevice checks a device's credentials. An unknown device costs the same hashing as
// a known one, and every failure is ErrInvalidClient. Once the device has used up its attempts
// the answer is ERATELIMITED with the time left in the window as RetryAfter. A success moves the
// device's hash to the current server key.
//
// A failure's answer is decided by the count its own failure makes, in one atomic statement, so
// parallel guesses get at most DeviceMaxFailures answers that tell anything; a right secret is
// let in only if the window is still open once it has been checked. Checking first costs an HMAC
// (cheap, unlike a console password), and it leaves a device that logs in correctly without a
// write to the database.
func (s *Service) AuthenticateDevice(ctx context.Context, accountID, deviceID, secret string) (AuthenticatedDevice, error) {
	now := s.now()
	key := "device:" + throttleKey(accountID, deviceID)
	throttled := func(since time.Time) error {
		return &devreg.Error{Code: devreg.ERATELIMITED, Message: "too many failed attempts for this device; retry later",
			RetryAfter: min(since.Add(DeviceFailureWindow).Sub(now), DeviceFailureWindow)}
	}
	// While the window is full, nothing is checked at all.
	failures, since, err := s.store.Failures(ctx, key, now, DeviceFailureWindow)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	if failures >= DeviceMaxFailures {
		return AuthenticatedDevice{}, throttled(since)
	}
	d, batchID, err := s.deviceSecret(ctx, accountID, deviceID)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	if !s.keys.Verify(d.KeyID, d.Hash, accountID, deviceID, secret) || !d.Enabled || batchID == "" {
		failures, since, err := s.store.ReserveAttempt(ctx, key, now, DeviceFailureWindow)
		if err != nil {
			return AuthenticatedDevice{}, err
		}
		if failures > DeviceMaxFailures {
			return AuthenticatedDevice{}, throttled(since)
		}
		return AuthenticatedDevice{}, ErrInvalidClient
	}
	// Failures counted while this secret was checked come first: otherwise one right guess among
	// many parallel ones would get in however many failed before it.
	if failures, since, err = s.store.Failures(ctx, key, now, DeviceFailureWindow); err != nil {
		return AuthenticatedDevice{}, err
	}
	if failures >= DeviceMaxFailures {
		// Counted as a failure is, so that the refusal takes as long as a wrong guess's and does
		// not tell that this one was right.
		if _, _, err := s.store.ReserveAttempt(ctx, key, now, DeviceFailureWindow); err != nil {
			return AuthenticatedDevice{}, err
		}
		return AuthenticatedDevice{}, throttled(since)
	}
	if current := s.keys.Current(); d.KeyID != current.ID {
		if err := s.store.SetDeviceHash(ctx, accountID, deviceID, d.KeyID, current.ID, credential.Hash(current, accountID, deviceID, secret)); err != nil {
			return AuthenticatedDevice{}, err
		}
	}
	return AuthenticatedDevice{AccountID: accountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID, BatchID: batchID}, nil
}

// deviceSecret returns what checking a device's secret needs, and its batch. A device that is
// unknown, or whose IDs cannot exist (which is decided without asking the database, which may not
// take every byte), has an empty hash that no secret matches, so the hashing costs the same.
func (s *Service) deviceSecret(ctx context.Context, accountID, deviceID string) (devreg.DeviceSecret, string, error) {
	if !opaqueID(accountID) || credential.CheckDeviceID(deviceID) != "" {
		return devreg.DeviceSecret{}, "", nil
	}
	d, batchID, err := s.store.DeviceSecret(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.DeviceSecret{}, "", nil
	}
	return d, batchID, err
}

// DeviceActive reports, for token introspection by a caller with scope read or higher, whether
// a token issued to a device of the caller's account for the registration in batch batchID may
// still be honoured: whether the device exists, is still that registration, and it and its batch
// are enabled. A device of another account is not active, as if it did not exist.
func (s *Service) DeviceActive(ctx context.Context, accountID, deviceID, batchID string) (bool, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return false, err
	}
	if accountID != c.AccountID {
		return false, nil
	}
	return s.deviceActive(ctx, accountID, deviceID, batchID)
}

// CanIntrospect refuses a caller that may not introspect device tokens: one without a key of
// scope read or higher (a broker key answers only at the broker endpoints).
func (s *Service) CanIntrospect(ctx context.Context) error {
	_, err := authorize(ctx, devreg.ScopeRead)
	return err
}

func (s *Service) deviceActive(ctx context.Context, accountID, deviceID, batchID string) (bool, error) {
	if batchID == "" || !opaqueID(accountID) || credential.CheckDeviceID(deviceID) != "" {
		return false, nil
	}
	d, current, err := s.store.DeviceSecret(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return false, nil
	}
	return d.Enabled && current == batchID, err
}

// MaxReportedStatus is the largest status a device may report at check-in.
const MaxReportedStatus = 16 << 10

// CheckIn records a device's check-in with a token issued for its registration in batch batchID:
// now as its last_seen_at, and the firmware version and status it reported (nil leaves the last
// ones). A disabled device, one of a disabled batch, and one registered again since the token was
// issued are refused at once, whatever the token says.
func (s *Service) CheckIn(ctx context.Context, accountID, deviceID, batchID string, firmware *string, status json.RawMessage) error {
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
	if batchID == "" {
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the token names no registration of the device; get a new token")
	}
	err := s.store.CheckIn(ctx, accountID, deviceID, batchID, s.now(), firmware, reported)
	if code := devreg.ErrorCode(err); code == devreg.ENOTFOUND || code == devreg.EUNAUTHORIZED {
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the token's device is unknown, disabled or registered again since")
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
