// Package bulkfile reads the bodies of bulk registrations: the bulk upload file format (a CSV
// file of device IDs and secrets as alternating fields, in which line breaks only separate
// fields; NewReader) and the JSON body {"devices": [...]} (NewJSONReader, json.go). Both stream,
// so a file of a million devices is never held in memory, and keep the position of every entry
// they yield.
package bulkfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"devreg"
	"devreg/credential"
)

// maxKept is how many bytes of one field the reader holds. No valid field comes near it (a
// device ID has at most 128 characters, a secret 256, all ASCII), so of a longer field it keeps
// only the start, for the report, and reads past the rest: a field of gigabytes costs no memory.
const maxKept = 1024

// Reader yields the device entries of a bulk upload file. Entries the format itself makes invalid
// (an empty field, a stray quote, an ID without a secret) come with their Problem set; an
// unterminated quote ends the file. Reader implements devreg.EntrySource.
type Reader struct {
	r     *bufio.Reader
	line  int // line of the next byte
	index int // index of the next entry
	done  bool
	buf   []byte
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), line: 1, buf: make([]byte, 0, maxKept)}
}

// field is one field of the file.
type field struct {
	value   string // at most its first maxKept bytes
	size    int    // its length in bytes
	line    int
	problem string
	fatal   bool // the file cannot be read past this field
}

// kind is what a field is meant to hold, for the problem of one too long to hold it.
type kind struct {
	name     string
	maxChars int
}

var (
	deviceID = kind{"device ID", credential.MaxDeviceIDLength}
	secret   = kind{"secret", credential.MaxSecretLength}
)

// keep adds c to the field being read, as far as maxKept.
func (r *Reader) keep(f *field, c byte) {
	f.size++
	if len(r.buf) < maxKept {
		r.buf = append(r.buf, c)
	}
}

// finish ends the field, less the trailing bytes that are not part of it: its value is what was
// kept and, if it was too long to keep, its problem says so.
func (r *Reader) finish(f *field, k kind, trailing int) {
	f.size -= trailing
	f.value = string(r.buf[:min(len(r.buf), f.size)])
	if f.size > maxKept && f.problem == "" {
		f.problem = fmt.Sprintf("%s is %d bytes long; at most %d characters are allowed", k.name, f.size, k.maxChars)
	}
}

// nextID reads the device ID field an entry starts with, or io.EOF after the last entry.
func (r *Reader) nextID() (*field, error) {
	if r.done {
		return nil, io.EOF
	}
	if r.index == 0 && r.line == 1 {
		if err := r.skipBOM(); err != nil {
			return nil, err
		}
	}
	id, err := r.field(deviceID)
	if err != nil {
		return nil, err
	}
	if id == nil {
		r.done = true
		return nil, io.EOF
	}
	return id, nil
}

// Next returns the next entry, or io.EOF after the last one.
func (r *Reader) Next() (devreg.DeviceEntry, error) {
	id, err := r.nextID()
	if err != nil {
		return devreg.DeviceEntry{}, err
	}
	e := devreg.DeviceEntry{Index: r.index, Line: id.line, DeviceID: id.value}
	r.index++
	if id.problem != "" {
		e.Problem = id.problem
		if id.fatal {
			r.done = true
			return e, nil
		}
	}
	sec, err := r.field(secret)
	if err != nil {
		return devreg.DeviceEntry{}, err
	}
	switch {
	case sec == nil:
		r.done = true
		if e.Problem == "" {
			e.Problem = "device ID has no secret after it (the file has an odd number of fields)"
		}
	case sec.problem != "":
		if e.Problem == "" {
			e.Problem, e.Line = sec.problem, sec.line
		}
		r.done = sec.fatal
	case e.Problem == "":
		e.Secret = sec.value
	}
	return e, nil
}

