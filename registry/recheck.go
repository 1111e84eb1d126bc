package registry

import (
	"context"
	"slices"
	"time"

	"devreg"
)

// A request is authorized when it starts, but some run long after: a registration's body may
// trickle in for minutes, an audit export streams for as long as its client reads. Revoking a key
// takes effect at once, so such a request asks again before it answers, writes or goes on: its
// key must still exist, be unexpired then and have the scope and device types it was authorized
// with; a console user must still exist and have the role it had.

// stillAuthorized decides whether caller c, authorized when its request started, may still have
// what the request does, given its key as stored now (k; found is false once it is deleted) or,
// for a console user, whether the user still exists (found) and the scope of its role (k.Scope).
// what says what the refusal means
// for the request ("nothing was registered").
func (s *Service) stillAuthorized(c devreg.Caller, k devreg.APIKey, found bool, what string) error {
	switch {
	case c.KeyID == "" && !found:
		return devreg.Errorf(devreg.EUNAUTHORIZED, "user %s (%s) no longer exists; %s", c.UserID, c.Name, what)
	case c.KeyID == "" && k.Scope != c.Scope:
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the role of user %s (%s) changed while this request ran; %s; send it again", c.UserID, c.Name, what)
	case c.KeyID == "":
		return nil
	case !found:
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the API key %s (%s) was revoked while this request ran; %s", c.KeyID, c.Name, what)
	case k.ExpiresAt != nil && !s.now().Before(*k.ExpiresAt):
		return devreg.Errorf(devreg.EKEYEXPIRED, "the API key %s (%s) expired at %s while this request ran; %s; ask an administrator for a new key or a later expiry",
			k.ID, k.Name, k.ExpiresAt.Format(time.RFC3339), what)
	case k.Scope != c.Scope || (k.DeviceTypeIDs == nil) != (c.DeviceTypeIDs == nil) || !slices.Equal(k.DeviceTypeIDs, c.DeviceTypeIDs):
		return devreg.Errorf(devreg.EUNAUTHORIZED, "the scope or device types of the API key %s (%s) changed while this request ran; %s; send it again",
			k.ID, k.Name, what)
	}
	return nil
}

// recheck reads the caller's key (or user) again and decides as stillAuthorized does. A caller
// that names neither (the service's own tests and tools) has nothing to read again.
func (s *Service) recheck(ctx context.Context, c devreg.Caller, what string) error {
	if c.KeyID == "" && c.UserID == "" {
		return nil
	}
	k, found, err := s.store.CallerNow(ctx, c.AccountID, c.KeyID, c.UserID)
	if err != nil {
		return err
	}
	return s.stillAuthorized(c, k, found, what)
}

// StillAuthorized reads the key or user of ctx's caller again and decides as stillAuthorized
// does, for a long answer that pages through the service (the console's export): asked before
// each page, it stops a removed or demoted user's download at the next page. what says what the
// refusal means for the request.
func (s *Service) StillAuthorized(ctx context.Context, what string) error {
	c, ok := devreg.CallerFromContext(ctx)
	if !ok {
		return devreg.Errorf(devreg.EUNAUTHORIZED, "no caller")
	}
	return s.recheck(ctx, c, what)
}

// refusesCaller reports whether err is a refusal of the caller's credentials.
func refusesCaller(err error) bool {
	code := devreg.ErrorCode(err)
	return code == devreg.EUNAUTHORIZED || code == devreg.EKEYEXPIRED
}

// How often a streamed answer asks again whether its caller may still have it: after so many
// items or so long by the service's clock, whichever comes first. A check is one indexed read;
// an export sends 1000 entries in a few milliseconds, and a slow reader is asked once a second.
const (
	recheckItems    = 1000
	recheckInterval = time.Second
)

// streamCheck asks again, every so often as a stream goes on, whether its caller may still have it.
type streamCheck struct {
	s     *Service
	c     devreg.Caller
	what  string
	items int
	last  time.Time
}

func (s *Service) newStreamCheck(c devreg.Caller, what string) *streamCheck {
	return &streamCheck{s: s, c: c, what: what, last: s.now()}
}

// next is called before each item of the stream; an error ends the stream there.
func (sc *streamCheck) next(ctx context.Context) error {
	sc.items++
	if now := sc.s.now(); sc.items >= recheckItems || now.Sub(sc.last) >= recheckInterval {
		sc.items, sc.last = 0, now
		return sc.s.recheck(ctx, sc.c, sc.what)
	}
	return nil
}
