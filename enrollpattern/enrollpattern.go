// Package enrollpattern checks the ID patterns of enrollment groups and decides whether two of
// them can claim the same device ID.
//
// A pattern is a Go regular expression (RE2 syntax). RE2 matches in time linear in the length of
// the input and has no backtracking, so no pattern can be "catastrophic" here the way (a+)+$ is
// for PCRE, Java or JavaScript engines; what is bounded instead is the pattern's size (256
// characters, 2,000 compiled instructions, and Go's own cap of 1,000 on repetition counts).
//
// A pattern must be anchored at both ends (^…$ or \A…\z, in every alternative) because a group
// claims every device ID its pattern matches and a regular expression matches anywhere in the
// text: T1-[0-9]{4} would also claim X-T1-12345-Y. With both anchors a pattern says all of what it
// claims (^T1-.*$ still claims a whole prefix, but visibly). Anchoring is read from the parsed
// syntax tree, not the text, so ^a|b$ (which is (?:^a)|(?:b$)) is refused while ^a$|^b$ and
// ^(?:a|b)$ are taken. For the same reason (?m), which turns ^ and $ into line anchors, and the
// word boundaries \b and \B are refused: device IDs are one line, and the search below need not
// model word boundaries.
//
// Overlap decides whether some valid device ID (credential.CheckDeviceID: 1 to 128 characters from
// A-Z a-z 0-9 . _ : -, the first a letter or digit) matches two patterns, by a breadth-first search
// over pairs of states of the two compiled programs, stepping both on the same character, up to
// the longest device ID. The search visits each (state, state, phase) triple at most once, so it
// is bounded by 3 × 2,000 × 2,000 triples; it gives up with an error after MaxOverlapStates
// (262,144) of them, about 4 MB and 30 ms. Realistic patterns never come near: ^T1-[0-9A-F]{12}$
// against ^T1-[0-9]{12}$ visits 22 triples in 20 µs, and two patterns of up to 295 instructions
// each (^[0-9A-Za-z]{1,128}$ has 259) cannot reach the limit at all.
package enrollpattern

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"unicode"
	"unicode/utf8"

	"devreg"
	"devreg/credential"
)

// Limits of an ID pattern.
const (
	// MaxLength is the most characters (Unicode code points, not bytes) a pattern may have.
	MaxLength = 256
	// MaxInstructions is the most instructions a pattern's compiled program may have: enough
	// for [0-9A-Za-z]{1,128} several times over, and it keeps Overlap's search small.
	MaxInstructions = 2000
	// MaxOverlapStates is how many states Overlap visits before it gives up: at 16 bytes and
	// about 100 ns a state, 4 MB and some 30 ms at most.
	MaxOverlapStates = 1 << 18
)

// anyID is a program matching every string of device-ID characters whose first one is a letter
// or digit; the search's bounds (alphabet, first character, length) make it exactly the valid
// device IDs, so a pattern that overlaps nothing with it matches no device ID at all.
var anyID = mustProg(`^[0-9A-Za-z][-.0-9:A-Z_a-z]*$`)

// Compile checks pattern as an enrollment group's ID pattern and returns it compiled. An error is
// a *devreg.Error of code EINVALID saying what is wrong.
func Compile(pattern string) (*regexp.Regexp, error) {
	prog, err := compile(pattern)
	if err != nil {
		return nil, err
	}
	if _, ok, err := search(prog, anyID); err != nil {
		// Not expected: anyID's 7 instructions keep this search under 3 × 2,000 × 7 states.
		return nil, invalid("ID pattern %s is too complex: %s", quote(pattern), devreg.ErrorMessage(err))
	} else if !ok {
		return nil, invalid("ID pattern %s matches no valid device ID (1 to %d characters from A-Z a-z 0-9 . _ : -, the first a letter or digit)",
			quote(pattern), credential.MaxDeviceIDLength)
	}
	// The syntax has been checked with the flags regexp.Compile uses, so this cannot fail.
	return regexp.MustCompile(pattern), nil
}

// Check returns nil when pattern is acceptable as an ID pattern, or an error saying what is wrong.
func Check(pattern string) error {
	_, err := Compile(pattern)
	return err
}

