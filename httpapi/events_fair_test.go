package httpapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowAccountDoesNotStarveOthers: an account whose eight webhooks answer slowly takes at most
// half of a server's delivery workers, so another account's webhook gets its event within
// seconds (an outside review's reproducer: it waited more than a minute).
func TestSlowAccountDoesNotStarveOthers(t *testing.T) {
	e := newEnvWith(t, "", allowPrivate)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { time.Sleep(2 * time.Second) }))
	t.Cleanup(slow.Close)
	var got atomic.Int64
	fast := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.CompareAndSwap(0, time.Now().UnixNano()) }))
	t.Cleanup(fast.Close)
	for i := range 8 {
		e.mustDo(t, e.admin, "POST", "/api/v1/webhooks", fmt.Sprintf(`{"url": "%s/%d"}`, slow.URL, i), 201, nil)
	}
	for i := range 40 {
		e.createType(t, e.admin, fmt.Sprintf("Type %d", i), 0)
	}
	time.Sleep(time.Second) // the slow account's webhooks take their workers
	e.mustDo(t, e.other, "POST", "/api/v1/webhooks", `{"url": "`+fast.URL+`"}`, 201, nil)
	start := time.Now()
	e.createType(t, e.other, "Other's type", 0)
	for time.Since(start) < 30*time.Second && got.Load() == 0 {
		time.Sleep(100 * time.Millisecond)
	}
	if got.Load() == 0 || time.Unix(0, got.Load()).Sub(start) > 5*time.Second {
		t.Fatalf("another account's webhook waited %v for its event behind a slow account's", time.Since(start))
	}
}
