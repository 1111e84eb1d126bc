package bulkfile

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
)

// readEntries reads src to its end or first error.
func readEntries(src devreg.EntrySource) ([]devreg.DeviceEntry, error) {
	var entries []devreg.DeviceEntry
	for {
		e, err := src.Next()
		if err != nil {
			return entries, err
		}
		entries = append(entries, e)
	}
}

// chunked hands out its reader's bytes at most n at a time, as a slow network does.
type chunked struct {
	r io.Reader
	n int
}

func (c *chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// failAfter fails every read past its first n bytes, as http.MaxBytesReader does.
type failAfter struct {
	r io.Reader
	n int64
}

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, &http.MaxBytesError{Limit: 1}
	}
	n, err := f.r.Read(p[:min(int64(len(p)), f.n)])
	f.n -= int64(n)
	return n, err
}

// errText is what a client is told of err.
func errText(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "EOF"
	}
	return devreg.ErrorCode(err) + ": " + devreg.ErrorMessage(err)
}

// compareWithReference parses body with the new parser and the old one and fails unless they
// yield the same entries and end the same way. The new one reads the body in chunks of chunk
// bytes (all it asks for if 0), to show that where reads end changes nothing.
func compareWithReference(t *testing.T, body string, chunk int, limit int64) {
	t.Helper()
	open := func(r io.Reader) io.Reader {
		if limit > 0 {
			return &failAfter{r: r, n: limit}
		}
		return r
	}
	var r io.Reader = strings.NewReader(body)
	if chunk > 0 {
		r = &chunked{r: r, n: chunk}
	}
	got, gotErr := readEntries(NewJSONReader(open(r)))
	want, wantErr := readEntries(newRefJSONEntries(open(strings.NewReader(body))))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries differ from encoding/json's (-old +new):\n%s", diff)
	}
	if g, w := errText(gotErr), errText(wantErr); g != w {
		t.Errorf("ends with\n\t%s\nwant (encoding/json)\n\t%s", g, w)
	}
}

func FuzzJSONEntries(f *testing.F) {
	for _, s := range []string{
		`{"devices": [{"device_id": "device1", "secret": "secretfordevice1"}, {"device_id": "d2", "secret": "s2"}]}`,
		`{"devices":[{"device_id":"a","secret":"b"},{"DEVICE_ID":"c","ſecret":"d"}]}`,
		`{"devices": [{"device_id": "a\u00e9\ud83d\ude00\ud800x\"\\\/\b\f\n\r\t", "secret": "\udc00\ud800\ud800"}]}`,
		"{\"devices\": [{\"device_id\": \"\xff\xfe\xed\xa0\x80\", \"secret\": \"s\"}]}",
		`{"devices": [{"device_id": 1, "secret": "s"}, {"device_id": "x", "extra": {"a": [1, 2.5e-3, true, null]}}, "str", 12, null, true, [1], {}]}`,
		`{"devices": [{"device_id": "a", "device_id": null, "secret": "b"}, {"secret": "b"}, {"device_id": "a", "device_id": 5}]}`,
		`{"devices": [], "devices": [{"device_id": "a", "secret": "b"}]}  `,
		`{"devices": [{"device_id": "a", "secret": "b"},]}`,
		`{"devices": [{"device_id": "a", "secret": "b"} {}]}`,
		`{"devices": [{"device_id": "a", "secret": "b"}}`,
		`{"devices": [}`, `{"devices" [`, `{"devices": {}}`, `{"devices": 1e400}`, `{"devices": "x"}`, `{"other": []}`,
		`{"devices": []} x`, `{"devices": []} 1`, `{"devices": []} {`, `{"devices": []}]`, `[]`, ``, `   `, `1e999`, `"a"`, `{,`, `{"devices": [], }`,
		`{"devices": [{"device_id": tru}]}`, `{"devices": [{"device_id": -}]}`, `{"devices": [{"device_id": 1.}]}`, `{"devices": [{"device_id": 1e+}]}`,
		`{"devices": [{"device_id": "\x"}]}`, `{"devices": [{"device_id": "\u12G4"}]}`, "{\"devices\": [{\"device_id\": \"a\x01\"}]}",
		`{"devices": [{"device_id": "a"`, `{"devices": [{"device_id": "a", "secret": "b"}`, `{"devices": [{"device_id": "a", "secret": "b"}]`,
		`{"devices": [[[[[[[[[[]]]]]]]]]]]}`, `{"devi\u0063es": [{"secr\u0065t": "b", "device_id": "a"}]}`,
	} {
		f.Add(s, byte(' '), uint32(0), uint32(0), uint8(0), uint32(0))
	}
	f.Add(`{"devices": [{"device_id": "ok-1", "secret": "s"}, {"device_id": 1}]}`, byte('1'), uint32(63), uint32(70000), uint8(0), uint32(0))
	f.Add(`{"devices": [{"device_id": "ok-1", "secret": "s"},  {"device_id": "a"}]}`, byte(' '), uint32(50), uint32(65540), uint8(7), uint32(0))
	f.Add(`{"devices": [{"device_id": "ok-1", "secret": "s"}, {"device_id": "a"}]}`, byte('x'), uint32(64), uint32(65535), uint8(0), uint32(0))
	f.Add(`{"devices": [[]]}`, byte('['), uint32(15), uint32(10001), uint8(0), uint32(0))
	f.Add(`{"devices": [{"device_id": "a", "secret": "b"}]}`, byte(' '), uint32(46), uint32(10), uint8(3), uint32(30))
	f.Fuzz(func(t *testing.T, in string, fill byte, at, count uint32, chunk uint8, limit uint32) {
		// fill, at and count let the fuzzer make bodies past the 64 KiB bound: count copies of
		// fill inserted at byte at.
		count %= 200_000
		at = min(at, uint32(len(in)))
		body := in[:at] + strings.Repeat(string(fill), int(count)) + in[at:]
		compareWithReference(t, body, int(chunk), int64(limit))
	})
}

