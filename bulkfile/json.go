package bulkfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"devreg"
	"devreg/internal/reqbody"
)

// This file parses the JSON registration body, {"devices": [{"device_id": "...", "secret":
// "..."}, ...]}, one entry at a time. It used to be encoding/json's Decoder, one Decode per entry;
// this scanner knows the shape and needs a fifth of the instructions, and it keeps the Decoder's
// behaviour byte for byte: the same bodies accepted, the same entries, the same problems and the
// same errors at the same offsets (FuzzJSONEntries compares the two). Where the Decoder's
// behaviour is odd, the comments say so; keeping it means a client sees no change.

// maxJSONValue bounds what the parser holds at once, however big the body: one string, number or
// run of blanks, and one entry of the devices array. A valid entry with a secret, even with every
// character escaped, is under 3 KiB; one with a certificate (at most devcert.MaxPEMSize) under 20.
//
// The rule is the one the Decoder was held to by a filter in front of it: a run of bytes between
// two structural bytes ({}[],: outside strings) may not reach maxJSONValue bytes, nor may an
// object or array that is an entry; the body is refused at the first byte that breaks it, once
// the parser needs that byte.
const maxJSONValue = 64 << 10

// maxStep is more than one step of the parser (one token of the body's object, or one entry with
// the comma and blanks before it) reads past the end of the last structural byte unless a value
// breaks maxJSONValue: blanks, a comma, blanks and an entry, each under maxJSONValue. It bounds
// the buffer, so memory stays bounded for any body.
const maxStep = 4 * maxJSONValue

// maxNestingDepth is encoding/json's bound on nesting within one decoded value.
const maxNestingDepth = 10000

// The parser's states: where in {"devices": [...]} the next step starts.
const (
	stTop        = iota // before the body's object
	stFirstKey          // after its '{'
	stKey               // after a member of it
	stColon             // after the key "devices"
	stFirstEntry        // after the array's '['
	stEntry             // after an entry
	stTrail             // after the object's '}'
)

// jsonEntries yields the entries of a JSON registration body. It reads the body into a buffer
// and parses one step at a time from it: a step either completes within the bytes at hand or
// needs more, and then it runs again from its start once more bytes have come (twice as many,
// so a body that arrives a byte at a time costs no more than one that arrives whole).
type jsonEntries struct {
	r    io.Reader
	buf  []byte
	base int64 // body offset of buf[0]
	pos  int   // where the next step starts in buf
	rerr error // how the body ends after buf: io.EOF, or the error of a read; nil while it goes on
	err  error // what Next returns from now on, once the body failed or ended

	at jsonPos // the parse state at pos

	// The maxJSONValue rule for the current step: bytes before checked cannot break it; bound
	// follows the rule's state over the bytes from pos to bound.off, and tooLong is set once it
	// has found the byte that breaks it, at cut.
	checked int64
	bound   boundState
	tooLong *tooLongError
	cut     int64

	scan valueScanner
}

// jsonPos is the parse state between two steps.
type jsonPos struct {
	state int
	index int // of the next entry
	// scanned is what encoding/json's scanner has counted so far: the bytes of each value it
	// decoded (the keys and entries), not the blanks, commas and colons between them. A syntax
	// error inside a value names that count, plus the bytes of the value up to the bad one, as
	// its "byte offset"; the other errors name the true offset. Odd, but it is what clients got.
	scanned int64
	// runStart is the body offset after the last structural byte, where the maxJSONValue rule
	// counts a run from.
	runStart int64
}

func NewJSONReader(body io.Reader) devreg.EntrySource {
	return reqbody.Entries(newJSONParser(body))
}

func newJSONParser(body io.Reader) *jsonEntries {
	j := &jsonEntries{r: body, buf: make([]byte, 0, readSize)}
	j.startStep()
	return j
}

// readSize is how much the parser asks of the body at a time.
const readSize = 64 << 10

// tooLongError refuses a body with a value longer than maxJSONValue.
type tooLongError struct {
	offset int64 // where the value starts
}

func (e *tooLongError) Error() string {
	return fmt.Sprintf("JSON value at byte offset %d is longer than %d bytes", e.offset, maxJSONValue)
}