func (r *Reader) skipBOM() error {
	b, err := r.r.Peek(3)
	if err == nil && string(b) == "\xef\xbb\xbf" {
		_, err = r.r.Discard(3)
		return err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// field returns the next field, meant to hold k, or nil at the end of the file.
func (r *Reader) field(k kind) (*field, error) {
	for {
		c, err := r.readByte()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		switch c {
		case ' ', '\t':
			continue
		case '\n':
			// Blank line, or the line break after a trailing comma: neither starts a field.
			r.line++
			continue
		case '\r':
			if next, _ := r.r.Peek(1); len(next) == 1 && next[0] == '\n' {
				continue // the '\n' counts the line
			}
			return r.unquoted(c, k)
		case ',':
			return &field{line: r.line, problem: "empty field (two commas with nothing between them)"}, nil
		case '"':
			return r.quoted(k)
		default:
			return r.unquoted(c, k)
		}
	}
}

// unquoted reads a field that starts with first and ends at a comma, a line break or the end.
func (r *Reader) unquoted(first byte, k kind) (*field, error) {
	f := &field{line: r.line}
	r.buf = r.buf[:0]
	r.keep(f, first)
	trailing := 0 // spaces and tabs at the end so far, which are not part of the field
	for {
		c, err := r.readByte()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if c == ',' {
			break
		}
		if c == '\n' {
			r.line++
			break
		}
		if c == '\r' {
			if next, _ := r.r.Peek(1); len(next) == 1 && next[0] == '\n' {
				continue
			}
		}
		if c == '"' && f.problem == "" {
			f.problem = "field contains a double quote; wrap the whole field in double quotes and write the quote as \"\""
		}
		if c == ' ' || c == '\t' {
			trailing++
		} else {
			trailing = 0
		}
		r.keep(f, c)
	}
	r.finish(f, k, trailing)
	return f, nil
}

// quoted reads a field after its opening quote, RFC 4180 style.
func (r *Reader) quoted(k kind) (*field, error) {
	f := &field{line: r.line}
	r.buf = r.buf[:0]
	for {
		c, err := r.readByte()
		if errors.Is(err, io.EOF) {
			f.problem = fmt.Sprintf("unterminated quote: the field opened on line %d has no closing double quote", f.line)
			f.fatal = true
			return f, nil
		}
		if err != nil {
			return nil, err
		}
		if c == '\n' {
			r.line++
		}
		if c != '"' {
			r.keep(f, c)
			continue
		}
		next, _ := r.r.Peek(1)
		if len(next) == 1 && next[0] == '"' {
			r.r.Discard(1)
			r.keep(f, '"')
			continue
		}
		break
	}
	r.finish(f, k, 0)
	if f.value == "" {
		f.problem = "empty field (\"\")"
	}
	// After the closing quote only spaces or tabs may come before the separator.
	for {
		c, err := r.readByte()
		if errors.Is(err, io.EOF) {
			return f, nil
		}
		if err != nil {
			return nil, err
		}
		switch c {
		case ' ', '\t':
		case ',':
			return f, nil
		case '\n':
			r.line++
			return f, nil
		case '\r':
			if next, _ := r.r.Peek(1); len(next) == 1 && next[0] == '\n' {
				continue
			}
			fallthrough
		default:
			if f.problem == "" {
				f.problem = fmt.Sprintf("unexpected %q after the closing double quote", c)
			}
		}
	}
}

func (r *Reader) readByte() (byte, error) { return r.r.ReadByte() }

// IDReader yields the device IDs of a file of device IDs only (an allow-list): the bulk upload
// file's syntax, each field one ID, separated by commas or line breaks. Entries the format makes
// invalid come with their Problem set, as Reader's do. IDReader implements devreg.EntrySource.
type IDReader struct{ r *Reader }

// NewIDReader returns an IDReader reading from r.
func NewIDReader(r io.Reader) *IDReader { return &IDReader{r: NewReader(r)} }

// Next returns the next ID as an entry without a secret, or io.EOF after the last one.
func (ir *IDReader) Next() (devreg.DeviceEntry, error) {
	r := ir.r
	id, err := r.nextID()
	if err != nil {
		return devreg.DeviceEntry{}, err
	}
	e := devreg.DeviceEntry{Index: r.index, Line: id.line, DeviceID: id.value, Problem: id.problem}
	r.index++
	r.done = id.fatal
	return e, nil
}
