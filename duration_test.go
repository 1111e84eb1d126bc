package devreg_test

import (
	"testing"
	"time"

	"devreg"
)

func TestParseDuration(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"7 days", 7 * day}, {"7d", 7 * day}, {"1 day", day}, {"72h", 72 * time.Hour}, {"1h30m", 90 * time.Minute},
		{"2 weeks", 14 * day}, {"1 day 12 hours", 36 * time.Hour}, {"1 day, 12 hours", 36 * time.Hour}, {"0", 0},
		{"604800s", 7 * day}, {"604800 seconds", 7 * day}, {" 30 Days ", 30 * day}, {"90 min", 90 * time.Minute}, {"3 hrs", 3 * time.Hour}, {"none", 0},
	} {
		got, err := devreg.ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := devreg.ParseDuration(devreg.FormatDuration(got)); got > 0 && (err != nil || back != got) {
			t.Errorf("ParseDuration(FormatDuration(%v) = %q) = %v, %v", got, devreg.FormatDuration(got), back, err)
		}
	}
	for _, in := range []string{"", "7", "seven days", "7 fortnights", "5 ms", "-3 days", "1.5 days", "99999999999 days", "7 days 3"} {
		if d, err := devreg.ParseDuration(in); devreg.ErrorCode(err) != devreg.EINVALID {
			t.Errorf("ParseDuration(%q) = %v, %v; want it refused", in, d, err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{0, "none"}, {time.Second, "1 second"}, {7 * 24 * time.Hour, "7 days"}, {36 * time.Hour, "1 day 12 hours"},
		{72 * time.Hour, "3 days"}, {90 * time.Minute, "1 hour 30 minutes"}, {2592000 * time.Second, "30 days"},
	} {
		if got := devreg.FormatDuration(tc.in); got != tc.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
