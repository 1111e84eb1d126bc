package bulkfile

import (
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"devreg"
)

func readAll(t testing.TB, in string) []devreg.DeviceEntry {
	t.Helper()
	r := NewReader(strings.NewReader(in))
	var out []devreg.DeviceEntry
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, e)
	}
}

type E = devreg.DeviceEntry

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []E
	}{
		{"contract-example", "device1, secretfordevice1, device2, secretfordevice2, device3, secretfordevice3,  \n  \ndevice4, secretfordevice4, device5, secretfordevice5\n", []E{
			{Index: 0, Line: 1, DeviceID: "device1", Secret: "secretfordevice1"},
			{Index: 1, Line: 1, DeviceID: "device2", Secret: "secretfordevice2"},
			{Index: 2, Line: 1, DeviceID: "device3", Secret: "secretfordevice3"},
			{Index: 3, Line: 3, DeviceID: "device4", Secret: "secretfordevice4"},
			{Index: 4, Line: 3, DeviceID: "device5", Secret: "secretfordevice5"},
		}},
		{"empty", "", nil},
		{"only-blank-lines", "\n \r\n\t\n", nil},
		{"one-pair-per-line-crlf", "a,secret-a,\r\nb,secret-b\r\n", []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-a"},
			{Index: 1, Line: 2, DeviceID: "b", Secret: "secret-b"},
		}},
		{"pair-split-over-lines", "a,\nsecret-a\nb\nsecret-b", []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-a"},
			{Index: 1, Line: 3, DeviceID: "b", Secret: "secret-b"},
		}},
		{"bom", "\xef\xbb\xbfa,secret-a", []E{{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-a"}}},
		{"tabs-and-spaces", " \ta\t , \t secret a \t", []E{{Index: 0, Line: 1, DeviceID: "a", Secret: "secret a"}}},
		{"quoted-keeps-comma-spaces-quote", `a, " s,e""c r " , b,"x"`, []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: ` s,e"c r `},
			{Index: 1, Line: 1, DeviceID: "b", Secret: "x"},
		}},
		{"quoted-then-spaces-then-newline", "\"a\"  \n\"s\"\t\n", []E{{Index: 0, Line: 1, DeviceID: "a", Secret: "s"}}},
		{"odd-number-of-fields", "a,secret-a,b", []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-a"},
			{Index: 1, Line: 1, DeviceID: "b", Problem: "device ID has no secret after it (the file has an odd number of fields)"},
		}},
		{"empty-field-between-commas", "a,,b,secret-b", []E{
			{Index: 0, Line: 1, DeviceID: "a", Problem: "empty field (two commas with nothing between them)"},
			{Index: 1, Line: 1, DeviceID: "b", Secret: "secret-b"},
		}},
		{"empty-field-blank-between-commas", "a, \t,b,secret-b", []E{
			{Index: 0, Line: 1, DeviceID: "a", Problem: "empty field (two commas with nothing between them)"},
			{Index: 1, Line: 1, DeviceID: "b", Secret: "secret-b"},
		}},
		{"leading-comma-on-line", "a,s1234567\n,b,s", []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "s1234567"},
			{Index: 1, Line: 2, Problem: "empty field (two commas with nothing between them)"},
			{Index: 2, Line: 2, DeviceID: "s", Problem: "device ID has no secret after it (the file has an odd number of fields)"},
		}},
		{"quoted-empty", `"",secret`, []E{{Index: 0, Line: 1, Problem: `empty field ("")`, Secret: ""}}},
		{"unterminated-quote", "a,s1234567,\nb,\"oops\nc,d\n", []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "s1234567"},
			{Index: 1, Line: 2, DeviceID: "b", Problem: "unterminated quote: the field opened on line 2 has no closing double quote"},
		}},
		{"bare-quote", `a,se"cret`, []E{{Index: 0, Line: 1, DeviceID: "a", Problem: `field contains a double quote; wrap the whole field in double quotes and write the quote as ""`}}},
		{"junk-after-quote", `"a"x,secret1`, []E{{Index: 0, Line: 1, DeviceID: "a", Problem: `unexpected 'x' after the closing double quote`}}},
		{"line-counts-in-quoted-newline", "\"a\nb\",s\nc,d", []E{
			{Index: 0, Line: 1, DeviceID: "a\nb", Secret: "s"},
			{Index: 1, Line: 3, DeviceID: "c", Secret: "d"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := readAll(t, tt.in)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestReaderPassesReadErrors(t *testing.T) {
	r := NewReader(io.MultiReader(strings.NewReader("a,secret"), errReader{}))
	if _, err := r.Next(); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Next error = %v, want the read error", err)
	}
}

// FuzzReader checks that no input panics, that every entry without a problem has a non-empty ID
// and secret free of unquoted separators, and that lines never go backwards.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		"device1, secretfordevice1, device2, secretfordevice2,  \n  \ndevice4, secretfordevice4",
		"\xef\xbb\xbfa,b", `"a""b",c`, "a,,b", "\"unterminated", "a\r\nb\r\n", ",", "\"a\"x,b", "a,b,c",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		entries := readAll(t, in)
		lastLine, lastIndex := 0, -1
		for _, e := range entries {
			if e.Index != lastIndex+1 {
				t.Fatalf("index %d after %d", e.Index, lastIndex)
			}
			lastIndex = e.Index
			if e.Line < lastLine || e.Line < 1 {
				t.Fatalf("line %d after %d", e.Line, lastLine)
			}
			lastLine = e.Line
			if e.Problem != "" {
				continue
			}
			if e.DeviceID == "" || e.Secret == "" {
				t.Fatalf("entry %+v accepted with an empty field", e)
			}
			if !strings.Contains(in, `"`) && (strings.ContainsAny(e.DeviceID+e.Secret, ",\n") ||
				strings.Trim(e.DeviceID, " \t") != e.DeviceID) {
				t.Fatalf("entry %+v holds a separator or untrimmed space from unquoted input", e)
			}
		}
		if lastLine > strings.Count(in, "\n")+1 {
			t.Fatalf("line %d beyond the input's %d lines", lastLine, strings.Count(in, "\n")+1)
		}
		_ = utf8.ValidString(in)
	})
}

