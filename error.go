package devreg

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
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
	// Kind is the message of the problem's group when Message names details of this entry only
	// ("first at index 4"); empty when Message is the same for every problem of its kind.
	Kind string `json:"-"`
}

// MaxProblemGroups is how many groups an error sorts its problems into: problems of yet more
// kinds are counted in one last group, OtherProblems.
const MaxProblemGroups = 50

// OtherProblems is the message of the group that counts the problems of the kinds past the first
// MaxProblemGroups-1.
const OtherProblems = "problems of other kinds"

// ProblemGroup counts the problems of a request that share a message, and says where the first
// and the last of them are: a file of 100,000 too-short secrets is reported as one line, not
// read as 1,000 of them.
type ProblemGroup struct {
	Message string    `json:"message"`
	Count   int       `json:"count"`
	First   ProblemAt `json:"first"`
	Last    ProblemAt `json:"last"`
}

// ProblemAt is where a problem is in a request.
type ProblemAt struct {
	Index int `json:"index"`
	Line  int `json:"line,omitempty"`
}

// Where says where the problems of g are, entries and lines counted from 1 as people count them:
// "entry 5 (line 6)", "entries 1–100,000 (lines 2–100,001)" when they are all of that range,
// "entries 3 to 99,998 (lines 4 to 99,999), not all between" when they are not.
func (g ProblemGroup) Where() string {
	entry := func(a ProblemAt) string { return Thousands(int64(a.Index) + 1) }
	line := func(a ProblemAt) string { return Thousands(int64(a.Line)) }
	lines := g.First.Line > 0 && g.Last.Line > 0
	switch {
	case g.Count == 1 || g.First.Index == g.Last.Index:
		if lines {
			return fmt.Sprintf("entry %s (line %s)", entry(g.First), line(g.First))
		}
		return "entry " + entry(g.First)
	case g.Last.Index-g.First.Index+1 == g.Count:
		if lines {
			return fmt.Sprintf("entries %s–%s (lines %s–%s)", entry(g.First), entry(g.Last), line(g.First), line(g.Last))
		}
		return fmt.Sprintf("entries %s–%s", entry(g.First), entry(g.Last))
	default:
		if lines {
			return fmt.Sprintf("entries %s to %s (lines %s to %s), not all between", entry(g.First), entry(g.Last), line(g.First), line(g.Last))
		}
		return fmt.Sprintf("entries %s to %s, not all between", entry(g.First), entry(g.Last))
	}
}

// Thousands writes n with a comma between each group of three digits: 100,000.
func Thousands(n int64) string {
	if n < 0 {
		return "-" + Thousands(-n)
	}
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Error is an error a user may see: a code, a message that says what was wrong, and for requests of
// many entries the problems found. Anything else that reaches a user is shown as an internal error.
type Error struct {
	Code         string
	Message      string
	Problems     []Problem
	ProblemCount int
	Groups       []ProblemGroup // all the problems, by message, in order of their first
	RetryAfter   time.Duration  // for ERATELIMITED and EUNAVAILABLE: when to try again
	Err          error          // the cause, for the log; never shown
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

// ProblemList collects problems, keeping the first MaxProblems, counting all of them and
// grouping all of them by message.
type ProblemList struct {
	Items  []Problem
	Count  int
	Groups []ProblemGroup
	// Sink, when set, is given every problem added, in the order added: a list that must report
	// every problem of a request (the console's download of them) streams them there.
	Sink func(Problem)

	group map[string]int // where Groups holds each message
}

// MaxEchoed is how many characters of a value from the request a problem repeats; a longer one
// is cut there and ends in "…". It is the longest valid device ID, so that every device ID a
// report names (a conflict, a bad secret) comes back whole and can be searched for, while a
// request of huge fields does not come back as a huge answer.
const MaxEchoed = 128

// Add records p, its device ID cut as Clip cuts it.
func (l *ProblemList) Add(p Problem) {
	l.Count++
	p.DeviceID = l.Clip(p.DeviceID)
	if l.Sink != nil {
		l.Sink(p)
	}
	at := ProblemAt{Index: p.Index, Line: p.Line}
	l.AddGroup(ProblemGroup{Message: cmp.Or(p.Kind, p.Message), Count: 1, First: at, Last: at})
	if len(l.Items) < MaxProblems {
		l.Items = append(l.Items, p)
	}
}

// AddGroup counts the problems of g in the group of its message, or in the group of others when
// there are MaxProblemGroups groups already. It does not change Count or Items.
func (l *ProblemList) AddGroup(g ProblemGroup) {
	if l.group == nil {
		l.group = make(map[string]int, len(l.Groups))
		for i, h := range l.Groups {
			l.group[h.Message] = i
		}
	}
	i, ok := l.group[g.Message]
	if !ok && len(l.Groups) >= MaxProblemGroups-1 {
		g.Message = OtherProblems
		i, ok = l.group[g.Message]
	}
	if !ok {
		l.group[g.Message] = len(l.Groups)
		l.Groups = append(l.Groups, g)
		return
	}
	h := &l.Groups[i]
	h.Count += g.Count
	if g.First.Index < h.First.Index {
		h.First = g.First
	}
	if g.Last.Index > h.Last.Index {
		h.Last = g.Last
	}
}

// Merge returns the problems of l and m in index order, keeping the first MaxProblems. Each list
// holds the lowest indexes of its kind, so the first MaxProblems of the merge are the lowest
// overall. The groups are those of both, in order of their first problem.
func (l ProblemList) Merge(m ProblemList) ProblemList {
	items := append(append([]Problem{}, l.Items...), m.Items...)
	sort.SliceStable(items, func(i, j int) bool { return items[i].Index < items[j].Index })
	if len(items) > MaxProblems {
		items = items[:MaxProblems]
	}
	out := ProblemList{Items: items, Count: l.Count + m.Count}
	for _, g := range append(append([]ProblemGroup{}, l.Groups...), m.Groups...) {
		out.AddGroup(g)
	}
	sort.SliceStable(out.Groups, func(i, j int) bool { return out.Groups[i].First.Index < out.Groups[j].First.Index })
	out.group = nil
	return out
}

// Error returns the refusal of a request for these problems.
func (l ProblemList) Error(code, message string) *Error {
	return &Error{Code: code, Message: message, Problems: l.Items, ProblemCount: l.Count, Groups: l.Groups}
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
