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
	// CredentialID is the credential the device authenticated with. Tokens carry it, so that they
	// stop working with it (when it is disabled, deleted or expired, or the device is registered
	// again).
	CredentialID string
}

// ErrInvalidClient is the one answer to every failed device authentication: unknown device,
// wrong secret, disabled device or batch.
var ErrInvalidClient = devreg.Errorf(devreg.EUNAUTHORIZED, "invalid_client")

// AuthenticateDevice checks a device's secret against its credentials: any enabled credential
// inside its window lets it in. An unknown device costs the same hashing as a known one with one
// credential, and every failure is ErrInvalidClient. Once the device has used up its attempts the
// answer is ERATELIMITED with the time left in the window as RetryAfter. A success records the
// credential's use and moves its hash to the current server key.
//
// A failure's answer is decided by the count its own failure makes, in one atomic statement, so
// parallel guesses get at most DeviceMaxFailures answers that tell anything; a right secret is
// let in only if the window is still open once it has been checked. Checking first costs an HMAC
// per credential (cheap, unlike a console password), all read at once, and it leaves a device
// that logs in correctly with a credential used before without a write to the database.
func (s *Service) AuthenticateDevice(ctx context.Context, accountID, deviceID, secret string) (AuthenticatedDevice, error) {
	dev, _, err := s.authenticateDevice(ctx, accountID, deviceID, secret)
	return dev, err
}

// authenticateDevice is AuthenticateDevice that also returns the credential that matched.
func (s *Service) authenticateDevice(ctx context.Context, accountID, deviceID, secret string) (AuthenticatedDevice, devreg.StoredCredential, error) {
	now := s.now()
	key := "device:" + throttleKey(accountID, deviceID)
	throttled := func(since time.Time) error {
		return &devreg.Error{Code: devreg.ERATELIMITED, Message: "too many failed attempts for this device; retry later",
			RetryAfter: min(since.Add(DeviceFailureWindow).Sub(now), DeviceFailureWindow)}
	}
	var none devreg.StoredCredential
	// While the window is full, nothing is checked at all.
	failures, since, err := s.store.Failures(ctx, key, now, DeviceFailureWindow)
	if err != nil {
		return AuthenticatedDevice{}, none, err
	}
	if failures >= DeviceMaxFailures {
		return AuthenticatedDevice{}, none, throttled(since)
	}
	d, err := s.deviceAuth(ctx, accountID, deviceID)
	if err != nil {
		return AuthenticatedDevice{}, none, err
	}
	cred, ok := s.matchSecret(d, accountID, deviceID, secret, now)
	if !ok || !d.Enabled {
		failures, since, err := s.store.ReserveAttempt(ctx, key, now, DeviceFailureWindow)
		if err != nil {
			return AuthenticatedDevice{}, none, err
		}
		if failures > DeviceMaxFailures {
			return AuthenticatedDevice{}, none, throttled(since)
		}
		return AuthenticatedDevice{}, none, ErrInvalidClient
	}
	// Failures counted while this secret was checked come first: otherwise one right guess among
	// many parallel ones would get in however many failed before it.
	if failures, since, err = s.store.Failures(ctx, key, now, DeviceFailureWindow); err != nil {
		return AuthenticatedDevice{}, none, err
	}
	if failures >= DeviceMaxFailures {
		// Counted as a failure is, so that the refusal takes as long as a wrong guess's and does
		// not tell that this one was right.
		if _, _, err := s.store.ReserveAttempt(ctx, key, now, DeviceFailureWindow); err != nil {
			return AuthenticatedDevice{}, none, err
		}
		return AuthenticatedDevice{}, none, throttled(since)
	}
	if err := s.credentialUsed(ctx, accountID, deviceID, cred, secret, now); err != nil {
		return AuthenticatedDevice{}, none, err
	}
	return AuthenticatedDevice{AccountID: accountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID, CredentialID: cred.ID}, cred, nil
}

// matchSecret returns the credential of d that secret matches and that is valid at now. Every
// credential's hash is checked, valid or not, so the time taken tells nothing about them; a
// device without credentials (unknown) costs one check.
func (s *Service) matchSecret(d devreg.DeviceAuth, accountID, deviceID, secret string, now time.Time) (devreg.StoredCredential, bool) {
	if len(d.Credentials) == 0 {
		s.keys.Verify("", nil, accountID, deviceID, secret)
		return devreg.StoredCredential{}, false
	}
	var match devreg.StoredCredential
	found := false
	for _, c := range d.Credentials {
		if s.keys.Verify(c.KeyID, c.Hash, accountID, deviceID, secret) && c.ValidAt(now) && !found {
			match, found = c, true
		}
	}
	return match, found
}

