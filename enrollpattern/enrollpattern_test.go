package enrollpattern

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pattern string
		want    string // a part of the error's message; "" when the pattern is taken
	}{
		{"ok/issue-example", `^T1-[0-9A-F]{12}$`, ""},
		{"ok/text-anchors", `\AT1-[0-9]+\z`, ""},
		{"ok/group-around", `(^T1-[0-9]+$)`, ""},
		{"ok/alternation-grouped", `^(?:T1|T2)-[0-9]+$`, ""},
		{"ok/alternation-each-anchored", `^a$|^b$`, ""},
		{"ok/anchors-inside-alternation", `^(?:a$|b$)`, ""},
		{"ok/case-insensitive", `(?i)^t1-[0-9a-f]{12}$`, ""},
		{"ok/dot-matches-newline-flag", `(?s)^T1-.+$`, ""},
		{"ok/256-characters-510-bytes", `^[a` + strings.Repeat("é", 251) + `]$`, ""},
		{"ok/longest-id", `^a{128}$`, ""},

		{"empty", ``, "ID pattern is empty"},
		{"too-long", `^` + strings.Repeat("a", 255) + `$`, "257 characters long; at most 256"},
		{"too-long/counts-characters", `^[a` + strings.Repeat("é", 252) + `]$`, "257 characters long"},
		{"not-utf8", "^a\xff$", "not UTF-8"},
		{"nul", "^a\x00$", "control character (U+0000)"},
		{"newline", "^a\n$", "control character (U+000A)"},
		{"del", "^a\x7f$", "control character (U+007F)"},
		{"c1-control", "^a\u0085$", "control character (U+0085)"},
		{"syntax/missing-paren", `^(T1$`, "does not compile as a regular expression (RE2 syntax): missing closing ): `^(T1$`"},
		{"syntax/backreference", `^(a)\1$`, "invalid escape sequence: `\\1`"},
		{"syntax/lookahead", `^(?=a)a$`, "invalid or unsupported Perl syntax: `(?=`"},
		{"syntax/repeat-over-1000", `^a{1001}$`, "invalid repeat count: `{1001}` (RE2 allows repetition counts up to 1000"},
		{"syntax/nested-repeat-over-1000", `^(?:a{100}){100}$`, "invalid repeat count"},
		{"too-many-instructions", `^[0-9]{0,1000}[A-Z]{0,1000}x$`, "compiles to 4005 instructions, at most 2000"},
		{"unanchored", `T1-[0-9]+`, "not anchored"},
		{"unanchored/start", `T1-[0-9]+$`, "not anchored"},
		{"unanchored/end", `^T1-[0-9]+`, "not anchored"},
		{"unanchored/alternation", `^a|b$`, "write ^(?:a|b)$ rather than ^a|b$"},
		{"unanchored/one-branch", `^a$|b`, "each alternative needs both anchors"},
		{"unanchored/anchor-repeated", `(?:^)+a$`, "not anchored"},
		{"unanchored/anchor-optional", `^?a$`, "not anchored"},
		{"multiline", `(?m)^a$`, "line anchors (the (?m) flag)"},
		{"multiline/inside", `^(?m:^)a$`, "line anchors"},
		{"word-boundary", `^a\b$`, `word boundary (\b or \B)`},
		{"not-word-boundary", `^a\Bb$`, `word boundary`},
		{"matches-empty", `^$`, "matches the empty string"},
		{"matches-empty/star", `^[0-9]*$`, "matches the empty string"},
		{"matches-empty/alternative", `^(?:a|)$`, "matches the empty string"},
		{"no-valid-id/space", `^T1 [0-9]+$`, "matches no valid device ID"},
		{"no-valid-id/first-character", `^-T1$`, "matches no valid device ID"},
		{"no-valid-id/too-long", `^a{129}$`, "matches no valid device ID"},
		{"no-valid-id/non-ascii", `^é+$`, "matches no valid device ID"},
		{"no-valid-id/impossible-anchor", `^a^b$`, "matches no valid device ID"},
		{"no-valid-id/text-after-end", `^a$b$`, "matches no valid device ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re, err := Compile(tc.pattern)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Compile(%q): %v", tc.pattern, err)
				}
				if re.String() != tc.pattern {
					t.Errorf("Compile(%q) returned %q", tc.pattern, re)
				}
				return
			}
			if err == nil {
				t.Fatalf("Compile(%q) took it; want an error containing %q", tc.pattern, tc.want)
			}
			if code := devreg.ErrorCode(err); code != devreg.EINVALID {
				t.Errorf("error code %q, want %q (%v)", code, devreg.EINVALID, err)
			}
			if msg := devreg.ErrorMessage(err); !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not say %q", msg, tc.want)
			}
			if re != nil {
				t.Errorf("Compile returned a regexp with its error")
			}
			if err2 := Check(tc.pattern); err2 == nil || err2.Error() != err.Error() {
				t.Errorf("Check says %v, Compile %v", err2, err)
			}
		})
	}
}

