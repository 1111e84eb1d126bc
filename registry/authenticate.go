package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"hash/maphash"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"devreg"
	"devreg/credential"
	"devreg/devtoken"
	"devreg/internal/metrics"
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
	// X5tS256 is the RFC 8705 thumbprint of the certificate the device authenticated with
	// (devcert.X5tS256), which its token is bound to; "" for a device that presented a secret.
	X5tS256 string
	// Token holds the claims of the device token the device presented (VerifyDeviceToken); nil
	// for a device that presented a secret.
	Token *devtoken.Claims
	// batchID is the device's batch, as read when its token was verified: its check-in counts there.
	batchID string
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
// A success takes one read: the device, its batch, its credentials and its throttle state
// together. A failure's answer is decided by the count its own failure makes, in one atomic
// statement, so parallel guesses get at most DeviceMaxFailures answers that tell anything. A
// right secret is let in only if fewer failures were counted when it was read; for that to hold
// for a right secret among parallel wrong ones, the attempts for one device take turns in this
// process from that read until a failure is counted (see loginTurns). A device that logs in
// correctly with a credential used before causes no write to the database.
func (s *Service) AuthenticateDevice(ctx context.Context, accountID, deviceID, secret string) (AuthenticatedDevice, error) {
	now := s.now()
	key := "device:" + throttleKey(accountID, deviceID)
	d, cred, err := s.checkDeviceSecret(ctx, accountID, deviceID, secret, key, now)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	if err := s.credentialUsed(ctx, accountID, deviceID, cred, secret, now); err != nil {
		return AuthenticatedDevice{}, err
	}
	return AuthenticatedDevice{AccountID: accountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID, CredentialID: cred.ID}, nil
}

// checkDeviceSecret decides a device's login, in its turn: the device and the credential that
// secret matches, or why not. A device the account does not have may enrol through a group
// (enroll).
func (s *Service) checkDeviceSecret(ctx context.Context, accountID, deviceID, secret, key string, now time.Time) (devreg.DeviceAuth, devreg.StoredCredential, error) {
	return s.loginAttempt(ctx, accountID, deviceID, key, now, func(d devreg.DeviceAuth) (devreg.DeviceAuth, devreg.StoredCredential, error, error) {
		if mayEnroll(d, accountID, deviceID) {
			return s.enroll(ctx, accountID, deviceID, secret, now)
		}
		cred, ok := s.matchSecret(d, accountID, deviceID, secret, now)
		if !ok || !d.Enabled {
			return d, cred, ErrInvalidClient, nil
		}
		return d, cred, nil, nil
	})
}

// loginAttempt runs one login of device deviceID in its turn, under the device's throttle (key):
// while DeviceMaxFailures failures fill the window nothing is checked at all; otherwise decide
// says, for the device as read, the device and the credential that let it in, or the refusal,
// which is counted as a failure before it is answered.
func (s *Service) loginAttempt(ctx context.Context, accountID, deviceID, key string, now time.Time,
	decide func(devreg.DeviceAuth) (devreg.DeviceAuth, devreg.StoredCredential, error, error)) (devreg.DeviceAuth, devreg.StoredCredential, error) {
	var none devreg.StoredCredential
	release, err := s.turns.take(ctx, key)
	if err != nil {
		return devreg.DeviceAuth{}, none, err
	}
	defer release()
	throttled := func(since time.Time) error {
		s.Metrics.Throttled(metrics.LoginDevice)
		return &devreg.Error{Code: devreg.ERATELIMITED, Message: "too many failed attempts for this device; retry later",
			RetryAfter: min(since.Add(DeviceFailureWindow).Sub(now), DeviceFailureWindow)}
	}
	d, failures, since, err := s.deviceLogin(ctx, accountID, deviceID, key, now)
	if err != nil {
		return devreg.DeviceAuth{}, none, err
	}
	if failures >= DeviceMaxFailures {
		return devreg.DeviceAuth{}, none, throttled(since)
	}
	d, cred, refusal, err := decide(d)
	if err != nil {
		return devreg.DeviceAuth{}, none, err
	}
	if refusal != nil {
		// Counted even if the client hangs up now: a wrong guess is answered only after it is
		// counted, and one that could end its request first would never be.
		failures, since, err := s.store.ReserveAttempt(context.WithoutCancel(ctx), key, now, DeviceFailureWindow)
		if err != nil {
			return devreg.DeviceAuth{}, none, err
		}
		if failures > DeviceMaxFailures {
			return devreg.DeviceAuth{}, none, throttled(since)
		}
		if failures == DeviceMaxFailures && d.DeviceTypeID != "" {
			// This failure begins the lock-out: one event per window, and only for a device that
			// exists (a stranger's guesses at made-up IDs make none).
			s.lockedOut(context.WithoutCancel(ctx), accountID, deviceID, d.DeviceTypeID, failures, since.Add(DeviceFailureWindow), now)
		}
		return devreg.DeviceAuth{}, none, refusal
	}
	return d, cred, nil
}