// step is what one step of the parser did.
type step struct {
	more  bool // it needs a byte past the ones it was given, and the body may have it
	n     int  // bytes it consumed
	next  jsonPos
	entry devreg.DeviceEntry
	yield bool  // entry is the next entry
	err   error // the body fails, or io.EOF: it ended well
}

func (j *jsonEntries) Next() (devreg.DeviceEntry, error) {
	for j.err == nil {
		avail := j.buf[j.pos:]
		off := j.base + int64(j.pos)
		// The step sees what the Decoder saw through its filter: the body up to the byte that
		// breaks the maxJSONValue rule, and then the rule's error.
		view, end := avail, j.rerr
		switch {
		case j.tooLong != nil:
			view, end = avail[:j.cut-off], j.tooLong
		case off+int64(len(avail)) > j.checked:
			view, end = avail[:j.checked-off], nil
		}
		s := j.at.parse(&j.scan, view, off, end)
		if s.more {
			if j.tooLong == nil && off+int64(len(view)) == j.checked && len(view) < len(avail) {
				j.checkBound(avail, off)
			} else if err := j.fill(); err != nil {
				j.err = err
			}
			continue
		}
		if s.err != nil {
			j.err = s.err
			break
		}
		j.pos += s.n
		j.at = s.next
		j.startStep()
		if s.yield {
			return s.entry, nil
		}
	}
	return devreg.DeviceEntry{}, j.err
}

// startStep sets the maxJSONValue rule up for a step starting at pos. No byte before
// runStart+maxJSONValue can break it: every run and entry the step reads starts at or after
// runStart.
func (j *jsonEntries) startStep() {
	j.checked = j.at.runStart + maxJSONValue
	depth := 0 // of objects and arrays open at pos
	switch j.at.state {
	case stFirstKey, stKey, stColon:
		depth = 1
	case stFirstEntry, stEntry:
		depth = 2
	}
	j.bound = boundState{off: j.base + int64(j.pos), depth: depth, runStart: j.at.runStart, entryStart: -1}
	j.tooLong = nil
}

// checkBound follows the maxJSONValue rule over the bytes of the current step it has not seen yet
// (starting at body offset off), for a step longer than startStep could clear at once.
func (j *jsonEntries) checkBound(avail []byte, off int64) {
	from := j.bound.off - off
	if cut, tooLong := j.bound.scan(avail[from:]); tooLong != nil {
		j.tooLong, j.cut = tooLong, cut
		return
	}
	j.checked = off + int64(len(avail))
}

// fill reads more of the body: at least twice the bytes the current step has, unless the body
// ends first.
func (j *jsonEntries) fill() error {
	if j.rerr != nil {
		return errors.New("json registration parser: a step asked for more than the body has") // not reached
	}
	if j.pos > 0 {
		n := copy(j.buf, j.buf[j.pos:])
		j.base += int64(j.pos)
		j.buf = j.buf[:n]
		j.pos = 0
	}
	have := len(j.buf)
	if have >= maxStep {
		return errors.New("json registration parser: a step went past maxStep") // not reached: the rule stops it
	}
	want := min(2*have+1, maxStep)
	if cap(j.buf) < want {
		j.buf = append(make([]byte, 0, max(2*cap(j.buf), want)), j.buf...)
	}
	for empty := 0; len(j.buf) < want; {
		n, err := j.r.Read(j.buf[len(j.buf):cap(j.buf)])
		j.buf = j.buf[:len(j.buf)+n]
		if err != nil {
			j.rerr = err
			break
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			j.rerr = io.ErrNoProgress
			break
		}
	}
	return nil
}

// boundState follows the maxJSONValue rule byte by byte, as the filter in front of the Decoder
// did: just enough of the syntax (strings, nesting) to know the runs and the entries.
type boundState struct {
	off        int64 // offset of the next byte
	depth      int   // open objects and arrays
	inString   bool
	escaped    bool  // in a string, after a backslash
	runStart   int64 // offset after the last structural byte outside strings
	entryStart int64 // offset where the current element of the devices array began, or -1
}

// scan follows the rule over b, the bytes from off on. It returns the body offset of the first
// byte that breaks the rule and the error for it, or nil if none does.
func (b *boundState) scan(p []byte) (int64, *tooLongError) {
	for i, c := range p {
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
			return pos, &tooLongError{offset: b.entryStart}
		case pos-b.runStart >= maxJSONValue:
			return pos, &tooLongError{offset: b.runStart}
		}
	}
	b.off += int64(len(p))
	return 0, nil
}

