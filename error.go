package devreg

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"time"
)

// Error codes. Each maps to one HTTP status in the adapters; the code string is what API clients see.
const (
	EBADREQUEST    = "bad_request"            // malformed request: not JSON, bad parameter
	EINVALIDCURSOR = "invalid_cursor"         // a listing's cursor that this service did not hand out
	EUNAUTHORIZED  = "unauthorized"           // no or bad credentials
	EKEYEXPIRED    = "key_expired"            // an API key past its expires_at
	EFORBIDDEN     = "forbidden"              // credentials fine, scope too small
	ENOTFOUND      = "not_found"              // no such object in the caller's account
	ECONFLICT      = "conflict"               // clashes with what is stored
	ETOOLARGE      = "too_large"              // body over the limit
	EUNSUPPORTED   = "unsupported_media_type" // body of a type we do not take
	EINVALID       = "invalid"                // a field breaks a rule
	EINVALIDROWS   = "invalid_rows"           // entries of a registration break the rules
	ERATELIMITED   = "rate_limited"           // too many attempts
	EUNAVAILABLE   = "unavailable"            // busy for now; try again after RetryAfter
	EINTERNAL      = "internal"               // our fault; details are logged, not shown
)

// statuses maps each error code to its HTTP status. It is the only such table: every adapter asks
// Status.
var statuses = map[string]int{
	EBADREQUEST:    http.StatusBadRequest,
	EINVALIDCURSOR: http.StatusBadRequest,
	EUNAUTHORIZED:  http.StatusUnauthorized,
	EFORBIDDEN:     http.StatusForbidden,
	ENOTFOUND:      http.StatusNotFound,
	ECONFLICT:      http.StatusConflict,
	ETOOLARGE:      http.StatusRequestEntityTooLarge,
	EUNSUPPORTED:   http.StatusUnsupportedMediaType,
	EINVALID:       http.StatusUnprocessableEntity,
	EINVALIDROWS:   http.StatusUnprocessableEntity,
	ERATELIMITED:   http.StatusTooManyRequests,
	EKEYEXPIRED:    http.StatusUnauthorized,
	EUNAVAILABLE:   http.StatusServiceUnavailable,
	EINTERNAL:      http.StatusInternalServerError,
}

// Status returns the HTTP status of an error code: 500 for a code it does not know.
func Status(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// MaxProblems is how many problems an error lists; ProblemCount gives the total.
const MaxProblems = 1000

// Problem is one bad entry of a request that carries many.
type Problem struct {
	Index    int    `json:"index"`
	Line     int    `json:"line,omitempty"`
	DeviceID string `json:"device_id,omitempty"`
	Message  string `json:"message"`
}

// Error is an error a user may see: a code, a message that says what was wrong, and for requests of
// many entries the problems found. Anything else that reaches a user is shown as an internal error.
type Error struct {
	Code         string
	Message      string
	Problems     []Problem
	ProblemCount int
	RetryAfter   time.Duration // for ERATELIMITED and EUNAVAILABLE: when to try again
	Err          error         // the cause, for the log; never shown
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause of e.
func (e *Error) Unwrap() error { return e.Err }

// RetryAfter returns how long the caller of a refused request should wait before trying again,
// and whether err says so at all.
func RetryAfter(err error) (time.Duration, bool) {
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		return e.RetryAfter, true
	}
	return 0, false
}

// RetryAfterSeconds returns d in whole seconds, rounded up, for a Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of err, EINTERNAL for errors that are not an *Error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the message of err that a user may see.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Message
	default:
		return "internal error; it has been logged"
	}
}

// ProblemList collects problems, keeping the first MaxProblems and counting the rest.
type ProblemList struct {
	Items []Problem
	Count int
}

// MaxEchoed is how many characters of a value from the request a problem repeats; a longer one
// is cut there and ends in "…". It is the longest valid device ID, so that every device ID a
// report names (a conflict, a bad secret) comes back whole and can be searched for, while a
// request of huge fields does not come back as a huge answer.
const MaxEchoed = 128

// Add records p, its device ID cut as Clip cuts it.
func (l *ProblemList) Add(p Problem) {
	l.Count++
	if len(l.Items) < MaxProblems {
		p.DeviceID = l.Clip(p.DeviceID)
		l.Items = append(l.Items, p)
	}
}

// Clip returns s, a value taken from a request, as a problem may repeat it: cut to MaxEchoed
// characters followed by "…" when it is longer (a byte that is not UTF-8 counts as one). Whoever
// writes such a value into a problem's message clips it with this too.
func (ProblemList) Clip(s string) string {
	if len(s) <= MaxEchoed {
		return s
	}
	n := 0
	for i := range s {
		if n == MaxEchoed {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// ErrorMessageOrText returns the message of an *Error, or the text of any other error: for
// command-line tools, whose user is the operator who may see internal details.
func ErrorMessageOrText(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}
