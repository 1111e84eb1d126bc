package devreg_test

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"devreg"
)

func TestTimings(t *testing.T) {
	// Without Timings in the context, stages cost nothing and record nothing.
	devreg.StartStage(context.Background(), "read")()

	ctx, timings := devreg.NewContextWithTimings(context.Background())
	if h := timings.Header(); h != "" {
		t.Errorf("no stage yet: header %q", h)
	}
	end := devreg.StartStage(ctx, "read")
	time.Sleep(2 * time.Millisecond)
	end()
	end() // a second end counts nothing
	devreg.StartStage(ctx, "insert")()
	again := devreg.StartStage(ctx, "read")
	time.Sleep(2 * time.Millisecond)
	again()
	h := timings.Header()
	m := regexp.MustCompile(`^read;dur=(\d+\.\d), insert;dur=\d+\.\d$`).FindStringSubmatch(h)
	if m == nil {
		t.Fatalf("header %q: want read then insert, each once, in milliseconds", h)
	}
	if ms, _ := strconv.ParseFloat(m[1], 64); ms < 4 {
		t.Errorf("header %q: the two reads of 2ms each do not add up", h)
	}
}