// parse parses one step from b, the body's bytes from offset off on. end is what follows b: nil
// if the body may go on (the step then says when it needs more), else io.EOF or the error that
// ends it.
//
// Each step does what the Decoder's calls did at this point (Token, More, Decode), with their
// lookahead: a step needs exactly the bytes the Decoder needed, so the body's end or a read
// error shows at the same point, with the same message and offset.
func (p jsonPos) parse(s *valueScanner, b []byte, off int64, end error) step {
	switch p.state {
	case stTop:
		return p.top(s, b, off, end)
	case stFirstKey, stKey:
		return p.key(s, b, off, end)
	case stColon:
		return p.colon(s, b, off, end)
	case stFirstEntry, stEntry:
		return p.element(s, b, off, end)
	default:
		return p.trail(s, b, off, end)
	}
}

// top reads the body's opening '{' (Token).
func (p jsonPos) top(s *valueScanner, b []byte, off int64, end error) step {
	i := skipSpace(b, 0)
	if i == len(b) {
		return peekShort(end, off)
	}
	switch c := b[i]; c {
	case '{':
		p.state, p.runStart = stFirstKey, off+int64(i)+1
		return step{n: i + 1, next: p}
	case '[':
		return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid: expected %s at byte offset %d", "a JSON object such as {\"devices\": [...]}", off+int64(i)+1)}
	case ']', '}', ',', ':':
		return step{err: tokenError(c, " looking for beginning of value", off+int64(i))}
	}
	return p.notArray(s, b, i, off, end, "a JSON object such as {\"devices\": [...]}")
}

// notArray reads a value other than an object or array where the body's object or the devices
// array belongs (Token decodes it), to refuse it with the Decoder's message.
func (p jsonPos) notArray(s *valueScanner, b []byte, i int, off int64, end error, want string) step {
	e := s.topScalar(b, i, end)
	switch e {
	case short:
		return step{more: true}
	case bad:
		return step{err: p.syntaxError(s, i)}
	case ended:
		return step{err: bodyEnded(end, off+int64(i))}
	}
	if lit := string(b[i:e]); isNumberStart(b[i]) {
		if _, err := strconv.ParseFloat(lit, 64); err != nil {
			// The Decoder decoded it into an any, a float64, which a number this big is not.
			return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid: field %q must be a %s, not %s (byte offset %d)", "", "float64", "number "+lit, len(lit)+1)}
		}
	}
	return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid: expected %s at byte offset %d", want, off+int64(e))}
}

// key reads the next key of the body's object, or its closing '}' (Token).
func (p jsonPos) key(s *valueScanner, b []byte, off int64, end error) step {
	i := skipSpace(b, 0)
	if i == len(b) {
		return peekShort(end, off)
	}
	c := b[i]
	if c == '}' {
		p.state, p.runStart = stTrail, off+int64(i)+1
		return step{n: i + 1, next: p}
	}
	if p.state == stKey {
		if c != ',' {
			return step{err: tokenError(c, " after object key:value pair", off+int64(i))}
		}
		p.runStart = off + int64(i) + 1
		if i = skipSpace(b, i+1); i == len(b) {
			return peekShort(end, p.runStart)
		}
		if c = b[i]; c != '"' {
			return step{err: tokenError(c, " looking for beginning of object key string", off+int64(i))}
		}
	} else if c != '"' {
		// The Decoder's Token names no context for a bad byte right after '{'.
		return step{err: tokenError(c, "", off+int64(i))}
	}
	e := s.topScalar(b, i, end)
	switch e {
	case short:
		return step{more: true}
	case bad:
		return step{err: p.syntaxError(s, i)}
	case ended:
		return step{err: bodyEnded(end, off+int64(i))}
	}
	p.scanned += int64(e - i)
	if key := unquote(b[i:e]); key != "devices" {
		var clip devreg.ProblemList
		return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid: unknown field %s at byte offset %d; the body is {\"devices\": [...]}", clip.Clip(key), off+int64(e))}
	}
	p.state = stColon
	return step{n: e, next: p}
}