// The cases where encoding/json's Decoder, which the parser replaces, behaves in ways a scanner
// written from the JSON grammar would not; the parser keeps each (and the reference agrees).
func TestJSONEntriesKeepDecoderBehaviour(t *testing.T) {
	ok := func(id, secret string) devreg.DeviceEntry { return devreg.DeviceEntry{DeviceID: id, Secret: secret} }
	bad := func(id, problem string) devreg.DeviceEntry { return devreg.DeviceEntry{DeviceID: id, Problem: problem} }
	typeProblem := func(what string) string {
		return "entry must be an object with string fields device_id and secret (" + what + ")"
	}
	tests := []struct {
		name    string
		body    string
		entries []devreg.DeviceEntry // Index is set from the position
		end     string
	}{
		{"syntax-error-offset-counts-only-decoded-values",
			// The scanner counts the bytes of the key and of each entry, not the blanks, colons and
			// commas between them: 'x' is at byte 62, named as 59.
			`{"devices": [{"device_id": "a", "secret": "b"},  {"device_id": x}]}`,
			[]devreg.DeviceEntry{ok("a", "b")},
			"bad_request: body is not valid JSON: invalid character 'x' looking for beginning of value at byte offset 59"},
		{"token-error-offset-is-true", `{"devices": [{"device_id": "a", "secret": "b"}}`,
			[]devreg.DeviceEntry{ok("a", "b")},
			"bad_request: body is not valid JSON: invalid character '}' after array element at byte offset 46"},
		{"missing-comma", `{"devices": [{"device_id": "a", "secret": "b"} {}]}`,
			[]devreg.DeviceEntry{ok("a", "b")},
			"bad_request: body is not valid JSON: expected comma after array element at byte offset 47"},
		{"no-context-after-open-brace", `{,`, nil,
			"bad_request: body is not valid JSON: invalid character ',' at byte offset 1"},
		{"number-too-big-for-float64", `  {"devices": 1e400}`, nil,
			`bad_request: body is not valid: field "" must be a float64, not number 1e400 (byte offset 6)`},
		{"devices-key-is-case-sensitive", `{"Devices": []}`, nil,
			`bad_request: body is not valid: unknown field Devices at byte offset 10; the body is {"devices": [...]}`},
		{"devices-key-may-be-escaped", `{"devi\u0063es": []}`, nil, "EOF"},
		{"entry-keys-fold-case",
			`{"devices": [{"DEVICE_ID": "a", "ſecret": "b"}, {"device_id": "a", "device_id": null, "secret": "b"}, {"device_id": "a", "device_id": 7, "device_id": "c", "secret": "b"}]}`,
			[]devreg.DeviceEntry{ok("a", "b"), bad("", "entry has no device_id"), bad("c", typeProblem("device_id is number"))},
			"EOF"},
		{"strings-decode-as-encoding-json",
			`{"devices": [{"device_id": "\ud83d\ude00 \ud800 \udc00 \ud800\ud800 \u00e9\/", "secret": "` + "\xff\xed\xa0\x80" + `"}]}`,
			[]devreg.DeviceEntry{ok("😀 \uFFFD \uFFFD \uFFFD\uFFFD é/", "\uFFFD\uFFFD\uFFFD\uFFFD")},
			"EOF"},
		{"every-bad-entry-reported",
			`{"devices": [{"device_id": "a"}, "s", 1, null, true, [], {"x": 1, "device_id": 5}, {"device_id": {}, "y": 2}, {"device_id": "d", "secret": "e"}]}`,
			[]devreg.DeviceEntry{bad("a", "entry has no secret (or certificate, or certificate_sha256)"), bad("", typeProblem("the entry is string")), bad("", typeProblem("the entry is number")),
				bad("", "entry has no device_id"), bad("", typeProblem("the entry is bool")), bad("", typeProblem("the entry is array")),
				bad("", `entry has an unknown field "x"; only device_id and one of secret, certificate and certificate_sha256 are allowed`), bad("", typeProblem("device_id is object")), ok("d", "e")},
			"EOF"},
		{"nesting-10000-deep-is-a-type-problem",
			`{"devices": [{"device_id": ` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}]}`,
			[]devreg.DeviceEntry{bad("", typeProblem("device_id is array"))}, "EOF"},
		{"nesting-10001-deep-is-malformed",
			`{"devices": [{"device_id": ` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}]}`, nil,
			"bad_request: body is not valid JSON: invalid character '[' exceeded max depth at byte offset 10023"},
		{"trailing-blanks-under-the-bound", `{"devices": []}` + strings.Repeat(" ", maxJSONValue), nil, "EOF"},
		{"trailing-blanks-over-the-bound", `{"devices": []}` + strings.Repeat(" ", maxJSONValue+1), nil,
			"bad_request: body is not valid JSON: unexpected data after the object at byte offset 15"},
		{"devices-twice", `{"devices": [{"device_id": "a", "secret": "b"}], "devices": [{"device_id": "c", "secret": "d"}]}`,
			[]devreg.DeviceEntry{ok("a", "b"), ok("c", "d")}, "EOF"},
		{"ends-after-entry", `{"devices": [{"device_id": "a", "secret": "b"},   `,
			[]devreg.DeviceEntry{ok("a", "b")}, "bad_request: body is not valid JSON: it ends early at byte offset 47"},
		{"ends-in-blanks", `{"devices": [   `, nil, "bad_request: body is not valid JSON: it ends early at byte offset 13"},
		{"trailing-string-unterminated", `{"devices": []} "abc`, nil,
			"bad_request: body is not valid JSON: unexpected data after the object at byte offset 16"},
		{"trailing-number", `{"devices": []} 12`, nil,
			"bad_request: body is not valid JSON: unexpected data after the object at byte offset 18"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range tt.entries {
				tt.entries[i].Index = i
			}
			got, err := readEntries(NewJSONReader(strings.NewReader(tt.body)))
			if diff := cmp.Diff(tt.entries, got); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
			if g := errText(err); g != tt.end {
				t.Errorf("ends with\n\t%s\nwant\n\t%s", g, tt.end)
			}
			for _, chunk := range []int{0, 1, 7} {
				compareWithReference(t, tt.body, chunk, 0)
			}
		})
	}
}

