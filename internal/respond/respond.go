// Package respond runs HTTP handlers that return an error: each surface (the API's JSON, the
// console's pages, the device endpoints' OAuth answers) renders errors through one function of its
// own, and nothing is rendered once a response has started or the client has gone.
package respond

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"syscall"

	"devreg"
)

// HandlerFunc is a handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// Renderer writes err as the answer to r.
type Renderer func(w http.ResponseWriter, r *http.Request, err error)

// Handler returns an http.Handler that runs fn and renders the error it returns with render,
// unless the response has started already (then the error is logged, since a second header or
// a body glued to half of another would only confuse the client) or the client went away (then
// it is logged at info level: nobody is there to read an answer, and it is not our fault).
func Handler(log *slog.Logger, fn HandlerFunc, render Renderer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &writer{ResponseWriter: w}
		err := run(fn, sw, r)
		switch {
		case err == nil:
		case ClientGone(r, err):
			log.InfoContext(r.Context(), "client went away", "request_id", devreg.RequestIDFromContext(r.Context()),
				"method", r.Method, "path", r.URL.Path, "err", err)
		case sw.started:
			log.ErrorContext(r.Context(), "error after the response started", "request_id", devreg.RequestIDFromContext(r.Context()),
				"method", r.Method, "path", r.URL.Path, "err", err)
		default:
			render(sw, r, err)
		}
	})
}

// run calls fn and turns a panic into an error, so that it is rendered by the surface's own
// renderer (a page in the console, JSON in the API) and logged with its stack.
func run(fn HandlerFunc, w http.ResponseWriter, r *http.Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return fn(w, r)
}

// ClientGone reports whether err came from the client closing the connection of r.
func ClientGone(r *http.Request, err error) bool {
	if r.Context().Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return true
	}
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// writer remembers whether the response has started.
type writer struct {
	http.ResponseWriter
	started bool
}

func (w *writer) WriteHeader(code int) {
	w.started = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(b []byte) (int, error) {
	w.started = true
	return w.ResponseWriter.Write(b)
}

func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errorBody is the contract's error body.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Problems      []devreg.Problem      `json:"problems,omitempty"`
	ProblemCount  int                   `json:"problem_count,omitempty"`
	ProblemGroups []devreg.ProblemGroup `json:"problem_groups,omitempty"`
}

// maxMessage bounds an error message: some quote what the client sent.
const maxMessage = 1024

// ErrorBody returns the contract's error body for err, and its HTTP status.
func ErrorBody(err error) (int, any) {
	var body errorBody
	body.Error.Code, body.Error.Message = devreg.ErrorCode(err), devreg.ErrorMessage(err)
	if len(body.Error.Message) > maxMessage { // messages may quote what the client sent
		body.Error.Message = body.Error.Message[:maxMessage] + "…"
	}
	var e *devreg.Error
	if errors.As(err, &e) && len(e.Problems) > 0 {
		body.Problems, body.ProblemCount, body.ProblemGroups = e.Problems, max(e.ProblemCount, len(e.Problems)), e.Groups
	}
	return devreg.Status(body.Error.Code), body
}

// BreakStream ends a streamed answer of JSON lines (NDJSON) to r, written to w through bw, that
// has started and cannot go on because of err, unless the client went away (then it returns err).
// The last line it writes is the contract's error body, {"error": {"code", "message"}} (an
// internal error's message generic, the error logged in full); then it breaks the connection
// instead of ending the body (HTTP/1.1 sends no last chunk, HTTP/2 resets the stream), so that no
// client takes what it got for the whole answer. Otherwise it does not return.
func BreakStream(w http.ResponseWriter, bw *bufio.Writer, r *http.Request, log *slog.Logger, err error) error {
	if ClientGone(r, err) {
		return err
	}
	id := devreg.RequestIDFromContext(r.Context())
	status, body := ErrorBody(err)
	level := slog.LevelInfo
	if status == http.StatusInternalServerError {
		level = slog.LevelError
		b := body.(errorBody)
		b.Error.Message = fmt.Sprintf("internal error; it has been logged with request ID %s", id)
		body = b
	}
	log.Log(r.Context(), level, "stream broken off", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	line, _ := json.Marshal(body)
	bw.Write(append(line, '\n'))
	bw.Flush()
	http.NewResponseController(w).Flush() // what is buffered would go with the connection
	panic(http.ErrAbortHandler)
}

// WriteJSONError renders err as the contract's JSON error body, with the status of its code and
// Retry-After where it says when; internal errors are logged in full and shown as a generic
// message with the request ID. The Operations API and the broker endpoints answer errors so.
func WriteJSONError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, body := ErrorBody(err)
	if d, ok := devreg.RetryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(devreg.RetryAfterSeconds(d)))
	}
	if status == http.StatusInternalServerError {
		id := LogInternal(log, r, err)
		b := body.(errorBody)
		b.Error.Message = fmt.Sprintf("internal error; it has been logged with request ID %s", id)
		body = b
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// LogInternal logs err, an internal error that is the answer to r, in full with the request's ID,
// and returns the ID for the answer: every surface logs its internal errors so, whatever it then
// shows.
func LogInternal(log *slog.Logger, r *http.Request, err error) (requestID string) {
	id := devreg.RequestIDFromContext(r.Context())
	log.ErrorContext(r.Context(), "internal error", "request_id", id, "method", r.Method, "path", r.URL.Path, "err", err)
	return id
}