// colon reads the ':' after the key "devices" and the '[' of its value (Token).
func (p jsonPos) colon(s *valueScanner, b []byte, off int64, end error) step {
	i := skipSpace(b, 0)
	if i == len(b) {
		return peekShort(end, off)
	}
	if c := b[i]; c != ':' {
		return step{err: tokenError(c, " after object key", off+int64(i))}
	}
	p.runStart = off + int64(i) + 1
	if i = skipSpace(b, i+1); i == len(b) {
		return peekShort(end, p.runStart)
	}
	switch c := b[i]; c {
	case '[':
		p.state, p.runStart = stFirstEntry, off+int64(i)+1
		return step{n: i + 1, next: p}
	case '{':
		return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid: expected %s at byte offset %d", "\"devices\" to be an array", off+int64(i)+1)}
	case ']', '}', ',', ':':
		return step{err: tokenError(c, " looking for beginning of value", off+int64(i))}
	}
	return p.notArray(s, b, i, off, end, "\"devices\" to be an array")
}

// element reads the next entry of the devices array (More, then Decode), or its closing ']'
// (Token).
func (p jsonPos) element(s *valueScanner, b []byte, off int64, end error) step {
	i := skipSpace(b, 0)
	if i == len(b) {
		return peekShort(end, off)
	}
	first := p.state == stFirstEntry
	switch c := b[i]; {
	case c == ']':
		p.state, p.runStart = stKey, off+int64(i)+1
		return step{n: i + 1, next: p}
	case c == '}' && first:
		return step{err: tokenError(c, " looking for beginning of value", off+int64(i))}
	case c == '}':
		return step{err: tokenError(c, " after array element", off+int64(i))}
	case !first && c != ',':
		return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: %s at byte offset %d", "expected comma after array element", off+int64(i))}
	case !first:
		// Decode reads the entry from just after the comma, blanks included.
		i++
		p.runStart = off + int64(i)
	}
	e := devreg.DeviceEntry{Index: p.index}
	p.index++
	n := s.entry(b, i, end, &e)
	switch n {
	case short:
		return step{more: true}
	case bad:
		return step{err: p.syntaxError(s, i)}
	case ended:
		var tooLong *tooLongError
		if errors.As(end, &tooLong) {
			// Refused as malformed rather than reported as an invalid entry: no valid entry
			// comes near the bound.
			return step{err: devreg.Errorf(devreg.EBADREQUEST, "body is refused: device entry %d, at byte offset %d, is longer than %d KiB (a valid one is under 20 KiB, a certificate included); nothing was registered",
				e.Index, tooLong.offset, maxJSONValue>>10)}
		}
		return step{err: bodyEnded(end, off+int64(i))}
	}
	p.scanned += int64(n - i)
	if s.container {
		p.runStart = off + int64(n)
	}
	p.state = stEntry
	return step{n: n, next: p, entry: e, yield: true}
}

// trail checks that nothing but blanks follows the body's object (Token must say io.EOF).
func (p jsonPos) trail(s *valueScanner, b []byte, off int64, end error) step {
	i := skipSpace(b, 0)
	if i == len(b) {
		if end == nil {
			return step{more: true}
		}
		if end == io.EOF {
			return step{err: io.EOF}
		}
		return step{err: unexpectedData(off)}
	}
	switch b[i] {
	case '{', '[':
		return step{err: unexpectedData(off + int64(i) + 1)}
	case ']', '}', ',', ':':
		return step{err: unexpectedData(off + int64(i))}
	}
	switch e := s.topScalar(b, i, end); e {
	case short:
		return step{more: true}
	case bad, ended:
		return step{err: unexpectedData(off + int64(i))}
	default:
		return step{err: unexpectedData(off + int64(e))}
	}
}

func unexpectedData(at int64) error {
	return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: unexpected data after the object at byte offset %d", at)
}

// syntaxError is the error for the syntax error s found in a value that the Decoder started
// reading at b[start], at the offset its scanner counted.
func (p jsonPos) syntaxError(s *valueScanner, start int) error {
	return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: %s at byte offset %d", s.badMessage(), p.scanned+int64(s.badAt-start)+1)
}

// peekShort is the outcome of a step that needs a byte past b where the Decoder skipped blanks
// between tokens: more if the body may go on, else the failure of its end, at offset at.
func peekShort(end error, at int64) step {
	if end == nil {
		return step{more: true}
	}
	return step{err: bodyEnded(end, at)}
}