// lockedOut appends the event of a device's lock-out beginning; a failure to is logged, and the
// login is refused all the same.
func (s *Service) lockedOut(ctx context.Context, accountID, deviceID, typeID string, failures int, until, now time.Time) {
	data, _ := json.Marshal(map[string]any{"device_id": deviceID, "device_type_id": typeID, "failures": failures,
		"until": until.UTC().Format(time.RFC3339)})
	err := s.store.AppendEvents(ctx, accountID, []devreg.Event{{Type: devreg.EventLockedOut, Time: now, DeviceTypeID: typeID, Data: data}})
	if err != nil {
		s.logError("lock-out event", err)
	}
}

// deviceLogin returns what a device's login needs: the device, as deviceAuth does, and the
// failures counted for key in the current window, and when it started.
func (s *Service) deviceLogin(ctx context.Context, accountID, deviceID, key string, now time.Time) (devreg.DeviceAuth, int, time.Time, error) {
	if opaqueID(accountID) && credential.CheckDeviceID(deviceID) == "" {
		return s.store.DeviceLogin(ctx, accountID, deviceID, key, now, DeviceFailureWindow)
	}
	// IDs that cannot exist are not asked for (the database may not take every byte).
	failures, since, err := s.store.Failures(ctx, key, now, DeviceFailureWindow)
	return devreg.DeviceAuth{}, failures, since, err
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

// tokenHonoured reports whether token claims c, issued to a device of d, may still be honoured at
// now: the device and its batch are enabled, and the credential the token was issued for still
// exists and is valid. Tokens issued before devices had several credentials name the batch of the
// registration instead, whose credential is the registered one in the device's row. A token
// issued for a certificate that chained to the device type's CA names no credential but the
// certificate (cnf); it is honoured as that login would be now: while the device holds no
// certificate credential, or holds a valid one for that very certificate.
func tokenHonoured(d devreg.DeviceAuth, c devtoken.Claims, now time.Time) bool {
	credID := c.Cred
	if !d.Enabled {
		return false
	}
	if credID == "" {
		return c.Cnf != nil && certificateTokenHonoured(d, c.Cnf.X5tS256, now)
	}
	for _, cr := range d.Credentials {
		if cr.ID == credID || credID == d.BatchID && cr.InDevice && cr.Source == devreg.CredentialFromRegistration {
			return cr.ValidAt(now)
		}
	}
	return false
}

// certificateTokenHonoured is tokenHonoured for a token that names no credential, only the
// thumbprint x5t of the certificate it was issued for.
func certificateTokenHonoured(d devreg.DeviceAuth, x5t string, now time.Time) bool {
	fp, err := base64.RawURLEncoding.DecodeString(x5t)
	if err != nil || len(fp) != sha256.Size {
		return false
	}
	pinned := false
	for _, c := range d.Credentials {
		if c.KeyID != devreg.CertificateKeyID {
			continue
		}
		if bytes.Equal(c.Hash, fp) {
			return c.ValidAt(now)
		}
		pinned = true
	}
	return !pinned
}

// ErrInvalidToken refuses what is not a device token of this service: a signature that no
// signing key makes, another issuer, an expired token, or no token at all.
var ErrInvalidToken = devreg.Errorf(devreg.EUNAUTHORIZED, "send a valid, unexpired device token as 'Authorization: Bearer <token>'")

// ErrTokenRevoked refuses a valid token that is no longer honoured: its device is unknown or
// disabled, or so is its batch, or the credential it was issued for is disabled, deleted or
// expired, or was replaced by a new registration.
var ErrTokenRevoked = devreg.Errorf(devreg.EUNAUTHORIZED, "the device is unknown or disabled, or the credential the token was issued for is no longer valid")

// VerifyDeviceToken is the one check of a device token, wherever a device presents one: its
// signature by one of TokenKeys, its issuer (TokenIssuer) and expiry, and, in one read, that
// its device and batch are enabled and the credential it was issued for is still the device's
// and valid. It returns the device, with the token's claims in Token; a token that is not one
// is ErrInvalidToken, one no longer honoured ErrTokenRevoked.
func (s *Service) VerifyDeviceToken(ctx context.Context, token string) (AuthenticatedDevice, error) {
	c, err := s.tokenClaims(token)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	d, err := s.tokenDevice(ctx, c)
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	return AuthenticatedDevice{AccountID: c.AccountID, DeviceID: c.Subject, DeviceTypeID: d.DeviceTypeID, CredentialID: c.Cred,
		Token: &c, batchID: d.BatchID}, nil
}

// tokenClaims checks a device token's signature, issuer and expiry, and returns its claims.
func (s *Service) tokenClaims(token string) (devtoken.Claims, error) {
	if s.TokenKeys == nil || token == "" {
		return devtoken.Claims{}, ErrInvalidToken
	}
	c, err := s.TokenKeys.Verify(token, s.TokenIssuer, s.Now())
	if err != nil {
		return devtoken.Claims{}, ErrInvalidToken
	}
	return c, nil
}

// tokenDevice reads the device of verified claims c and checks that the token is still honoured.
func (s *Service) tokenDevice(ctx context.Context, c devtoken.Claims) (devreg.DeviceAuth, error) {
	d, err := s.deviceAuth(ctx, c.AccountID, c.Subject)
	if err != nil {
		return devreg.DeviceAuth{}, err
	}
	if !tokenHonoured(d, c, s.now()) {
		return devreg.DeviceAuth{}, ErrTokenRevoked
	}
	return d, nil
}

// DeviceActive reports, for token introspection by a caller with scope read or higher, whether
// the token of dev (a device VerifyDeviceToken returned: still honoured) is active for the
// caller: a device of another account, or of a type the caller's key does not reach, is not
// active, as if it did not exist.
func (s *Service) DeviceActive(ctx context.Context, dev AuthenticatedDevice) (bool, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return false, err
	}
	return dev.Token != nil && dev.AccountID == c.AccountID && c.Reaches(dev.DeviceTypeID), nil
}

