package devreg

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a duration as people write it in the console and on the command line:
// Go's own form ("72h", "90m", "1h30m", "0") or whole units in words or letters ("7 days",
// "7d", "2 weeks", "36 hours", "1 day 12 hours"). FormatDuration writes what it reads, so a
// rotation grace reads the same on every surface; the API keeps plain seconds.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if s == "" {
		return 0, Errorf(EINVALID, "give a duration such as 7 days or 72h")
	}
	if s == "none" {
		return 0, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	fields := strings.Fields(s)
	// "7d", "12h" as one word each: split the number from its unit.
	var words []string
	for _, f := range fields {
		i := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
		if i > 0 {
			words = append(words, f[:i], f[i:])
		} else {
			words = append(words, f)
		}
	}
	if len(words)%2 != 0 {
		return 0, Errorf(EINVALID, "%q is not a duration: give a number and a unit, such as 7 days or 72h", s)
	}
	var total time.Duration
	for i := 0; i < len(words); i += 2 {
		n, err := strconv.ParseInt(words[i], 10, 32)
		if err != nil || n < 0 {
			return 0, Errorf(EINVALID, "%q is not a duration: %q is not a whole number", s, words[i])
		}
		word := strings.TrimSuffix(words[i+1], ",")
		if len(word) > 2 { // "days", "hrs"; but "ms" is not minutes
			word = strings.TrimSuffix(word, "s")
		}
		unit, ok := durationUnits[word]
		if !ok {
			return 0, Errorf(EINVALID, "%q is not a duration: %q is not a unit (weeks, days, hours, minutes or seconds)", s, words[i+1])
		}
		if n > int64(maxDuration/unit) || total > maxDuration-time.Duration(n)*unit {
			return 0, Errorf(EINVALID, "%q is too long a duration", s)
		}
		total += time.Duration(n) * unit
	}
	return total, nil
}

// maxDuration bounds what ParseDuration adds up, far above any limit a caller checks.
const maxDuration = 100 * 365 * 24 * time.Hour

var durationUnits = map[string]time.Duration{
	"w": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
	"h": time.Hour, "hour": time.Hour, "hr": time.Hour,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"s": time.Second, "sec": time.Second, "second": time.Second,
}

// FormatDuration writes d in whole days, hours, minutes and seconds, largest first ("7 days",
// "1 day 12 hours", "none" for zero), as ParseDuration reads it back.
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	var parts []string
	for _, u := range []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if n := d / u.size; n > 0 {
			d -= n * u.size
			if n == 1 {
				parts = append(parts, "1 "+u.name)
			} else {
				parts = append(parts, fmt.Sprintf("%d %ss", n, u.name))
			}
		}
	}
	return strings.Join(parts, " ")
}
