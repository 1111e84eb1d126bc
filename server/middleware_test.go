package server

import (
	"bytes"
	"encoding/json"
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

func TestBodyOverLimitAnswers413BeforeReading(t *testing.T) {
	s := &Server{cfg: Config{MaxBody: 10}, log: slog.New(slog.DiscardHandler)}
	called := false
	h := s.middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true }), newMetrics(prometheus.NewRegistry()))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("PUT", "/api/v1/devicetypes/x/device_ids", strings.NewReader(strings.Repeat("x", 11))))
	if rec.Code != 413 || called || !strings.Contains(rec.Body.String(), "--max-body") {
		t.Errorf("answer = %d %s (handler called: %v), want 413 naming --max-body", rec.Code, rec.Body, called)
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