// TestCompileMatchesWholeIDs: a pattern that Compile takes matches a device ID only whole, which
// is what anchoring is for.
func TestCompileMatchesWholeIDs(t *testing.T) {
	for _, pattern := range []string{`^T1-[0-9]+$`, `^a$|^b$`, `^(?:a$|b$)`, `\AT1\z`} {
		re, err := Compile(pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", pattern, err)
		}
		for _, id := range []string{"XT1-7", "T1-7X", "bb", "ab", "aa", "T1T1", "XT1"} {
			if re.MatchString(id) {
				t.Errorf("%q matches %q", pattern, id)
			}
		}
	}
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		a, b    string
		overlap bool
		example string // when not "", the one shortest example there is
	}{
		{"hex-and-decimal", `^T1-[0-9A-F]{12}$`, `^T1-[0-9]{12}$`, true, ""},
		{"same-pattern", `^T1-[0-9A-F]{12}$`, `^T1-[0-9A-F]{12}$`, true, ""},
		{"prefix-differs", `^T1-.*$`, `^T2-.*$`, false, ""},
		{"letters-and-digits", `^[a-z]+$`, `^[0-9]+$`, false, ""},
		{"plus-and-count", `^a+$`, `^a{3}$`, true, "aaa"},
		{"case-insensitive", `(?i)^abc$`, `^ABC$`, true, "ABC"},
		{"case-insensitive-class", `(?i)^[a-c]x$`, `^Bx$`, true, "Bx"},
		{"case-sensitive", `^abc$`, `^ABC$`, false, ""},
		{"alternatives", `^(?:T1|T2)-[0-9]{4}$`, `^T2-[0-9]{3}7$`, true, ""},
		{"lengths-differ", `^[0-9]{4}$`, `^[0-9]{5}$`, false, ""},
		{"length-ranges-meet", `^[0-9]{2,4}$`, `^[0-9]{4,6}$`, true, "0000"},
		{"text-anchors", `\AT1-[0-9]+\z`, `^T1-7$`, true, "T1-7"},
		{"anchor-inside", `^a(?:^b)?$`, `^ab?$`, true, "a"},
		{"end-inside", `^a(?:$x)?$`, `^ax$`, false, ""},
		{"dot-and-class", `^.{3}$`, `^x[_:]y$`, true, ""},
		// Overlaps only on strings that are no device ID do not count.
		{"only-invalid-character", `^x.$`, `^x(?:[ !]|yy)$`, false, ""},
		{"only-invalid-first-character", `^.a$`, `^(?:[-_]a|bb)$`, false, ""},
		{"only-longer-than-an-id", `^a{100}b*$`, `^a*b{100}$`, false, ""},
		{"exactly-longest-id", `^a{64}b*$`, `^a*b{64}$`, true, strings.Repeat("a", 64) + strings.Repeat("b", 64)},
		{"device-id-characters", `^[0-9A-Za-z][-._:]{3}$`, `^.[:_.-]+$`, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][2]string{{tc.a, tc.b}, {tc.b, tc.a}} {
				example, ok, err := Overlap(order[0], order[1])
				if err != nil {
					t.Fatalf("Overlap(%q, %q): %v", order[0], order[1], err)
				}
				if ok != tc.overlap {
					t.Fatalf("Overlap(%q, %q) = %q, %v; want overlap %v", order[0], order[1], example, ok, tc.overlap)
				}
				if !ok {
					if example != "" {
						t.Errorf("no overlap, yet example %q", example)
					}
					continue
				}
				assertExample(t, order[0], order[1], example)
				if tc.example != "" && example != tc.example {
					t.Errorf("example %q, want %q", example, tc.example)
				}
			}
		})
	}
}

