package devreg

import (
	"encoding/base64"
	"strconv"
	"strings"
)

// Cursor is where the next page of a listing starts. Clients see it only as the opaque, URL-safe
// string of String, and hand it back as it was.
type Cursor struct {
	Seq      int64  // a sequence number: devices after it in registration order, batches before it (newest first)
	DeviceID string // a device ID: devices after it in device ID order (prefix searches)
	// SeenAt is, in last-seen order, the last_seen_at (Unix microseconds) of the device at Seq,
	// after which the next page starts; -1 once the listing is past the devices that checked in.
	SeenAt int64
}

// IsZero reports whether c is the start of a listing.
func (c Cursor) IsZero() bool { return c == Cursor{} }

// String returns c as clients see it: "" for the start of a listing.
func (c Cursor) String() string {
	switch {
	case c.SeenAt != 0:
		return base64.RawURLEncoding.EncodeToString([]byte("l" + strconv.FormatInt(c.SeenAt, 10) + "." + strconv.FormatInt(c.Seq, 10)))
	case c.DeviceID != "":
		return base64.RawURLEncoding.EncodeToString([]byte("d" + c.DeviceID))
	case c.Seq > 0:
		return base64.RawURLEncoding.EncodeToString([]byte("s" + strconv.FormatInt(c.Seq, 10)))
	default:
		return ""
	}
}

// ParseCursor reads a cursor that String made; "" is the start of a listing. Anything else is an
// EINVALIDCURSOR error.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	bad := Errorf(EINVALIDCURSOR, "cursor %q is not one this service handed out; use next_cursor from the previous page with the same filters", clip(s))
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 2 {
		return Cursor{}, bad
	}
	pos := string(b)
	switch {
	case strings.HasPrefix(pos, "d"):
		return Cursor{DeviceID: pos[1:]}, nil
	case strings.HasPrefix(pos, "l"):
		at, seq, ok := strings.Cut(pos[1:], ".")
		seen, err1 := strconv.ParseInt(at, 10, 64)
		n, err2 := strconv.ParseInt(seq, 10, 64)
		if !ok || err1 != nil || err2 != nil || seen == 0 || seen < -1 || n < 0 {
			return Cursor{}, bad
		}
		return Cursor{SeenAt: seen, Seq: n}, nil
	case strings.HasPrefix(pos, "s"):
		seq, err := strconv.ParseInt(pos[1:], 10, 64)
		if err != nil || seq < 1 {
			return Cursor{}, bad
		}
		return Cursor{Seq: seq}, nil
	default:
		return Cursor{}, bad
	}
}

// clip shortens a value from a request that a message repeats.
func clip(s string) string { return ProblemList{}.Clip(s) }