// credentialUsed records that a device authenticated with credential c at now: at once, together
// with moving its hash to the current key, when that is due or the credential was never used
// before (rotation tells a never-used credential from a used one); otherwise with the next
// batch of such writes.
func (s *Service) credentialUsed(ctx context.Context, accountID, deviceID string, c devreg.StoredCredential, secret string, now time.Time) error {
	current := s.keys.Current()
	if c.KeyID != current.ID {
		return s.store.CredentialUsed(ctx, accountID, deviceID, c, now, current.ID, credential.Hash(current, accountID, deviceID, secret))
	}
	if c.LastUsedAt == nil {
		return s.store.CredentialUsed(ctx, accountID, deviceID, c, now, "", nil)
	}
	s.markUsed(accountID, devreg.CredentialUse{DeviceID: deviceID, CredentialID: c.ID, InDevice: c.InDevice}, now)
	return nil
}

// deviceAuth returns what authenticating a device needs. A device that is unknown, or whose IDs
// cannot exist (which is decided without asking the database, which may not take every byte),
// has no credentials, which no secret matches.
func (s *Service) deviceAuth(ctx context.Context, accountID, deviceID string) (devreg.DeviceAuth, error) {
	if !opaqueID(accountID) || credential.CheckDeviceID(deviceID) != "" {
		return devreg.DeviceAuth{}, nil
	}
	d, err := s.store.DeviceAuth(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.DeviceAuth{}, nil
	}
	return d, err
}

// tokenHonoured reports whether a token issued to a device of d for its credential credID may
// still be honoured at now: the device and its batch are enabled, and the credential still exists
// and is valid. Tokens issued before devices had several credentials name the batch of the
// registration instead, whose credential is the registered one in the device's row.
func tokenHonoured(d devreg.DeviceAuth, credID string, now time.Time) bool {
	if !d.Enabled || credID == "" {
		return false
	}
	for _, c := range d.Credentials {
		if c.ID == credID || credID == d.BatchID && c.InDevice && c.Source == devreg.CredentialFromRegistration {
			return c.ValidAt(now)
		}
	}
	return false
}

// DeviceActive reports, for token introspection by a caller with scope read or higher, whether
// a token issued to a device of the caller's account for its credential credID may still be
// honoured: whether the device exists, the credential is still one of its own and valid, and
// the device and its batch are enabled. A device of another account is not active, as if it did
// not exist.
func (s *Service) DeviceActive(ctx context.Context, accountID, deviceID, credID string) (bool, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return false, err
	}
	if accountID != c.AccountID {
		return false, nil
	}
	d, err := s.deviceAuth(ctx, accountID, deviceID)
	return err == nil && c.Reaches(d.DeviceTypeID) && tokenHonoured(d, credID, s.now()), err
}

// CanIntrospect refuses a caller that may not introspect device tokens: one without a key of
// scope read or higher (a broker key answers only at the broker endpoints).
func (s *Service) CanIntrospect(ctx context.Context) error {
	_, err := authorize(ctx, devreg.ScopeRead)
	return err
}

// MaxReportedStatus is the largest status a device may report at check-in.
const MaxReportedStatus = 16 << 10

// CheckIn records a device's check-in with a token issued for its credential credID: now as its
// last_seen_at, and the firmware version and status it reported (nil leaves the last ones). A
// disabled device, one of a disabled batch, and one whose credential is disabled, deleted or
// expired (or that was registered again) since the token was issued are refused at once,
// whatever the token says.
func (s *Service) CheckIn(ctx context.Context, accountID, deviceID, credID string, firmware *string, status json.RawMessage) error {
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
	refused := devreg.Errorf(devreg.EUNAUTHORIZED, "the token's device is unknown or disabled, or its credential is no longer valid; get a new token")
	now := s.now()
	d, err := s.deviceAuth(ctx, accountID, deviceID)
	if err != nil {
		return err
	}
	if !tokenHonoured(d, credID, now) {
		return refused
	}
	err = s.store.CheckIn(ctx, accountID, deviceID, d.BatchID, now, firmware, reported)
	if code := devreg.ErrorCode(err); code == devreg.ENOTFOUND || code == devreg.EUNAUTHORIZED {
		return refused
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
