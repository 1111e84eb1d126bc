package console

import (
	"net/http"
	"strings"
	"time"

	"devreg"
)

// inputTimeLayout is how a datetime-local input shows a time (in UTC here).
const inputTimeLayout = "2006-01-02T15:04"

// parseUTC reads a time from a form or a query string. Browsers send a datetime-local field as a
// wall-clock time without a zone; the pages say it is UTC, and so it is read. RFC 3339 (with a
// zone) and a bare date are taken too, for people who edit a URL. An empty value is no time (nil).
func parseUTC(v string) (*time.Time, bool) {
	if v == "" {
		return nil, true
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		t = t.UTC()
		return &t, true
	}
	// The layout with seconds also takes a fraction of a second, which some browsers send.
	for _, layout := range []string{inputTimeLayout, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return &t, true
		}
	}
	return nil, false
}

// formTime reads a datetime-local field of a posted form (see parseUTC). A blank field is no
// limit (nil).
func formTime(r *http.Request, name, label string) (*time.Time, error) {
	t, ok := parseUTC(strings.TrimSpace(r.PostFormValue(name)))
	if !ok {
		return nil, devreg.Errorf(devreg.EINVALID, "%s is not a date and time; pick one with the date field, or write it as 2026-12-31T23:59 (UTC)", label)
	}
	return t, nil
}

// inputTime is t as a datetime-local input's value, in UTC: with seconds only when it has some.
func inputTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	u := t.UTC()
	if u.Second() != 0 {
		return u.Format("2006-01-02T15:04:05")
	}
	return u.Format(inputTimeLayout)
}