// A read error ends the body where the parser needs the byte it could not read: a body over the
// server's limit is ETOOLARGE, but, as before, only "unexpected data" once the object has closed.
func TestJSONEntriesReadErrors(t *testing.T) {
	body := `{"devices": [{"device_id": "a", "secret": "b"}, {"device_id": "c", "secret": "d"}]}`
	for limit := int64(1); limit <= int64(len(body)); limit++ {
		compareWithReference(t, body+"   ", 0, limit)
	}
	_, err := readEntries(NewJSONReader(&failAfter{r: strings.NewReader(body), n: 60}))
	if devreg.ErrorCode(err) != devreg.ETOOLARGE {
		t.Errorf("cut at 60 bytes: %v; want too large", err)
	}
}

// counting counts the bytes read through it.
type counting struct {
	r io.Reader
	n int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// An attacker's body is refused after a bounded read, however it is built, and the parser's
// buffer stays small.
func TestJSONEntriesMemoryIsBounded(t *testing.T) {
	const huge = 256 << 20
	entry := `{"device_id": "dev-1", "secret": "abcdefghijklmnop"}`
	tests := []struct {
		name string
		body func() io.Reader
	}{
		{"one-long-secret", func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"devices": [{"device_id": "a", "secret": "`), &repeated{'s', huge})
		}},
		{"blanks-after-comma", func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"devices": [`+entry+`,`), &repeated{' ', huge})
		}},
		{"blanks-before-comma", func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"devices": [`+entry), &repeated{'\n', huge})
		}},
		{"deep-nesting", func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"devices": [{"device_id": `), &repeated{'[', huge})
		}},
		{"long-key", func() io.Reader { return io.MultiReader(strings.NewReader(`{"`), &repeated{'k', huge}) }},
		{"long-number-as-devices", func() io.Reader { return io.MultiReader(strings.NewReader(`{"devices": 1`), &repeated{'0', huge}) }},
		{"many-fields", func() io.Reader {
			return io.MultiReader(strings.NewReader(`{"devices": [{"device_id": "a"`), strings.NewReader(strings.Repeat(`, "secret": "abcdefgh"`, huge/20)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1000} {
				var r io.Reader = tt.body()
				if chunk > 0 {
					r = &chunked{r: r, n: chunk}
				}
				c := &counting{r: r}
				j := newJSONParser(c)
				_, err := readEntries(j)
				if devreg.ErrorCode(err) != devreg.EBADREQUEST {
					t.Fatalf("%v; want a bad request", err)
				}
				if c.n > maxStep+readSize {
					t.Errorf("read %d bytes before refusing the body; want at most %d", c.n, maxStep+readSize)
				}
				if cap(j.buf) > 2*maxStep {
					t.Errorf("buffer grew to %d bytes", cap(j.buf))
				}
			}
		})
	}
	// A body of many valid entries keeps the buffer at its first size.
	body := `{"devices": [` + strings.Repeat(entry+",", 50_000) + entry + `]}`
	j := newJSONParser(strings.NewReader(body))
	entries, err := readEntries(j)
	if !errors.Is(err, io.EOF) || len(entries) != 50_001 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	if cap(j.buf) != readSize {
		t.Errorf("buffer grew to %d bytes for small entries", cap(j.buf))
	}
}

// Around the maxJSONValue bound, byte by byte, each kind of run and entry is refused exactly
// where the old filter refused it.
func TestJSONEntriesAtTheBound(t *testing.T) {
	entry := `{"device_id": "ok", "secret": "s"}`
	// Each body is before, then n bytes of rep, then after.
	shapes := []struct{ name, before, rep, after string }{
		{"secret", `{"devices": [{"device_id": "a", "secret": "`, "s", `"}]}`},
		{"escaped-secret", `{"devices": [{"device_id": "a", "secret": "`, `\"`, `"}]}`},
		{"string-entry", `{"devices": [` + entry + `, "`, "s", `"]}`},
		{"number-entry", `{"devices": [`, "1", `]}`},
		{"blanks-after-comma", `{"devices": [` + entry + `,`, " ", entry + `]}`},
		{"blanks-before-comma", `{"devices": [` + entry, " ", `,` + entry + `]}`},
		{"blanks-after-bracket", `{"devices": [`, " ", `"x"]}`},
		{"blanks-in-entry", `{"devices": [{"device_id": "a",`, " ", `"secret": "b"}]}`},
		{"nested-in-entry", `{"devices": [{"x": [`, "1,", `1]}]}`},
		{"key", `{"`, "k", `": []}`},
		{"blanks-after-devices", `{"devices"`, "\t", `: []}`},
		{"devices-string", `{"devices": "`, "s", `"}`},
		{"leading-blanks", ``, "\n", `{"devices": []}`},
		{"trailing-string", `{"devices": []} "`, "s", ``},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			for n := maxJSONValue - 40; n <= maxJSONValue+4; n++ {
				body := sh.before + strings.Repeat(sh.rep, n/len(sh.rep)) + sh.after
				compareWithReference(t, body, 0, 0)
				if n%9 == 0 {
					compareWithReference(t, body, 4093, 0)
				}
				if t.Failed() {
					t.Fatalf("n = %d", n)
				}
			}
		})
	}
}