func assertExample(t *testing.T, a, b, example string) {
	t.Helper()
	for _, p := range []string{a, b} {
		if !regexp.MustCompile(p).MatchString(example) {
			t.Errorf("example %q does not match %q", example, p)
		}
	}
	if msg := credential.CheckDeviceID(example); msg != "" {
		t.Errorf("example %q is no device ID: %s", example, msg)
	}
}

// TestOverlapShortestExample: the example is as short as any ID both patterns match, so a refusal
// names one a reader can take in.
func TestOverlapShortestExample(t *testing.T) {
	example, ok, err := Overlap(`^[A-Z]{2}-[0-9]{1,12}$`, `^.*7$`)
	if err != nil || !ok {
		t.Fatalf("Overlap = %q, %v, %v", example, ok, err)
	}
	if len(example) != 4 {
		t.Errorf("example %q; the shortest are 4 characters, e.g. AA-7", example)
	}
	assertExample(t, `^[A-Z]{2}-[0-9]{1,12}$`, `^.*7$`, example)
}

func TestOverlapRefusesBadPatterns(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		{`^a|b$`, `^a$`, "not anchored"},
		{`^a$`, `(?m)^a$`, "line anchors"},
		{`^a$`, `^(a$`, "does not compile"},
		{``, `^a$`, "empty"},
	} {
		_, ok, err := Overlap(tc.a, tc.b)
		if err == nil || ok {
			t.Errorf("Overlap(%q, %q) = %v, %v; want an error", tc.a, tc.b, ok, err)
			continue
		}
		if devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(devreg.ErrorMessage(err), tc.want) {
			t.Errorf("Overlap(%q, %q): %v; want invalid, saying %q", tc.a, tc.b, err, tc.want)
		}
	}
}

// TestOverlapBounded: the largest patterns Check takes are compared quickly or refused as too
// complex, never searched for long. The limit is generous: the time allows for a slow, shared,
// race-instrumented machine; a search of the full 3 × 2,000 × 2,000 triples would take seconds.
func TestOverlapBounded(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		tooComplex bool
	}{
		{"longest-ids", `^[0-9A-Za-z]{1,128}$`, `^[0-9A-Za-z]{1,127}x$`, false},
		{"many-optional", `^(?:[0-9]?){128}x$`, `^(?:[0-9]?){128}y$`, false},
		{"huge-optional", `^(?:[0-9]?){900}x$`, `^(?:[0-9]?){900}y$`, true},
		{"huge-star", `^(?:[0-9]*){900}x$`, `^(?:[0-9]*){900}y$`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range []string{tc.a, tc.b} {
				if err := Check(p); err != nil {
					t.Fatalf("Check(%q): %v", p, err)
				}
			}
			start := time.Now()
			_, _, err := Overlap(tc.a, tc.b)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Overlap took %v", d)
			}
			switch {
			case tc.tooComplex && err == nil:
				t.Errorf("Overlap(%q, %q) compared them; want too complex", tc.a, tc.b)
			case tc.tooComplex && !strings.Contains(devreg.ErrorMessage(err), "too complex to compare: more than 262144 states"):
				t.Errorf("Overlap: %v; want too complex", err)
			case !tc.tooComplex && err != nil:
				t.Errorf("Overlap: %v", err)
			}
			var e *devreg.Error
			if err != nil && (!errors.As(err, &e) || e.Code != devreg.EINVALID) {
				t.Errorf("Overlap: %v; want an invalid error", err)
			}
		})
	}
}