// Overlap reports whether some valid device ID matches both patterns a and b and, if so, one of
// the shortest such IDs, to show in a refusal. It returns an error when a pattern breaks a rule of
// Check (one that matches no device ID is no error: it overlaps nothing), or when the two are too
// large to compare within MaxOverlapStates.
func Overlap(a, b string) (example string, ok bool, err error) {
	pa, err := compile(a)
	if err != nil {
		return "", false, err
	}
	pb, err := compile(b)
	if err != nil {
		return "", false, err
	}
	example, ok, err = search(pa, pb)
	if err != nil {
		return "", false, invalid("ID patterns %s and %s are too complex to compare: %s", quote(a), quote(b), devreg.ErrorMessage(err))
	}
	return example, ok, nil
}

func invalid(format string, args ...any) error {
	return devreg.Errorf(devreg.EINVALID, format, args...)
}

// quote returns pattern as Go's own regexp errors show one, in backquotes, where it can: "%q"
// would double every backslash of \d.
func quote(pattern string) string {
	if strconv.CanBackquote(pattern) {
		return "`" + pattern + "`"
	}
	return strconv.Quote(pattern)
}

// compile checks pattern and returns its program. It leaves to Compile the question whether the
// pattern matches any device ID, which Overlap answers on its own.
func compile(pattern string) (*syntax.Prog, error) {
	if pattern == "" {
		return nil, invalid("ID pattern is empty")
	}
	if !utf8.ValidString(pattern) {
		return nil, invalid("ID pattern contains bytes that are not UTF-8")
	}
	if n := utf8.RuneCountInString(pattern); n > MaxLength {
		return nil, invalid("ID pattern is %d characters long; at most %d are allowed", n, MaxLength)
	}
	for i, r := range []rune(pattern) {
		if unicode.IsControl(r) {
			return nil, invalid("ID pattern contains a control character (U+%04X)", r)
		}
		// A pattern is read by people (the console, the audit log, a refusal naming it), and
		// these read as nothing or reorder what follows, so that two patterns look alike or one
		// looks like another; none is in a device ID, so write one as \x{…} if it is meant.
		if unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) || unicode.Is(unicode.Zs, r) && r != ' ' || unicode.Is(unicode.Variation_Selector, r) {
			return nil, invalid("ID pattern contains the invisible character U+%04X at character %d; write it as \\x{%04X} if it is meant", r, i+1, r)
		}
	}
	// syntax.Perl is what regexp.Compile uses: ^ and $ match at the beginning and end of the
	// text only, unless (?m) asks otherwise.
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		msg := err.Error()
		var e *syntax.Error
		if errors.As(err, &e) {
			msg = fmt.Sprintf("%s: `%s`", e.Code, e.Expr) // without "error parsing regexp: "
			if e.Code == syntax.ErrInvalidRepeatSize {
				msg += " (RE2 allows repetition counts up to 1000, also when repetitions nest)"
			}
		}
		return nil, invalid("ID pattern does not compile as a regular expression (RE2 syntax): %s", msg)
	}
	if err := checkOps(re); err != nil {
		return nil, err
	}
	re = re.Simplify()
	if !anchoredStart(re) || !anchoredEnd(re) {
		msg := "ID pattern is not anchored: it must start with ^ and end with $ so that it matches whole device IDs, e.g. ^T1-[0-9A-F]{12}$"
		if strip(re).Op == syntax.OpAlternate {
			msg += "; each alternative needs both anchors, so write ^(?:a|b)$ rather than ^a|b$"
		}
		return nil, invalid("%s", msg)
	}
	prog, err := syntax.Compile(re)
	if err != nil {
		return nil, invalid("ID pattern does not compile as a regular expression (RE2 syntax): %s", err)
	}
	if n := len(prog.Inst); n > MaxInstructions {
		return nil, invalid("ID pattern is too large: it compiles to %d instructions, at most %d are allowed (use smaller repetition counts)", n, MaxInstructions)
	}
	if matchesEmpty(prog) {
		return nil, invalid("ID pattern matches the empty string; a device ID has at least one character (use + rather than *)")
	}
	return prog, nil
}

// checkOps refuses the assertions whose meaning depends on more than the device ID itself.
func checkOps(re *syntax.Regexp) error {
	switch re.Op {
	case syntax.OpBeginLine, syntax.OpEndLine:
		return invalid("ID pattern uses ^ or $ as line anchors (the (?m) flag); a device ID is one line, so leave out (?m)")
	case syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return invalid(`ID pattern uses a word boundary (\b or \B), which ID patterns do not support; name the characters instead`)
	}
	for _, sub := range re.Sub {
		if err := checkOps(sub); err != nil {
			return err
		}
	}
	return nil
}

