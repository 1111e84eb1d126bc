package httpapi

import (
	"devreg/bulkfile"
	"errors"
	"io"
	"strings"
	"testing"

	"devreg"
)

type repeated struct {
	b byte
	n int
}

func (r *repeated) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}

// The JSON reader refuses any value it would have to hold whole once it passes 64 KiB, wherever
// it is, naming where it starts; valid entries around it and quoted structural bytes do not
// count against the bound.
func TestJSONEntriesRefuseHugeValues(t *testing.T) {
	const huge = 4 << 20
	okEntry := `{"device_id": "ok-1", "secret": "se\"cr,et:{[1"}`
	tests := []struct {
		name string
		body io.Reader
		ok   int // entries read before the refusal
		says string
	}{
		{"string-as-devices", io.MultiReader(strings.NewReader(`{"devices": "`), &repeated{'x', huge}), 0,
			"the JSON value at byte offset 11 is longer than 64 KiB"},
		{"number-in-entry", io.MultiReader(strings.NewReader(`{"devices": [`+okEntry+`, {"device_id": 1`), &repeated{'1', huge}), 1,
			"device entry 1, at byte offset 63, is longer than 64 KiB"},
		{"blanks-between-entries", io.MultiReader(strings.NewReader(`{"devices": [`+okEntry+`,`), &repeated{' ', huge}), 1,
			"device entry 1, at byte offset 62, is longer than 64 KiB"},
		{"many-small-fields-in-one-entry", io.MultiReader(strings.NewReader(`{"devices": [{"device_id": "a"`), strings.NewReader(strings.Repeat(`, "secret": "abcdefgh"`, huge/20))), 0,
			"device entry 0, at byte offset 13, is longer than 64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := bulkfile.NewJSONReader(tt.body)
			for i := 0; ; i++ {
				_, err := src.Next()
				if err == nil {
					continue
				}
				if errors.Is(err, io.EOF) || devreg.ErrorCode(err) != devreg.EBADREQUEST || !strings.Contains(devreg.ErrorMessage(err), tt.says) || i != tt.ok {
					t.Fatalf("after %d entries: %v; want %d entries, then a bad request saying %q", i, err, tt.ok, tt.says)
				}
				return
			}
		})
	}
}