// TestOverlapAgainstEveryString compares Overlap with regexp on every string of up to 4
// characters from "abAB-", for patterns that match nothing else, so both must agree exactly, and
// the example must be as short as the shortest string both match.
func TestOverlapAgainstEveryString(t *testing.T) {
	patterns := []string{
		`^a$`, `^ab?$`, `^[ab]{2}$`, `^(?:ab|ba)$`, `^a(?:-b)?$`, `^[ab]-[ab]$`, `^a{1,4}$`,
		`^a$|^b-$`, `(?i)^ab$`, `(?i)^[a-b]{3}$`, `^[-ab]{1,4}$`, `^A[^a-zA-Z]?b$`, `^b(?:$|a$)`,
		`^a(?:$b)?-?$`,
	}
	var all []string
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			all = append(all, prefix)
		}
		if len(prefix) < 4 {
			for _, c := range "abAB-" {
				grow(prefix + string(c))
			}
		}
	}
	grow("")
	for _, a := range patterns {
		for _, b := range patterns {
			ra, rb := regexp.MustCompile(a), regexp.MustCompile(b)
			shortest := ""
			for _, s := range all {
				if credential.CheckDeviceID(s) == "" && ra.MatchString(s) && rb.MatchString(s) &&
					(shortest == "" || len(s) < len(shortest)) {
					shortest = s
				}
			}
			example, ok, err := Overlap(a, b)
			switch {
			case err != nil:
				t.Errorf("Overlap(%q, %q): %v", a, b, err)
			case ok != (shortest != ""):
				t.Errorf("Overlap(%q, %q) = %q, %v; every string says %q", a, b, example, ok, shortest)
			case ok && len(example) != len(shortest):
				t.Errorf("Overlap(%q, %q) = %q; %q is shorter", a, b, example, shortest)
			case ok:
				assertExample(t, a, b, example)
			}
		}
	}
}

// FuzzOverlap checks Overlap against regexp itself: an ID that both patterns match means Overlap
// finds one (no longer than it), and every example Overlap gives is a device ID both match.
func FuzzOverlap(f *testing.F) {
	for _, seed := range [][3]string{
		{`^T1-[0-9A-F]{12}$`, `^T1-[0-9]{12}$`, "T1-123456789012"},
		{`^T1-.*$`, `^T2-.*$`, "T1-x"},
		{`^[a-z]+$`, `^[0-9]+$`, "abc"},
		{`^a+$`, `^a{3}$`, "aaa"},
		{`(?i)^abc$`, `^ABC$`, "ABC"},
		{`^a$|^b$`, `^(?:b|c)$`, "b"},
		{`^a(?:^b)?$`, `^ab?$`, "a"},
		{`^a(?:$x)?$`, `^ax?$`, "ax"},
		{`\A[0-9]{2,4}\z`, `^[0-9]{4,6}$`, "1234"},
		{`^.{3}$`, `^x[_:]y$`, "x_y"},
		{`^a{64}b*$`, `^a*b{64}$`, strings.Repeat("a", 64) + strings.Repeat("b", 64)},
		{`(?i)^[k-m]+$`, `^\x{212A}$`, "K"},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, a, b, s string) {
		if Check(a) != nil || Check(b) != nil {
			return
		}
		example, ok, err := Overlap(a, b)
		if err != nil {
			if strings.Contains(devreg.ErrorMessage(err), "too complex to compare") {
				return
			}
			t.Fatalf("Overlap(%q, %q): %v", a, b, err)
		}
		ra, rb := regexp.MustCompile(a), regexp.MustCompile(b)
		if ok {
			if !ra.MatchString(example) || !rb.MatchString(example) {
				t.Fatalf("Overlap(%q, %q) gave %q, which does not match both", a, b, example)
			}
			if msg := credential.CheckDeviceID(example); msg != "" {
				t.Fatalf("Overlap(%q, %q) gave %q: %s", a, b, example, msg)
			}
		} else if example != "" {
			t.Fatalf("Overlap(%q, %q) found none, yet gave %q", a, b, example)
		}
		if credential.CheckDeviceID(s) == "" && ra.MatchString(s) && rb.MatchString(s) {
			if !ok {
				t.Fatalf("Overlap(%q, %q) found none, yet both match %q", a, b, s)
			}
			if n, m := len(example), len(s); n > m {
				t.Fatalf("Overlap(%q, %q) gave %q, longer than %q", a, b, example, s)
			}
		}
		// A pattern Check takes matches some device ID, so it overlaps itself.
		if self, ok, err := Overlap(a, a); err == nil && !ok {
			t.Fatalf("Overlap(%q, itself) found no ID", a)
		} else if err == nil && !ra.MatchString(self) {
			t.Fatalf("Overlap(%q, itself) gave %q", a, self)
		}
	})
}
