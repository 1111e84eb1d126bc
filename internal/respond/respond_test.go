package respond

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"devreg"
)

func TestHandler(t *testing.T) {
	rendered := func(w http.ResponseWriter, r *http.Request, err error) {
		w.WriteHeader(devreg.Status(devreg.ErrorCode(err)))
		w.Write([]byte("rendered: " + devreg.ErrorMessage(err)))
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name     string
		ctx      context.Context
		fn       HandlerFunc
		status   int
		body     string
		logLevel string
	}{
		{"404/error-before-answer", context.Background(), func(w http.ResponseWriter, r *http.Request) error {
			return devreg.Errorf(devreg.ENOTFOUND, "no device d1")
		}, 404, "rendered: no device d1", ""},
		{"500/unknown-code", context.Background(), func(w http.ResponseWriter, r *http.Request) error {
			return &devreg.Error{Code: "no_such_code", Message: "odd"}
		}, 500, "rendered: odd", ""},
		{"200/error-after-answer-started", context.Background(), func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(200)
			w.Write([]byte("[1, 2,"))
			return errors.New("database went away mid-listing")
		}, 200, "[1, 2,", "ERROR"},
		{"client-gone-not-rendered", canceled, func(w http.ResponseWriter, r *http.Request) error {
			return context.Canceled
		}, 200, "", "INFO"},
		{"500/panic", context.Background(), func(w http.ResponseWriter, r *http.Request) error {
			panic("boom")
		}, 500, "rendered: internal error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			h := Handler(slog.New(slog.NewTextHandler(&logs, nil)), tc.fn, rendered)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil).WithContext(tc.ctx))
			if rec.Code != tc.status || !strings.HasPrefix(rec.Body.String(), tc.body) {
				t.Errorf("answer = %d %q, want %d %q", rec.Code, rec.Body, tc.status, tc.body)
			}
			if tc.logLevel != "" && !strings.Contains(logs.String(), "level="+tc.logLevel) {
				t.Errorf("log = %q, want a record at level %s", logs.String(), tc.logLevel)
			}
			if tc.logLevel == "INFO" && strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("a client that went away was logged as an error: %q", logs.String())
			}
		})
	}
}
