// Package registry is devreg's service: every use case (define device types, register a batch,
// list and manage devices, lots and keys) over a store. Which account a request may touch and what
// its key's scope allows is decided here, once, for every adapter.
package registry

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"devreg"
	"devreg/credential"
	"devreg/devtoken"
	"devreg/internal/metrics"
	"devreg/webhook"
)

// Store is what the registry needs from a database.
type Store interface {
	Events(ctx context.Context, accountID string, after int64, limit int) ([]devreg.Event, error)
	CreateWebhook(ctx context.Context, accountID string, w *devreg.Webhook) error
	Webhooks(ctx context.Context, accountID string) ([]devreg.Webhook, error)
	Webhook(ctx context.Context, accountID, id string) (devreg.Webhook, error)
	UpdateWebhook(ctx context.Context, accountID, id string, u devreg.WebhookUpdate) (devreg.Webhook, error)
	DeleteWebhook(ctx context.Context, accountID, id string) error
	WebhookDeliveries(ctx context.Context, accountID, id string) ([]devreg.WebhookDelivery, error)
	ClaimWebhooks(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int, except []string) ([]devreg.WebhookLease, error)
	RecordDeliveries(ctx context.Context, l devreg.WebhookLease, ds []devreg.WebhookDelivery, passed int64, renew time.Time) (bool, error)
	ReleaseWebhook(ctx context.Context, l devreg.WebhookLease, now time.Time) error
	HoldsLease(ctx context.Context, l devreg.WebhookLease) (bool, error)
	DeleteEventsBefore(ctx context.Context, before time.Time, limit int) (int64, error)
	AddWebhookDelivery(ctx context.Context, accountID, id string, d devreg.WebhookDelivery) error
	AppendEvents(ctx context.Context, accountID string, evs []devreg.Event) error
	ClaimCursors(ctx context.Context, sink, owner string, now time.Time, lease time.Duration, limit int) ([]devreg.CursorLease, error)
	AdvanceCursor(ctx context.Context, l devreg.CursorLease, seq int64, renew time.Time) (bool, error)
	CreateAccount(ctx context.Context, a devreg.Account, u devreg.User, k devreg.APIKey) error
	UserByEmail(ctx context.Context, email string) (devreg.User, error)
	CreateSession(ctx context.Context, tokenHash []byte, userID, passwordHash string, created, expires time.Time) error
	SessionUser(ctx context.Context, tokenHash []byte, now time.Time) (devreg.User, error)
	DeleteSession(ctx context.Context, tokenHash []byte, now time.Time) error
	Failures(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error)
	ReserveAttempt(ctx context.Context, key string, now time.Time, window time.Duration) (int, time.Time, error)
	ReleaseAttempt(ctx context.Context, key string, windowStart time.Time) error
	CreateUser(ctx context.Context, u devreg.User, linkHash []byte, linkExpires time.Time, e *devreg.AuditEntry) error
	ListUsers(ctx context.Context, accountID string) ([]devreg.User, error)
	User(ctx context.Context, accountID, id string) (devreg.User, error)
	ChangeUser(ctx context.Context, accountID, id string, decide func(u devreg.User, admins int) (devreg.UserChange, error)) (devreg.User, error)
	LinkUser(ctx context.Context, linkHash []byte, now time.Time) (devreg.User, error)
	UseLink(ctx context.Context, linkHash []byte, passwordHash string, now time.Time, e func(devreg.User) *devreg.AuditEntry) (devreg.User, error)

	CreateAPIKey(ctx context.Context, k devreg.APIKey) error
	APIKeyByHash(ctx context.Context, hash []byte) (devreg.APIKey, error)
	TouchAPIKey(ctx context.Context, id string, t time.Time, ip string) error
	APIKey(ctx context.Context, accountID, id string) (devreg.APIKey, error)
	UpdateAPIKey(ctx context.Context, k devreg.APIKey) error
	ListAPIKeys(ctx context.Context, accountID string) ([]devreg.APIKey, error)
	DeleteAPIKey(ctx context.Context, accountID, id string) error
	CallerNow(ctx context.Context, accountID, keyID, userID string) (devreg.APIKey, bool, error)

	CreateDeviceType(ctx context.Context, t devreg.DeviceType) error
	ListDeviceTypes(ctx context.Context, accountID string) ([]devreg.DeviceType, error)
	DeviceType(ctx context.Context, accountID, id string) (devreg.DeviceType, error)
	UpdateDeviceType(ctx context.Context, t devreg.DeviceType) error
	DeleteDeviceType(ctx context.Context, accountID, id string) error
	AddTrustedCA(ctx context.Context, accountID string, ca devreg.TrustedCA) error
	TrustedCAs(ctx context.Context, accountID, deviceTypeID string) ([]devreg.TrustedCA, error)
	DeleteTrustedCA(ctx context.Context, accountID, deviceTypeID, id string) error
	CreateEnrollmentGroup(ctx context.Context, g devreg.EnrollmentGroup, check func(others []devreg.EnrollmentGroup) error) error
	EnrollmentGroups(ctx context.Context, accountID, deviceTypeID string) ([]devreg.EnrollmentGroup, error)
	EnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string) (devreg.EnrollmentGroup, error)
	UpdateEnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string,
		decide func(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error)) (devreg.EnrollmentGroup, error)
	DeleteEnrollmentGroup(ctx context.Context, accountID, deviceTypeID, groupID string) error
	AddEnrollmentKey(ctx context.Context, accountID, deviceTypeID, groupID string, k devreg.EnrollmentKey, oldNotAfter, now time.Time) error

	Register(ctx context.Context, reg devreg.Registration, entries devreg.RegistrationEntries,
		decide func(devreg.Found) (devreg.Decision, error)) (devreg.RegisterResult, error)
	ListDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) ([]devreg.Device, error)
	SearchDevices(ctx context.Context, accountID string, f devreg.DeviceFilter) ([]devreg.Device, string, error)
	CountDevices(ctx context.Context, accountID string, f devreg.DeviceFilter, most int) (int, error)
	Device(ctx context.Context, accountID, deviceID string) (devreg.Device, error)
	SetDeviceStatus(ctx context.Context, accountID, deviceID string, status devreg.DeviceStatus) error
	DeleteDevice(ctx context.Context, accountID, deviceID string) error
	MarkSeen(ctx context.Context, accountID string, deviceIDs []string, t time.Time) error
	CheckIn(ctx context.Context, accountID, deviceID, batchID string, t time.Time, firmware *string, reported []byte) error

	DeviceAuth(ctx context.Context, accountID, deviceID string) (devreg.DeviceAuth, error)
	// DeviceLogin reads what a device's login needs in one read: the device as DeviceAuth (no
	// credentials if it does not exist), the failures counted for the throttle key in the window
	// ending at now, and when that window started.
	DeviceLogin(ctx context.Context, accountID, deviceID, key string, now time.Time, window time.Duration) (devreg.DeviceAuth, int, time.Time, error)
	CredentialUsed(ctx context.Context, accountID, deviceID string, c devreg.StoredCredential, t time.Time, keyID string, hash []byte) error
	MarkCredentialsUsed(ctx context.Context, accountID string, uses []devreg.CredentialUse, t time.Time) error
	ChangeCredentials(ctx context.Context, accountID, deviceID string, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error
	AddCertificateCredential(ctx context.Context, accountID, deviceID string, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error
	CertificateDetails(ctx context.Context, accountID string, fingerprints [][]byte) (map[[32]byte]devreg.CertificateDetails, error)
	AutoRegister(ctx context.Context, r devreg.AutoRegistration) (devreg.AutoRegisterResult, error)
	EnrollingGroups(ctx context.Context, accountID string) ([]devreg.EnrollmentGroup, error)
	Enroll(ctx context.Context, es []devreg.Enrollment) ([]devreg.EnrollResult, error)
	SetAllowedIDs(ctx context.Context, accountID, deviceTypeID, groupID string, ids devreg.RegistrationEntries, audit func(allowed int64) *devreg.AuditEntry) (int64, error)
	Reenroll(ctx context.Context, accountID, deviceTypeID, groupID string, deviceIDs []string, audit func(reenrolled int64) *devreg.AuditEntry) (int64, error)
	RevokeBatchCredentials(ctx context.Context, accountID, typeID, batchID string, now time.Time,
		audit func(devreg.BatchRevocation) *devreg.AuditEntry) (devreg.BatchRevocation, []devreg.DeviceLeft, error)

	AppendAudit(ctx context.Context, accountID string, e *devreg.AuditEntry) error
	AuditHead(ctx context.Context, accountID string) (devreg.AuditHead, error)
	ListAudit(ctx context.Context, accountID string, f devreg.AuditFilter) ([]devreg.AuditEntry, error)
	WalkAudit(ctx context.Context, accountID string, since, until *time.Time, fn func(devreg.StoredAuditEntry) error) error
	AuditAccounts(ctx context.Context) (map[string]devreg.AuditHead, error)

	ListBatches(ctx context.Context, accountID string, f devreg.BatchFilter) ([]devreg.Batch, []int64, error)
	Batch(ctx context.Context, accountID, id string) (devreg.Batch, error)
	SetBatchStatus(ctx context.Context, accountID, id string, status devreg.BatchStatus) error
	DeleteBatch(ctx context.Context, accountID, batchID string, now time.Time, audit func(deleted int64) *devreg.AuditEntry) (int64, error)
}

// maxHashes bounds the password hashes in flight however many cores there are: logins are few,
// and each hash holds 64 MiB.
const maxHashes = 4

// Service carries out devreg's use cases for the caller found in each request's context.
type Service struct {
	store Store
	keys  *credential.Keyring
	// Now tells the time; tests replace it, before the server serves (its background work, the
	// delivery of events, reads it).
	Now func() time.Time
	// Log gets what background work cannot return; nil logs nothing.
	Log *slog.Logger
	// TokenKeys verify the device tokens issued as TokenIssuer (the public URL), wherever a
	// device presents one (VerifyDeviceToken); nil: no token is valid.
	TokenKeys   *devtoken.SigningKeys
	TokenIssuer string
	// PublicURL is the address clients use (no trailing slash), which the one-time links of
	// users start with; "" gives links that start with their path.
	PublicURL string
	// Metrics counts what operators watch (registrations, throttled logins); nil counts nothing.
	Metrics *metrics.Metrics
	// WebhookGuard decides which URLs webhooks may have and reach (not private addresses,
	// unless it allows them).
	WebhookGuard webhook.Guard
	// HashPassword hashes a user's new password: credential.HashPassword. Tests that make an
	// account in every test replace it, before the server serves, with one that hashes each
	// password once (a hash takes most of a second under the race detector).
	HashPassword func(password string) string

	eventWaiters eventWaiters // requests waiting for events (Events)

	seen      seenWriter                             // broker logins, to be recorded as the devices being seen
	turns     loginTurns                             // device logins' turns, one at a time per device (see AuthenticateDevice)
	patterns  patternCache                           // enrollment groups' compiled patterns
	apiKeys   hotCache[string, devreg.APIKey]        // API keys by their hash (see hotTTL)
	types     hotCache[typeRef, devreg.DeviceType]   // device types, for the broker's topic checks
	devices   hotCache[deviceRef, devreg.DeviceAuth] // devices' type and status, for topic checks
	enrolls   enrollQueues                           // enrollments waiting for the store, per account (group commit)
	closeOnce sync.Once

	// hashSlots bounds how many password hashes run at once (one per core, at most maxHashes):
	// each takes 64 MiB, and nothing else bounds how many logins arrive together.
	hashSlots chan struct{}
	hashWait  time.Duration // how long a login waits for a slot: hashSlotWait; tests lengthen it
	// checkPassword is credential.CheckPassword; the package's tests wrap it to watch the slots.
	checkPassword func(hash, password string) bool
}

// New returns a Service over store that hashes secrets with keys.
func New(store Store, keys *credential.Keyring) *Service {
	return &Service{
		store: store, keys: keys, Now: func() time.Time { return time.Now().UTC() },
		hashSlots:     make(chan struct{}, min(runtime.GOMAXPROCS(0), maxHashes)),
		hashWait:      hashSlotWait,
		checkPassword: credential.CheckPassword,
		HashPassword:  credential.HashPassword,
	}
}

// authorize returns the caller of ctx if its scope allows what needs scope need.
func authorize(ctx context.Context, need devreg.Scope) (devreg.Caller, error) {
	c, ok := devreg.CallerFromContext(ctx)
	if !ok {
		return c, devreg.Errorf(devreg.EUNAUTHORIZED, "authentication required: send an API key as 'Authorization: Bearer <key>'")
	}
	if !c.Scope.Allows(need) {
		if need == devreg.ScopeBroker {
			return c, devreg.Errorf(devreg.EFORBIDDEN, "the broker endpoints answer only to an API key with scope %q; this key has scope %q", need, c.Scope)
		}
		if c.Scope == devreg.ScopeBroker {
			return c, devreg.Errorf(devreg.EFORBIDDEN, "a key with scope %q answers only at the broker endpoints (/broker/v1/...); use a key with scope %q or higher here", c.Scope, need)
		}
		if c.Source == devreg.SourceConsole {
			return c, devreg.Errorf(devreg.EFORBIDDEN, "this needs the role %s or higher; your role is %s (an admin of the account can change it)", devreg.RoleOf(need), devreg.RoleOf(c.Scope))
		}
		return c, devreg.Errorf(devreg.EFORBIDDEN, "this needs an API key with scope %q or higher; this key has scope %q", need, c.Scope)
	}
	return c, nil
}

// unrestricted refuses a caller whose key is restricted to device types what only an unrestricted
// one may do.
func unrestricted(c devreg.Caller, what string) error {
	if c.DeviceTypeIDs != nil {
		return devreg.Errorf(devreg.EFORBIDDEN, "this API key is restricted to device types %s; to %s, use a key that is not restricted",
			strings.Join(c.DeviceTypeIDs, ", "), what)
	}
	return nil
}

func (s *Service) now() time.Time { return s.Now().UTC().Truncate(time.Microsecond) }

func pageSize(limit int) (int, error) {
	switch {
	case limit == 0:
		return devreg.DefaultPageSize, nil
	case limit < 0:
		return 0, devreg.Errorf(devreg.EBADREQUEST, "limit must be positive")
	default:
		return min(limit, devreg.MaxPageSize), nil
	}
}

// opaqueID reports whether id could be an ID this service made (prefix, '_', letters and digits),
// so that anything else is not found without asking the database, which may not take every byte.
func opaqueID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// notFound is the answer for an ID that cannot exist.
func notFound(kind, id string) error {
	return devreg.Errorf(devreg.ENOTFOUND, "no %s %s", kind, id)
}

// checkLength checks that a text field is valid UTF-8 without control characters or bidi
// controls, and from min to max characters long. A bidi control (an override, embedding,
// isolate or mark) reorders the text around it where the console shows it: "abc", U+202E,
// "fdp.exe" reads as "abcexe.pdf".
func checkLength(field, value string, min, max int) error {
	return checkText(field, value, min, max, false)
}

// checkName checks a name (of a device type, an API key, an account) as checkLength does, and
// also refuses every invisible character (see invisible).
func checkName(field, value string, min, max int) error {
	return checkText(field, value, min, max, true)
}

// checkText is checkLength, and with name checkName: one pass that names the first character
// refused and its position.
func checkText(field, value string, min, max int, name bool) error {
	if !utf8.ValidString(value) {
		return devreg.Errorf(devreg.EINVALID, "%s is not valid UTF-8 text", field)
	}
	rs := []rune(value)
	for i, r := range rs {
		pos := i + 1
		switch {
		case unicode.IsControl(r):
			return devreg.Errorf(devreg.EINVALID, "%s contains a control character (U+%04X)", field, r)
		case unicode.Is(unicode.Bidi_Control, r):
			return devreg.Errorf(devreg.EINVALID, "%s contains the bidi control U+%04X at character %d; remove it (it changes the order in which the text reads)", field, r, pos)
		case name && invisible(rs, i):
			return devreg.Errorf(devreg.EINVALID, "%s contains the invisible character U+%04X at character %d; names may not hold zero-width, "+
				"format or separator characters, which can make a name look like another", field, r, pos)
		}
	}
	if n := len(rs); n < min || n > max {
		if min > 0 && n == 0 {
			return devreg.Errorf(devreg.EINVALID, "%s is required", field)
		}
		return devreg.Errorf(devreg.EINVALID, "%s must be %d to %d characters long; it has %d", field, min, max, n)
	}
	return nil
}

// invisible reports whether rs[i] shows as nothing, or as nothing but a blank, where the console
// shows a name: the format characters (Unicode category Cf: bidi controls, zero-width space,
// joiners and non-joiner, word joiner, byte order mark, soft hyphen, tag characters, ...), the
// line and paragraph separators, the other default-ignorable characters (the Hangul fillers
// U+3164, U+115F, U+1160 and U+FFA0, the combining grapheme joiner U+034F, ...), and a variation
// selector where it selects nothing. A variation selector picks the glyph of the character before
// it: an emoji's (U+2668 U+FE0F), a keycap's (1 U+FE0F U+20E3), an ideograph's or a Mongolian
// letter's; after anything else it shows as nothing, so "A" and "A" U+FE0F read alike.
func invisible(rs []rune, i int) bool {
	r := rs[i]
	switch {
	case unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Other_Default_Ignorable_Code_Point):
		return true
	case unicode.Is(unicode.Variation_Selector, r):
		selects := i > 0 && unicode.In(rs[i-1], unicode.S, unicode.Han, unicode.Mongolian) ||
			i+1 < len(rs) && rs[i+1] == '\u20e3' // combining enclosing keycap
		return !selects
	}
	return false
}

func fmtScopes() string {
	return fmt.Sprintf("%q, %q, %q or %q", devreg.ScopeAdmin, devreg.ScopeRegister, devreg.ScopeRead, devreg.ScopeBroker)
}
