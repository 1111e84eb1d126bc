package bulkfile

// The JSON registration parser as it was before issue 17: encoding/json's Decoder, one Decode per
// entry, behind a filter that bounds each value. FuzzJSONEntries holds the new parser to what this
// one accepts, yields and refuses. Kept as it was, but for its names.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"devreg"
	"devreg/internal/reqbody"
)

// refJSONEntries streams the devices of a JSON registration body, {"devices": [...]}, one at a time.
type refJSONEntries struct {
	dec     *json.Decoder
	index   int
	inArray bool
	started bool
}

func newRefJSONEntries(body io.Reader) devreg.EntrySource {
	dec := json.NewDecoder(&refJSONBounds{r: body, entryStart: -1})
	dec.DisallowUnknownFields()
	return reqbody.Entries(&refJSONEntries{dec: dec})
}

// refJSONBounds passes a JSON body through, following just enough of its syntax (strings, nesting)
// to refuse a value longer than maxJSONValue before the decoder has read it to its end.
type refJSONBounds struct {
	r          io.Reader
	off        int64 // offset of the next byte
	depth      int   // open objects and arrays
	inString   bool
	escaped    bool  // in a string, after a backslash
	runStart   int64 // offset after the last structural byte outside strings
	entryStart int64 // offset where the current element of the devices array began, or -1
	err        error // once refused, every later Read is too
}

// refTooLongError refuses a body with a value longer than maxJSONValue.
type refTooLongError struct {
	offset int64 // where the value starts
}

func (e *refTooLongError) Error() string {
	return fmt.Sprintf("JSON value at byte offset %d is longer than %d bytes", e.offset, maxJSONValue)
}

func (b *refJSONBounds) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	for i, c := range p[:n] {
		pos := b.off + int64(i)
		switch {
		case b.inString:
			switch {
			case b.escaped:
				b.escaped = false
			case c == '\\':
				b.escaped = true
			case c == '"':
				b.inString = false
			}
		case c == '"':
			b.inString = true
		case c == '{' || c == '[':
			// The body is {"devices": [...]}: depth 3 is an entry of the array.
			if b.depth++; b.depth == 3 {
				b.entryStart = pos
			}
			b.runStart = pos + 1
		case c == '}' || c == ']':
			if b.depth == 3 {
				b.entryStart = -1
			}
			b.depth--
			b.runStart = pos + 1
		case c == ',' || c == ':':
			b.runStart = pos + 1
		}
		switch {
		case b.entryStart >= 0 && pos-b.entryStart >= maxJSONValue:
			b.err = &refTooLongError{offset: b.entryStart}
		case pos-b.runStart >= maxJSONValue:
			b.err = &refTooLongError{offset: b.runStart}
		default:
			continue
		}
		b.off += int64(i)
		return i, b.err
	}
	b.off += int64(n)
	return n, err
}

type refJSONDevice struct {
	DeviceID *string `json:"device_id"`
	Secret   *string `json:"secret"`
	Cert     *string `json:"certificate"`
	CertSHA  *string `json:"certificate_sha256"`
}

func (j *refJSONEntries) Next() (devreg.DeviceEntry, error) {
	if !j.started {
		j.started = true
		if err := j.expectDelim('{', "a JSON object such as {\"devices\": [...]}"); err != nil {
			return devreg.DeviceEntry{}, err
		}
	}
	for !j.inArray {
		tok, err := j.dec.Token()
		if err != nil {
			return devreg.DeviceEntry{}, j.syntax(err)
		}
		if tok == json.Delim('}') {
			if _, err := j.dec.Token(); !errors.Is(err, io.EOF) {
				return devreg.DeviceEntry{}, devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: unexpected data after the object at byte offset %d", j.dec.InputOffset())
			}
			return devreg.DeviceEntry{}, io.EOF
		}
		if tok != "devices" {
			var clip devreg.ProblemList
			return devreg.DeviceEntry{}, devreg.Errorf(devreg.EBADREQUEST, "body is not valid: unknown field %s at byte offset %d; the body is {\"devices\": [...]}", clip.Clip(fmt.Sprint(tok)), j.dec.InputOffset())
		}
		if err := j.expectDelim('[', "\"devices\" to be an array"); err != nil {
			return devreg.DeviceEntry{}, err
		}
		j.inArray = true
	}
	if !j.dec.More() {
		if _, err := j.dec.Token(); err != nil { // the closing ']'
			return devreg.DeviceEntry{}, j.syntax(err)
		}
		j.inArray = false
		return j.Next()
	}
	var d refJSONDevice
	e := devreg.DeviceEntry{Index: j.index}
	j.index++
	err := j.dec.Decode(&d)
	var typ *json.UnmarshalTypeError
	var tooLong *refTooLongError
	switch {
	case errors.As(err, &typ):
		e.Problem = fmt.Sprintf("entry must be an object with string fields device_id and secret (%s is %s)", refOrEntry(typ.Field), typ.Value)
	case err != nil && isUnknownField(err):
		var clip devreg.ProblemList
		e.Problem = fmt.Sprintf("entry has an unknown field %s; only device_id and one of secret, certificate and certificate_sha256 are allowed", clip.Clip(strings.TrimPrefix(err.Error(), "json: unknown field ")))
	case errors.As(err, &tooLong):
		// Refused as malformed rather than reported as an invalid entry: the decoder cannot
		// yield the entry without holding all of it, and no valid entry comes near the bound.
		return e, devreg.Errorf(devreg.EBADREQUEST, "body is refused: device entry %d, at byte offset %d, is longer than %d KiB (a valid one is under 20 KiB, a certificate included); nothing was registered",
			e.Index, tooLong.offset, maxJSONValue>>10)
	case err != nil:
		return e, j.syntax(err)
	case d.DeviceID == nil:
		e.Problem = "entry has no device_id"
	case d.Secret == nil && d.Cert == nil && d.CertSHA == nil:
		e.Problem = "entry has no secret (or certificate, or certificate_sha256)"
	case (d.Secret != nil) && (d.Cert != nil || d.CertSHA != nil) || d.Cert != nil && d.CertSHA != nil:
		e.Problem = "entry has more than one of secret, certificate and certificate_sha256; send one"
	}
	if d.DeviceID != nil {
		e.DeviceID = *d.DeviceID
	}
	if e.Problem == "" {
		for _, f := range []struct {
			from *string
			to   *string
		}{{d.Secret, &e.Secret}, {d.Cert, &e.Certificate}, {d.CertSHA, &e.CertificateSHA256}} {
			if f.from != nil {
				*f.to = *f.from
			}
		}
	}
	return e, nil
}

func refOrEntry(field string) string {
	if field == "" {
		return "the entry"
	}
	return field
}

func (j *refJSONEntries) expectDelim(d json.Delim, want string) error {
	tok, err := j.dec.Token()
	if err != nil {
		return j.syntax(err)
	}
	if tok != d {
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid: expected %s at byte offset %d", want, j.dec.InputOffset())
	}
	return nil
}

func (j *refJSONEntries) syntax(err error) error {
	var tooLong *refTooLongError
	switch {
	case errors.As(err, &tooLong):
		return devreg.Errorf(devreg.EBADREQUEST, "body is refused: the JSON value at byte offset %d is longer than %d KiB, and nothing in a valid body is; nothing was registered",
			tooLong.offset, maxJSONValue>>10)
	case errors.Is(err, io.EOF):
		err = io.ErrUnexpectedEOF
	}
	return JSONError(err, j.dec.InputOffset())
}
