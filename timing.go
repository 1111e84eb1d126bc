package devreg

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Timings records how long the stages of one request took, for its Server-Timing header (so that
// a factory's engineer, and the benchmark, see where a big registration's time went).
type Timings struct {
	mu     sync.Mutex
	stages []stageTime
}

type stageTime struct {
	name string
	dur  time.Duration
}

type timingsKey struct{}

// NewContextWithTimings returns a context in which StartStage records into the returned Timings.
func NewContextWithTimings(ctx context.Context) (context.Context, *Timings) {
	t := &Timings{}
	return context.WithValue(ctx, timingsKey{}, t), t
}

// StartStage starts timing a stage of the request ctx belongs to, and returns what ends it (the
// first call counts). A stage that runs more than once adds up. Without Timings in ctx it does
// nothing.
func StartStage(ctx context.Context, name string) (end func()) {
	t, _ := ctx.Value(timingsKey{}).(*Timings)
	if t == nil {
		return func() {}
	}
	start := time.Now()
	ended := false
	return func() {
		if ended {
			return
		}
		ended = true
		d := time.Since(start)
		t.mu.Lock()
		defer t.mu.Unlock()
		for i := range t.stages {
			if t.stages[i].name == name {
				t.stages[i].dur += d
				return
			}
		}
		t.stages = append(t.stages, stageTime{name, d})
	}
}

// Header returns the stages in the order they first ended, as a Server-Timing header's value
// (durations in milliseconds), or "" if none was recorded.
func (t *Timings) Header() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	parts := make([]string, len(t.stages))
	for i, s := range t.stages {
		parts[i] = fmt.Sprintf("%s;dur=%.1f", s.name, float64(s.dur.Microseconds())/1000)
	}
	return strings.Join(parts, ", ")
}
