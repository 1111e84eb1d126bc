package devreg

import "testing"

func TestCursor(t *testing.T) {
	for _, c := range []Cursor{{}, {Seq: 1}, {Seq: 1 << 40}, {DeviceID: "AA:BB:CC-01.x_y"}, {SeenAt: 1765000000000000, Seq: 7}, {SeenAt: -1, Seq: 12}, {SeenAt: -1}} {
		got, err := ParseCursor(c.String())
		if err != nil || got != c {
			t.Errorf("ParseCursor(%q) = %+v, %v; want %+v", c.String(), got, err, c)
		}
	}
	for _, s := range []string{"!!", "%%%garbage", "cw", "czA", "cy0x", "eDE", "c3h5eg", "bDAuMQ", "bC0yLjE", "bDE"} { // "s", "s0", "s-1", "x1", "sxyz", "l0.1", "l-2.1", "l1"
		if c, err := ParseCursor(s); ErrorCode(err) != EINVALIDCURSOR {
			t.Errorf("ParseCursor(%q) = %+v, %v; want an invalid_cursor error", s, c, err)
		}
	}
}