// repeated yields n copies of b without holding them, as a huge field arriving over the network.
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

// A field longer than any valid one is read past, not held: the reader keeps its first maxKept
// bytes for the report, says how long it was, and still counts lines and quotes inside it.
func TestReaderHoldsNoHugeField(t *testing.T) {
	const huge = 5 << 20
	quoted := func(s string) io.Reader {
		return io.MultiReader(strings.NewReader(`"`), strings.NewReader(s), &repeated{'\n', huge}, strings.NewReader(`"`))
	}
	tests := []struct {
		name string
		in   io.Reader
		want []E
	}{
		{"unquoted-device-id", io.MultiReader(&repeated{'a', huge}, strings.NewReader(" \t, secret-1,\nb, secret-b")), []E{
			{Index: 0, Line: 1, DeviceID: strings.Repeat("a", maxKept), Problem: "device ID is 5242880 bytes long; at most 128 characters are allowed"},
			{Index: 1, Line: 2, DeviceID: "b", Secret: "secret-b"},
		}},
		{"unquoted-device-id-with-trailing-blanks", io.MultiReader(strings.NewReader("a"), &repeated{' ', huge}, strings.NewReader(", secret-1")), []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-1"},
		}},
		{"quoted-secret-over-lines", io.MultiReader(strings.NewReader("a, "), quoted(`x""y`), strings.NewReader(" ,\nb, secret-b")), []E{
			{Index: 0, Line: 1, DeviceID: "a", Problem: "secret is 5242883 bytes long; at most 256 characters are allowed"},
			{Index: 1, Line: huge + 2, DeviceID: "b", Secret: "secret-b"},
		}},
		{"unterminated-quote-before-megabytes", io.MultiReader(strings.NewReader("a, secret-a, \"b"), &repeated{'b', huge}), []E{
			{Index: 0, Line: 1, DeviceID: "a", Secret: "secret-a"},
			{Index: 1, Line: 1, Problem: "unterminated quote: the field opened on line 1 has no closing double quote"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.in)
			var got []E
			for {
				e, err := r.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, e)
				if cap(r.buf) > maxKept {
					t.Fatalf("the reader's field buffer grew to %d bytes; it may hold %d", cap(r.buf), maxKept)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

// A file of IDs only takes every field as an ID, over commas and lines alike, and reports a bad
// field with its index and line.
func TestIDReader(t *testing.T) {
	r := NewIDReader(strings.NewReader("\xef\xbb\xbfa, b\r\n\n\"c,d\"\ne\"f, g\n,h"))
	var got []E
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	want := []E{
		{Index: 0, Line: 1, DeviceID: "a"},
		{Index: 1, Line: 1, DeviceID: "b"},
		{Index: 2, Line: 3, DeviceID: "c,d"},
		{Index: 3, Line: 4, DeviceID: `e"f`, Problem: "field contains a double quote; wrap the whole field in double quotes and write the quote as \"\""},
		{Index: 4, Line: 4, DeviceID: "g"},
		{Index: 5, Line: 5, Problem: "empty field (two commas with nothing between them)"},
		{Index: 6, Line: 5, DeviceID: "h"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}