// strip returns re without the capture groups around it.
func strip(re *syntax.Regexp) *syntax.Regexp {
	for re.Op == syntax.OpCapture {
		re = re.Sub[0]
	}
	return re
}

// anchoredStart reports whether every match of re begins at the beginning of the text. It is
// conservative: false means "not shown", e.g. for (?:^)+.
func anchoredStart(re *syntax.Regexp) bool {
	re = strip(re)
	switch re.Op {
	case syntax.OpBeginText:
		return true
	case syntax.OpConcat:
		return len(re.Sub) > 0 && anchoredStart(re.Sub[0])
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if !anchoredStart(sub) {
				return false
			}
		}
		return true
	}
	return false
}

// anchoredEnd reports whether every match of re ends at the end of the text.
func anchoredEnd(re *syntax.Regexp) bool {
	re = strip(re)
	switch re.Op {
	case syntax.OpEndText:
		return true
	case syntax.OpConcat:
		return len(re.Sub) > 0 && anchoredEnd(re.Sub[len(re.Sub)-1])
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if !anchoredEnd(sub) {
				return false
			}
		}
		return true
	}
	return false
}

// matchesEmpty reports whether prog matches the empty string: whether InstMatch is reachable from
// the start by empty moves, where both ^ and $ hold.
func matchesEmpty(prog *syntax.Prog) bool {
	seen := make([]bool, len(prog.Inst))
	stack := []uint32{uint32(prog.Start)}
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		in := &prog.Inst[pc]
		switch in.Op {
		case syntax.InstMatch:
			return true
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		case syntax.InstNop, syntax.InstCapture:
			stack = append(stack, in.Out)
		case syntax.InstEmptyWidth:
			if syntax.EmptyOp(in.Arg)&^(syntax.EmptyBeginText|syntax.EmptyEndText|syntax.EmptyBeginLine|syntax.EmptyEndLine) == 0 {
				stack = append(stack, in.Out)
			}
		}
	}
	return false
}

func mustProg(pattern string) *syntax.Prog {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		panic(err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		panic(err)
	}
	return prog
}

// alphabet holds the characters a device ID may contain, in the order an example prefers them.
// The first 62 are the ones a device ID may start with.
const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-._:"

const firstChars = 62

// charSet is a set of characters of alphabet, bit i standing for alphabet[i].
type charSet [2]uint64

func (s charSet) and(t charSet) charSet { return charSet{s[0] & t[0], s[1] & t[1]} }

func (s charSet) empty() bool { return s[0] == 0 && s[1] == 0 }

// first returns the preferred character of a non-empty s.
func (s charSet) first() byte {
	for i := range len(alphabet) {
		if s[i/64]&(1<<(i%64)) != 0 {
			return alphabet[i]
		}
	}
	panic("enrollpattern: first of an empty charSet")
}

var leadSet = func() (s charSet) {
	for i := range firstChars {
		s[i/64] |= 1 << (i % 64)
	}
	return s
}()

// charSets returns, for each instruction of prog that consumes a character, the device-ID
// characters it matches. Intersecting these sets stands for intersecting rune ranges: every
// character of a device ID is printable ASCII, so the example needs no other.
func charSets(prog *syntax.Prog) []charSet {
	sets := make([]charSet, len(prog.Inst))
	for pc := range prog.Inst {
		in := &prog.Inst[pc]
		for i := range len(alphabet) {
			var ok bool
			switch in.Op {
			case syntax.InstRune, syntax.InstRune1:
				ok = in.MatchRune(rune(alphabet[i])) // folds case for (?i) literals
			case syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
				ok = true
			}
			if ok {
				sets[pc][i/64] |= 1 << (i % 64)
			}
		}
	}
	return sets
}

// Phases of the search: nothing read yet (^ holds, the next character is an ID's first), some
// characters read, or the text ended by a $ (no more characters may follow).
const (
	phaseStart = iota
	phaseMiddle
	phaseEnd
	phases
)

// node is a state of the search: both programs at an instruction, in a phase. parent and char
// lead back to the start and spell the example.
type node struct {
	pa, pb uint32
	phase  uint8
	char   byte // the character read to get here from parent, 0 for an empty move
	parent int32
}