// bodyEnded explains a body that ended (io.EOF), was refused by the maxJSONValue rule or failed to
// read, where the parser needed more of it; at is where the Decoder stood.
func bodyEnded(err error, at int64) error {
	var tooLong *tooLongError
	switch {
	case errors.As(err, &tooLong):
		return devreg.Errorf(devreg.EBADREQUEST, "body is refused: the JSON value at byte offset %d is longer than %d KiB, and nothing in a valid body is; nothing was registered",
			tooLong.offset, maxJSONValue>>10)
	case errors.Is(err, io.EOF):
		err = io.ErrUnexpectedEOF
	}
	return JSONError(err, at)
}

func tokenError(c byte, context string, at int64) error {
	return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: %s at byte offset %d", "invalid character "+quoteChar(c)+context, at)
}

// quoteChar formats c as encoding/json's errors do.
func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(c))
	return "'" + s[1:len(s)-1] + "'"
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool {
	return c <= ' ' && (c == ' ' || c == '\t' || c == '\r' || c == '\n')
}

func isNumberStart(c byte) bool { return c == '-' || '0' <= c && c <= '9' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// valueScanner checks and reads one value as encoding/json's scanner does, over bytes held in
// memory. Its methods return the index after what they read, or one of these:
const (
	short = -1 - iota // the bytes ran out and more may come
	bad               // a syntax error, at badAt
	ended             // the bytes ran out and the body ends there (with end, as io.EOF or an error)
)

type valueScanner struct {
	badAt   int    // index of the byte a syntax error names
	badByte byte   // that byte
	context string // of the syntax error: "in string literal", ...
	plain   bool   // set by str: the string holds no escape and only ASCII, so it is its own value
	final   bool   // set by num when it runs out: the number could end there
	// container is set by entry: the entry was an object or array, whose closing byte is
	// structural (the maxJSONValue rule's run restarts after it).
	container bool
	stack     []bool // by value: the open objects (true) and arrays
}

func (s *valueScanner) failByte(b []byte, i int, context string) int {
	s.badAt, s.badByte, s.context = i, b[i], context
	return bad
}

func (s *valueScanner) badMessage() string {
	return "invalid character " + quoteChar(s.badByte) + " " + s.context
}

// needMore is the result where a value needs byte len(b) and does not have it.
func needMore(end error) int {
	if end == nil {
		return short
	}
	return ended
}

// strSafe holds the bytes a string may hold as they are: not a quote, backslash, control
// character or the start of a multi-byte UTF-8 sequence (which unquote must check).
var strSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads the string starting at b[i] == '"' up to its closing quote.
func (s *valueScanner) str(b []byte, i int) int {
	s.plain = true
	for i++; i < len(b); i++ {
		c := b[i]
		if strSafe[c] {
			continue
		}
		switch {
		case c == '"':
			return i + 1
		case c == '\\':
			s.plain = false
			if i++; i == len(b) {
				return short
			}
			switch b[i] {
			case 'b', 'f', 'n', 'r', 't', '\\', '/', '"':
			case 'u':
				for range 4 {
					if i++; i == len(b) {
						return short
					}
					if c := b[i]; !isDigit(c) && !('a' <= c && c <= 'f') && !('A' <= c && c <= 'F') {
						return s.failByte(b, i, "in \\u hexadecimal character escape")
					}
				}
			default:
				return s.failByte(b, i, "in string escape code")
			}
		case c < 0x20:
			return s.failByte(b, i, "in string literal")
		default:
			s.plain = false
		}
	}
	return short
}

// num reads the number starting at b[i] (a '-' or a digit) up to the first byte after it, which
// it needs to see; if the bytes run out first, final says whether the number could end there.
func (s *valueScanner) num(b []byte, i int) int {
	s.final = false
	if b[i] == '-' {
		if i++; i == len(b) {
			return short
		}
		if !isDigit(b[i]) {
			return s.failByte(b, i, "in numeric literal")
		}
	}
	if b[i] == '0' {
		i++
	} else {
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
	}
	if s.final = true; i == len(b) {
		return short
	}
	if b[i] == '.' {
		if s.final = false; i+1 == len(b) {
			return short
		}
		if i++; !isDigit(b[i]) {
			return s.failByte(b, i, "after decimal point in numeric literal")
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
		if s.final = true; i == len(b) {
			return short
		}
	}
	if b[i] == 'e' || b[i] == 'E' {
		if s.final = false; i+1 == len(b) {
			return short
		}
		if i++; b[i] == '+' || b[i] == '-' {
			if i++; i == len(b) {
				return short
			}
		}
		if !isDigit(b[i]) {
			return s.failByte(b, i, "in exponent of numeric literal")
		}
		for i++; i < len(b) && isDigit(b[i]); i++ {
		}
		if s.final = true; i == len(b) {
			return short
		}
	}
	return i
}

// lit reads the literal word (true, false or null) starting at b[i].
func (s *valueScanner) lit(b []byte, i int, word string) int {
	for k := 1; k < len(word); k++ {
		if i+k == len(b) {
			return short
		}
		if b[i+k] != word[k] {
			return s.failByte(b, i+k, "in literal "+word+" (expecting '"+word[k:k+1]+"')")
		}
	}
	return i + len(word)
}

// scalar reads the string, number or literal starting at b[i], or fails at b[i] if no value
// starts there.
func (s *valueScanner) scalar(b []byte, i int) int {
	switch c := b[i]; {
	case c == '"':
		return s.str(b, i)
	case isNumberStart(c):
		return s.num(b, i)
	case c == 't':
		return s.lit(b, i, "true")
	case c == 'f':
		return s.lit(b, i, "false")
	case c == 'n':
		return s.lit(b, i, "null")
	}
	return s.failByte(b, i, "looking for beginning of value")
}

// topScalar reads a string, number or literal that the Decoder decoded on its own (a key of the
// body's object, or a value it refused), starting at b[i]. Like the Decoder it needs to see the
// byte after the value, or the body's end.
func (s *valueScanner) topScalar(b []byte, i int, end error) int {
	e := s.scalar(b, i)
	if e == short {
		if end == io.EOF && isNumberStart(b[i]) && s.final {
			return len(b)
		}
		return needMore(end)
	}
	if e >= 0 && e == len(b) {
		if end == io.EOF {
			return e
		}
		return needMore(end)
	}
	return e
}

// value reads the value starting at b[i] (not a blank), nested depth deep in what the Decoder
// decodes, up to its last byte. It needs the byte after a number.
func (s *valueScanner) value(b []byte, i, depth int, end error) int {
	stack := s.stack[:0]
	defer func() { s.stack = stack[:0] }()
	for {
		// At the start of a value.
		switch c := b[i]; c {
		case '{', '[':
			if depth+len(stack)+1 > maxNestingDepth {
				return s.failByte(b, i, "exceeded max depth")
			}
			stack = append(stack, c == '{')
			if i = skipSpace(b, i+1); i == len(b) {
				return needMore(end)
			}
			if c == '{' {
				if b[i] == '}' {
					stack = stack[:len(stack)-1]
					i++
					break
				}
				if i = s.member(b, i, end); i < 0 {
					return i
				}
				continue
			}
			if b[i] == ']' {
				stack = stack[:len(stack)-1]
				i++
				break
			}
			continue
		default:
			if i = s.scalar(b, i); i < 0 {
				if i == short {
					return needMore(end)
				}
				return i
			}
		}
		// After a value: close what it ended, up to the next value.
		for {
			if len(stack) == 0 {
				return i
			}
			if i = skipSpace(b, i); i == len(b) {
				return needMore(end)
			}
			obj := stack[len(stack)-1]
			switch c := b[i]; {
			case c == ',' && obj:
				if i = s.member(b, skipSpace(b, i+1), end); i < 0 {
					return i
				}
			case c == ',':
				if i = skipSpace(b, i+1); i == len(b) {
					return needMore(end)
				}
			case c == '}' && obj, c == ']' && !obj:
				stack = stack[:len(stack)-1]
				i++
				continue
			case obj:
				return s.failByte(b, i, "after object key:value pair")
			default:
				return s.failByte(b, i, "after array element")
			}
			break
		}
	}
}

// member reads an object's key at b[i] and the colon after it, up to the start of its value.
func (s *valueScanner) member(b []byte, i int, end error) int {
	if i == len(b) {
		return needMore(end)
	}
	if b[i] != '"' {
		return s.failByte(b, i, "looking for beginning of object key string")
	}
	if i = s.str(b, i); i == short {
		return needMore(end)
	} else if i < 0 {
		return i
	}
	return s.colon(b, i, end)
}

// colon reads the blanks and the colon after a key at b[i], and the blanks after it.
func (s *valueScanner) colon(b []byte, i int, end error) int {
	if i = skipSpace(b, i); i == len(b) {
		return needMore(end)
	}
	if b[i] != ':' {
		return s.failByte(b, i, "after object key")
	}
	if i = skipSpace(b, i+1); i == len(b) {
		return needMore(end)
	}
	return i
}

// Fields of an entry.
const (
	fieldUnknown = iota
	fieldDeviceID
	fieldSecret
	fieldCertificate
	fieldCertificateSHA256
	fieldCount
)

// fieldNames are the entry's fields as the body spells them.
var fieldNames = [fieldCount]string{"", "device_id", "secret", "certificate", "certificate_sha256"}

// entry reads one entry of the devices array into e, from b[start] (blanks first), as the
// Decoder did into struct{ DeviceID, Secret *string } with unknown fields disallowed: keys match
// field names exactly or else case-insensitively, a later key wins, null unsets a field, and
// the first field of the wrong type or unknown name is the entry's problem. The entry is
// checked whole (syntax errors win over problems) before it is yielded. entry needs the byte
// after a string, number or literal entry.
func (s *valueScanner) entry(b []byte, start int, end error, e *devreg.DeviceEntry) int {
	i := skipSpace(b, start)
	if i == len(b) {
		return needMore(end)
	}
	s.container = b[i] == '{' || b[i] == '['
	if b[i] != '{' {
		kind := "string"
		switch c := b[i]; {
		case c == '[':
			kind = "array"
		case c == 't' || c == 'f':
			kind = "bool"
		case c == 'n':
			kind = ""
		case isNumberStart(c):
			kind = "number"
		}
		var n int
		if s.container {
			n = s.value(b, i, 0, end)
		} else {
			n = s.topScalar(b, i, end)
		}
		switch {
		case n < 0:
			return n
		case kind == "":
			e.Problem = "entry has no device_id"
		default:
			e.Problem = typeProblem("", kind)
		}
		return n
	}
	var values [fieldCount]string
	var has [fieldCount]bool
	var problem string
	if i = skipSpace(b, i+1); i == len(b) {
		return needMore(end)
	}
	if b[i] != '}' {
		for {
			if b[i] != '"' {
				return s.failByte(b, i, "looking for beginning of object key string")
			}
			k := i
			if i = s.str(b, i); i == short {
				return needMore(end)
			} else if i < 0 {
				return i
			}
			key := b[k+1 : i-1]
			if !s.plain {
				key = []byte(unquote(b[k:i]))
			}
			field := entryField(key)
			if field == fieldUnknown && problem == "" {
				var clip devreg.ProblemList
				problem = fmt.Sprintf("entry has an unknown field %s; only device_id and one of secret, certificate and certificate_sha256 are allowed", clip.Clip(strconv.Quote(string(key))))
			}
			if i = s.colon(b, i, end); i < 0 {
				return i
			}
			v := i
			switch c := b[v]; {
			case field == fieldUnknown:
				i = s.value(b, v, 1, end)
			case c == '"':
				if i = s.str(b, v); i < 0 {
					break
				}
				str := ""
				if s.plain {
					str = string(b[v+1 : i-1])
				} else {
					str = unquote(b[v:i])
				}
				values[field], has[field] = str, true
			case c == 'n':
				if i = s.lit(b, v, "null"); i < 0 {
					break
				}
				values[field], has[field] = "", false
			default:
				if i = s.value(b, v, 1, end); i < 0 {
					break
				}
				if problem == "" {
					problem = typeProblem(fieldNames[field], valueKind(c))
				}
			}
			if i == short {
				return needMore(end)
			} else if i < 0 {
				return i
			}
			if i = skipSpace(b, i); i == len(b) {
				return needMore(end)
			}
			if b[i] == '}' {
				break
			}
			if b[i] != ',' {
				return s.failByte(b, i, "after object key:value pair")
			}
			if i = skipSpace(b, i+1); i == len(b) {
				return needMore(end)
			}
		}
	}
	switch {
	case problem != "":
		e.Problem = problem
	case !has[fieldDeviceID]:
		e.Problem = "entry has no device_id"
	default:
		e.Problem = credentialProblem(has)
	}
	e.DeviceID = values[fieldDeviceID]
	if e.Problem == "" {
		e.Secret, e.Certificate, e.CertificateSHA256 = values[fieldSecret], values[fieldCertificate], values[fieldCertificateSHA256]
	}
	return i + 1
}

// credentialProblem says what is wrong with the credential fields an entry has, if anything: it
// needs exactly one of secret, certificate and certificate_sha256.
func credentialProblem(has [fieldCount]bool) string {
	n := 0
	for _, f := range []int{fieldSecret, fieldCertificate, fieldCertificateSHA256} {
		if has[f] {
			n++
		}
	}
	switch {
	case n == 0:
		return "entry has no secret (or certificate, or certificate_sha256)"
	case n > 1:
		return "entry has more than one of secret, certificate and certificate_sha256; send one"
	}
	return ""
}

func typeProblem(field, kind string) string {
	if field == "" {
		field = "the entry"
	}
	return fmt.Sprintf("entry must be an object with string fields device_id and secret (%s is %s)", field, kind)
}

// valueKind names the kind of JSON value starting with c as encoding/json's type errors do.
func valueKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	case '"':
		return "string"
	}
	return "number"
}

