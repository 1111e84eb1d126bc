package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/metrics"
)

// Console session and login throttle settings.
const (
	SessionLifetime  = 12 * time.Hour
	loginMaxFailures = 5
	loginWindow      = 15 * time.Minute
)

// dummyPasswordHash is a hash to check a password against when the email is unknown, so that
// the answer takes the same time either way. It is made on first use: argon2id takes 64 MiB.
var dummyPasswordHash = sync.OnceValue(func() string { return credential.HashPassword("no such user") })

// hashSlotWait is how long a login waits for a password hashing slot before it is told to try
// again: long enough to ride out a burst, short enough that a person is not left staring.
const hashSlotWait = 2 * time.Second

// errHashingBusy answers a login that found no hashing slot in time.
func errHashingBusy() error {
	return &devreg.Error{Code: devreg.EUNAVAILABLE, Message: "the server is busy checking other logins; try again in a moment",
		RetryAfter: hashSlotWait}
}

// hashSlot waits, up to hashSlotWait and while ctx lasts, for one of the slots that bound how
// many password hashes run at once, and returns what frees it.
func (s *Service) hashSlot(ctx context.Context) (release func(), err error) {
	release = func() { <-s.hashSlots }
	select {
	case s.hashSlots <- struct{}{}:
		return release, nil
	default:
	}
	timer := time.NewTimer(s.hashWait)
	defer timer.Stop()
	select {
	case s.hashSlots <- struct{}{}:
		return release, nil
	case <-timer.C:
		return nil, errHashingBusy()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkPasswordInSlot checks password against hash in a hashing slot.
func (s *Service) checkPasswordInSlot(ctx context.Context, hash func() string, password string) (bool, error) {
	release, err := s.hashSlot(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	return s.checkPassword(hash(), password), nil
}

// Login checks a console user's email and password and opens a session, returning its token for
// the cookie. After loginMaxFailures failures for one email within loginWindow, further attempts
// are refused (ERATELIMITED, with RetryAfter) until the window has passed. When the server is
// busy hashing other logins' passwords the answer is EUNAVAILABLE, with RetryAfter.
func (s *Service) Login(ctx context.Context, email, password string) (string, error) {
	email = devreg.NormalizeEmail(email)
	now := s.now()
	key := "login:" + throttleKey(email)
	// The attempt is counted before the password is checked, so parallel guesses cannot all pass
	// a count that none of them has added to yet; a success, or an attempt that was never
	// checked, gives its count back.
	attempts, since, err := s.store.ReserveAttempt(ctx, key, now, loginWindow)
	if err != nil {
		return "", err
	}
	if attempts > loginMaxFailures {
		// A parallel attempt may have opened the window a moment after this one's now.
		wait := min(since.Add(loginWindow).Sub(now), loginWindow)
		s.Metrics.Throttled(metrics.LoginConsole)
		return "", &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait,
			Message: fmt.Sprintf("too many failed logins for %s; try again in %s", email, max(wait.Round(time.Minute), time.Minute))}
	}
	u, err := devreg.User{}, devreg.Errorf(devreg.ENOTFOUND, "no user")
	if checkLength("email", email, 1, 320) == nil {
		u, err = s.store.UserByEmail(ctx, email)
	}
	known := err == nil
	hash := func() string { return u.PasswordHash }
	// A user whose password is not set yet (invited) or was ended by a reset matches no password;
	// it gets the same work as any other, so that the time taken does not tell which users wait.
	unset := known && !strings.HasPrefix(u.PasswordHash, "$argon2id$")
	if devreg.ErrorCode(err) == devreg.ENOTFOUND || unset {
		hash = dummyPasswordHash // the same work, in a slot too, for an unknown email
	} else if err != nil {
		return "", s.unchecked(ctx, key, since, err)
	}
	ok, err := s.checkPasswordInSlot(ctx, hash, password)
	if err != nil {
		return "", s.unchecked(ctx, key, since, err)
	}
	user := devreg.AuditActor{Type: devreg.ActorUser, ID: u.ID, Name: u.Email}
	userObject := devreg.AuditObject{Type: "user", ID: u.ID}
	if !ok || !known || unset {
		if known {
			// Recorded only for an existing user whose password was checked, so that strangers
			// cannot write into an account's log; throttled and busy attempts never get here.
			e := s.auditEntry(ctx, user, "login.failure", userObject, nil)
			if err := s.store.AppendAudit(context.WithoutCancel(ctx), u.AccountID, e); err != nil {
				return "", err
			}
		}
		return "", devreg.Errorf(devreg.EUNAUTHORIZED, "wrong email or password")
	}
	if err := s.releaseAttempt(ctx, key, since); err != nil {
		return "", err
	}
	token := credential.RandomString(43)
	ctx = s.audited(ctx, user, "login.success", userObject, nil)
	err = s.store.CreateSession(ctx, hashToken(token), u.ID, u.PasswordHash, now, now.Add(SessionLifetime))
	if devreg.ErrorCode(err) == devreg.EUNAUTHORIZED { // the password was reset or changed meanwhile
		return "", devreg.Errorf(devreg.EUNAUTHORIZED, "wrong email or password")
	}
	if err != nil {
		return "", fmt.Errorf("create session: %w", err)
	}
	return token, nil
}

// SessionCaller returns the caller a console session token stands for, with the scope of its
// user's role as stored now: a change of role holds from the user's next request on, and a
// removed user's sessions are gone with it.
func (s *Service) SessionCaller(ctx context.Context, token string) (devreg.Caller, error) {
	u, err := s.store.SessionUser(ctx, hashToken(token), s.now())
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return devreg.Caller{}, devreg.Errorf(devreg.EUNAUTHORIZED, "your session has ended; log in again")
	}
	if err != nil {
		return devreg.Caller{}, err
	}
	return devreg.Caller{AccountID: u.AccountID, Scope: u.Role.Scope(), Name: u.Email, Source: devreg.SourceConsole, UserID: u.ID}, nil
}

// Logout ends a console session.
func (s *Service) Logout(ctx context.Context, token string) error {
	return s.store.DeleteSession(ctx, hashToken(token), s.now())
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// releaseAttempt gives back an attempt counted in the throttle window that started at since. It
// runs even when the request has been cancelled: a count that stays would be a failure that never
// happened.
func (s *Service) releaseAttempt(ctx context.Context, key string, since time.Time) error {
	return s.store.ReleaseAttempt(context.WithoutCancel(ctx), key, since)
}

// unchecked gives back an attempt counted in the throttle window that started at since, because
// err kept it from being checked, and returns err.
func (s *Service) unchecked(ctx context.Context, key string, since time.Time, err error) error {
	if rerr := s.releaseAttempt(ctx, key, since); rerr != nil {
		return errors.Join(err, fmt.Errorf("give back a throttle attempt: %w", rerr))
	}
	return err
}