// search looks for a shortest valid device ID that both a and b match, by a breadth-first search
// over triples (instruction of a, instruction of b, phase). Empty moves (alternation, captures,
// anchors) advance one program at a time and stay in the same length; a character advances both,
// on a character both instructions take. Searching length by length makes the first accepted
// triple a shortest example, and lets the search stop at the longest device ID.
func search(a, b *syntax.Prog) (string, bool, error) {
	setsA, setsB := charSets(a), charSets(b)
	nb := uint64(len(b.Inst))
	seen := make([]uint64, (uint64(len(a.Inst))*nb*phases+63)/64)
	var nodes []node
	visit := func(pa, pb uint32, phase uint8, char byte, parent int32) {
		k := (uint64(pa)*nb+uint64(pb))*phases + uint64(phase)
		if seen[k/64]&(1<<(k%64)) != 0 {
			return
		}
		seen[k/64] |= 1 << (k % 64)
		nodes = append(nodes, node{pa, pb, phase, char, parent})
	}
	visit(uint32(a.Start), uint32(b.Start), phaseStart, 0, -1)
	level := 0
	for length := 0; level < len(nodes); length++ {
		// Empty moves: everything appended to nodes from here on is of this length.
		for i := level; i < len(nodes); i++ {
			if len(nodes) > MaxOverlapStates {
				return "", false, invalid("more than %d states; use fewer optional or repeated parts", MaxOverlapStates)
			}
			n := nodes[i]
			inA, inB := &a.Inst[n.pa], &b.Inst[n.pb]
			if inA.Op == syntax.InstMatch && inB.Op == syntax.InstMatch && n.phase != phaseStart {
				return spell(nodes, int32(i)), true, nil
			}
			next, k := emptyMoves(inA, n.phase)
			for _, m := range next[:k] {
				visit(m.pc, n.pb, m.phase, 0, int32(i))
			}
			next, k = emptyMoves(inB, n.phase)
			for _, m := range next[:k] {
				visit(n.pa, m.pc, m.phase, 0, int32(i))
			}
		}
		if length == credential.MaxDeviceIDLength {
			break
		}
		// One character: both programs at an instruction that takes a character both take.
		end := len(nodes)
		for i := level; i < end; i++ {
			n := nodes[i]
			if n.phase == phaseEnd {
				continue
			}
			both := setsA[n.pa].and(setsB[n.pb])
			if n.phase == phaseStart {
				both = both.and(leadSet)
			}
			if !both.empty() {
				visit(a.Inst[n.pa].Out, b.Inst[n.pb].Out, phaseMiddle, both.first(), int32(i))
			}
		}
		level = end
	}
	return "", false, nil
}

type move struct {
	pc    uint32
	phase uint8
}

// emptyMoves returns where in moves from phase without reading a character. ^ holds only before
// the first character and $ only at the end, which it fixes: no character may follow. The line
// anchors behave the same (Check refuses (?m), so they do not occur) and word boundaries block
// (Check refuses \b and \B, so they do not occur either; blocking would miss overlaps, not
// invent them).
func emptyMoves(in *syntax.Inst, phase uint8) (next [2]move, n int) {
	switch in.Op {
	case syntax.InstAlt, syntax.InstAltMatch:
		return [2]move{{in.Out, phase}, {in.Arg, phase}}, 2
	case syntax.InstNop, syntax.InstCapture:
		return [2]move{{in.Out, phase}}, 1
	case syntax.InstEmptyWidth:
		op := syntax.EmptyOp(in.Arg)
		if op&^(syntax.EmptyBeginText|syntax.EmptyEndText|syntax.EmptyBeginLine|syntax.EmptyEndLine) != 0 {
			return next, 0
		}
		if op&(syntax.EmptyBeginText|syntax.EmptyBeginLine) != 0 && phase != phaseStart {
			return next, 0
		}
		if op&(syntax.EmptyEndText|syntax.EmptyEndLine) != 0 {
			if phase == phaseStart {
				return next, 0 // a device ID is not empty
			}
			phase = phaseEnd
		}
		return [2]move{{in.Out, phase}}, 1
	}
	return next, 0
}

// spell returns the characters read on the way from the start to nodes[i].
func spell(nodes []node, i int32) string {
	var rev []byte
	for ; i >= 0; i = nodes[i].parent {
		if c := nodes[i].char; c != 0 {
			rev = append(rev, c)
		}
	}
	out := make([]byte, len(rev))
	for j, c := range rev {
		out[len(rev)-1-j] = c
	}
	return string(out)
}