// CanIntrospect refuses a caller that may not introspect device tokens: one without a key of
// scope read or higher (a broker key answers only at the broker endpoints).
func (s *Service) CanIntrospect(ctx context.Context) error {
	_, err := authorize(ctx, devreg.ScopeRead)
	return err
}

// MaxReportedStatus is the largest status a device may report at check-in.
const MaxReportedStatus = 16 << 10

// CheckIn records the check-in of dev, a device that presented its token (VerifyDeviceToken):
// now as its last_seen_at, and the firmware version and status it reported (nil leaves the last
// ones). A device whose batch was disabled, or that was deleted, since its token was verified
// is refused (ErrTokenRevoked), as is a device that did not present a token.
func (s *Service) CheckIn(ctx context.Context, dev AuthenticatedDevice, firmware *string, status json.RawMessage) error {
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
	if dev.Token == nil {
		return ErrTokenRevoked
	}
	err := s.store.CheckIn(ctx, dev.AccountID, dev.DeviceID, dev.batchID, s.now(), firmware, reported)
	if code := devreg.ErrorCode(err); code == devreg.ENOTFOUND || code == devreg.EUNAUTHORIZED {
		return ErrTokenRevoked
	}
	return err
}

// throttleKey turns the parts that identify a throttled client, which anyone may send with any
// bytes, into a short key the database takes.
func throttleKey(parts ...string) string {
	h := sha256.New()
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		io.WriteString(h, p)
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// loginTurns gives the attempts to log in as one device (one throttle key) their turns in this
// process, one at a time from reading the throttle state to counting a failure. Without turns, a
// right secret could read the count before the failures of wrong ones sent with it are counted
// (they are checked first, then counted, and counting waits for the database's writer) and get in
// however many of them were checked. With turns, only the attempts in flight on other servers can
// be missed, at most one per server. Attempts for different devices do not wait for each other.
// The zero value is ready to use.
type loginTurns struct {
	seed   maphash.Seed
	once   sync.Once
	shards [64]turnShard
}

// turnShard holds the turns of the keys that hash to it.
type turnShard struct {
	mu    sync.Mutex
	turns map[string]*turn
}

// turn is one key's: ch holds a value while an attempt has the turn.
type turn struct {
	ch    chan struct{}
	users int // attempts that have it or wait for it, under the shard's mu
}

// take waits for key's turn (or for ctx to end) and returns what gives it up.
func (t *loginTurns) take(ctx context.Context, key string) (release func(), err error) {
	t.once.Do(func() { t.seed = maphash.MakeSeed() })
	sh := &t.shards[maphash.String(t.seed, key)%uint64(len(t.shards))]
	sh.mu.Lock()
	tu := sh.turns[key]
	if tu == nil {
		if sh.turns == nil {
			sh.turns = map[string]*turn{}
		}
		tu = &turn{ch: make(chan struct{}, 1)}
		sh.turns[key] = tu
	}
	tu.users++
	sh.mu.Unlock()
	leave := func() {
		sh.mu.Lock()
		if tu.users--; tu.users == 0 {
			delete(sh.turns, key)
		}
		sh.mu.Unlock()
	}
	select {
	case tu.ch <- struct{}{}:
		return func() { <-tu.ch; leave() }, nil
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
}
