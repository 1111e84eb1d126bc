package client

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"time"
)

// DefaultMaxWait is the longest Retry-After that Retries waits for unless told otherwise.
const DefaultMaxWait = 2 * time.Minute

// Retries says how a client waits out 429 Too Many Requests, which devreg answers when an API
// key has made more requests in the last minute than the server's --api-rate-limit allows. Such a
// request was refused before it did anything, so sending it again is always safe.
type Retries struct {
	// Max is how many times a refused request is sent again; 0 never.
	Max int
	// MaxWait is the longest Retry-After waited for; a longer one ends the retries. 0 for
	// DefaultMaxWait.
	MaxWait time.Duration
	// Notify, when set, is called before each wait, to tell the user: retry counts from 1.
	Notify func(wait time.Duration, retry int, refusal *Error)
}

// RateLimited reports whether err is a 429 refusal, and when to try again.
func RateLimited(err error) (time.Duration, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusTooManyRequests {
		return 0, false
	}
	return e.RetryAfter, true
}

// Wait decides whether a request refused with err may be sent again as retry number retry
// (from 1): if err is a 429 and the policy allows it, it waits for the server's Retry-After (at
// least a second) and reports true; it stops early with ctx's error.
func (r Retries) Wait(ctx context.Context, err error, retry int) (bool, error) {
	wait, limited := RateLimited(err)
	if !limited || retry > r.Max {
		return false, nil
	}
	wait = max(wait, time.Second)
	if wait > cmp.Or(r.MaxWait, DefaultMaxWait) {
		return false, nil
	}
	if r.Notify != nil {
		var e *Error
		errors.As(err, &e)
		r.Notify(wait, retry, e)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
