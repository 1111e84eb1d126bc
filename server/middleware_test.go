package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPanicAnswers500AndIsLoggedWithRequestID(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{cfg: Config{MaxBody: 1 << 20}, log: slog.New(slog.NewJSONHandler(&logs, nil))}
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("database exploded: password=hunter2")
	}), newMetrics(prometheus.NewRegistry()))

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/devices?client_secret=s3cret", nil))
	id := rec.Header().Get("X-Request-ID")
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 500 {
		t.Fatalf("answer = %d %s", rec.Code, rec.Body)
	}
	if body.Error.Code != "internal" || !strings.Contains(body.Error.Message, id) || strings.Contains(rec.Body.String(), "exploded") {
		t.Errorf("answer %s: want a generic message with request ID %s and no details", rec.Body, id)
	}
	if !strings.Contains(logs.String(), "database exploded") || !strings.Contains(logs.String(), id) {
		t.Errorf("log lacks the panic or the request ID:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the query string reached the log:\n%s", logs.String())
	}
}

func TestBodyOverLimitIsRefusedBeforeReading(t *testing.T) {
	s := &Server{cfg: Config{MaxBody: 10}, log: slog.New(slog.DiscardHandler)}
	var readErr error
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, readErr = io.ReadAll(r.Body)
	}), newMetrics(prometheus.NewRegistry()))
	body := strings.NewReader(strings.Repeat("x", 11))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("PUT", "/api/v1/devicetypes/x/device_ids", body))
	var tooLarge *http.MaxBytesError
	if !errors.As(readErr, &tooLarge) || tooLarge.Limit != 10 || body.Len() != 11 {
		t.Errorf("reading a body over the limit: %v after %d bytes; want *http.MaxBytesError at once", readErr, 11-body.Len())
	}
}

func TestPublicURLDefaultsToAddr(t *testing.T) {
	for _, tc := range []struct{ addr, public, want string }{
		{"localhost:8080", "", "http://localhost:8080"},
		{"0.0.0.0:8080", "https://devreg.example.com/", "https://devreg.example.com"},
	} {
		s := &Server{cfg: Config{Addr: tc.addr, PublicURL: tc.public}}
		if got := s.PublicURL(); got != tc.want {
			t.Errorf("PublicURL(addr %q, public %q) = %q, want %q", tc.addr, tc.public, got, tc.want)
		}
	}
}