// entryField returns the field an entry's key (unquoted) names: encoding/json matches a key to
// a field name exactly or else case-insensitively, with Unicode's simple folding ("ſecret" is
// secret).
func entryField(key []byte) int {
	switch string(key) {
	case "device_id":
		return fieldDeviceID
	case "secret":
		return fieldSecret
	case "certificate":
		return fieldCertificate
	case "certificate_sha256":
		return fieldCertificateSHA256
	}
	var buf [32]byte
	switch string(foldName(buf[:0], key)) {
	case "DEVICE_ID":
		return fieldDeviceID
	case "SECRET":
		return fieldSecret
	case "CERTIFICATE":
		return fieldCertificate
	case "CERTIFICATE_SHA256":
		return fieldCertificateSHA256
	}
	return fieldUnknown
}

// foldName appends the folded form of name to out, as encoding/json's foldName does.
func foldName(out, name []byte) []byte {
	for i := 0; i < len(name); {
		if c := name[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		out = utf8.AppendRune(out, r)
		i += n
	}
	return out
}

// unquote returns the value of the JSON string q (quotes included), which str has checked, as
// encoding/json decodes it: bytes that are not UTF-8 and \u escapes of unpaired surrogates
// become U+FFFD.
func unquote(q []byte) string {
	s := q[1 : len(q)-1]
	out := make([]byte, 0, len(s))
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			switch s[r+1] {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					if dec := utf16.DecodeRune(rr, getu4(s[r:])); dec != unicode.ReplacementChar {
						out = utf8.AppendRune(out, dec)
						r += 6
						continue
					}
					rr = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, rr)
				continue
			default: // '"', '\\', '/'
				out = append(out, s[r+1])
			}
			r += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			out = utf8.AppendRune(out, rr)
			r += size
		}
	}
	return string(out)
}

// getu4 decodes \uXXXX at the start of s, or returns -1.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c = c - '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// JSONError explains a JSON decoding error (of encoding/json or of the JSON registration body's
// reader), with the byte offset where it happened, as a devreg error to answer with.
func JSONError(err error, offset int64) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return reqbody.TooLarge(tooLarge)
	case errors.As(err, &syntax):
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: %s at byte offset %d", syntax.Error(), syntax.Offset)
	case errors.As(err, &typ):
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid: field %q must be a %s, not %s (byte offset %d)", typ.Field, typ.Type, typ.Value, typ.Offset)
	case errors.Is(err, io.EOF):
		return devreg.Errorf(devreg.EBADREQUEST, "body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: it ends early at byte offset %d", offset)
	case isUnknownField(err):
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid: %s (byte offset %d)", strings.TrimPrefix(err.Error(), "json: "), offset)
	default:
		return devreg.Errorf(devreg.EBADREQUEST, "could not read the body: %v", err)
	}
}

// isUnknownField reports whether err is encoding/json's refusal of a field it does not know
// (it has no error type of its own).
func isUnknownField(err error) bool {
	return strings.HasPrefix(err.Error(), "json: unknown field")
}
