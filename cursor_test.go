package devreg

import "testing"

func TestCursor(t *testing.T) {
	for _, c := range []Cursor{{}, {Seq: 1}, {Seq: 1 << 40}, {DeviceID: "AA:BB:CC-01.x_y"}} {
		got, err := ParseCursor(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCursor(%q) = %+v, %v; want %+v", c.String(), got, err, c)
		}
	}
	for _, s := range []string{"!!", "%%%garbage", "cw", "czA", "cy0x", "eDE", "c3h5eg"} { // "s", "s0", "s-1", "x1", "sxyz"
		if c, err := ParseCursor(s); ErrorCode(err) != EINVALIDCURSOR {
			t.Errorf("ParseCursor(%q) = %+v, %v; want an invalid_cursor error", s, c, err)
		}
	}
}
