package devreg

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in the adapters; the code string is what API clients see.
const (
	EBADREQUEST   = "bad_request"            // malformed request: not JSON, bad parameter
	EUNAUTHORIZED = "unauthorized"           // no or bad credentials
	EFORBIDDEN    = "forbidden"              // credentials fine, scope too small
	ENOTFOUND     = "not_found"              // no such object in the caller's account
	ECONFLICT     = "conflict"               // clashes with what is stored
	ETOOLARGE     = "too_large"              // body over the limit
	EUNSUPPORTED  = "unsupported_media_type" // body of a type we do not take
	EINVALID      = "invalid"                // a field breaks a rule
	EINVALIDROWS  = "invalid_rows"           // entries of a registration break the rules
	ERATELIMITED  = "rate_limited"           // too many attempts
	EINTERNAL     = "internal"               // our fault; details are logged, not shown
)

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
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

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

// Add records p.
func (l *ProblemList) Add(p Problem) {
	l.Count++
	if len(l.Items) < MaxProblems {
		l.Items = append(l.Items, p)
	}
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
