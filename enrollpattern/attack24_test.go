package enrollpattern

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"devreg/credential"
)

// attackAtoms are pieces of patterns an outsider would try: anchors inside groups, \A and \z
// mixed with ^ and $, empty alternatives, flags ((?i) with the Kelvin sign and the long s, which
// fold to ASCII letters; (?s)), classes with the punctuation device IDs may hold, negated
// classes and dots.
var attackAtoms = []string{
	`a`, `b`, `k`, `K`, `s`, `0`, `-`, `_`, `\.`, `:`, `.`, `(?s:.)`, `[ab]`, `[^a]`, `[^a-z]`, `[-_.:]`,
	`\x{212A}`, `(?i:\x{212A})`, `(?i:k)`, `(?i:\x{17F})`, `(?i:s)`, `[\x{212A}k]`, `\d`, `\w`, `\W`, `[[:alpha:]]`,
	`^`, `$`, `\A`, `\z`, `(?:)`, `(?:a|)`, `(?:|b)`, `(?:$|a)`, `(?:^|a)`, `(?:a$|b)`,
}

func randomPattern(r *rand.Rand, depth int) string {
	if depth == 0 {
		return attackAtoms[r.IntN(len(attackAtoms))]
	}
	switch r.IntN(7) {
	case 0, 1:
		n := 1 + r.IntN(3)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = randomPattern(r, depth-1)
		}
		return strings.Join(parts, "")
	case 2:
		return "(?:" + randomPattern(r, depth-1) + "|" + randomPattern(r, depth-1) + ")"
	case 3:
		return "(?:" + randomPattern(r, depth-1) + ")" + []string{"?", "*", "+", "{0,2}", "{2}", "??"}[r.IntN(6)]
	case 4:
		return "(?i:" + randomPattern(r, depth-1) + ")"
	default:
		return randomPattern(r, 0)
	}
}

// anchoredRandom wraps a random body in anchors, or in one of the seemingly anchored forms.
func anchoredRandom(r *rand.Rand) string {
	body := randomPattern(r, 3)
	switch r.IntN(8) {
	case 0:
		return `\A` + body + `$`
	case 1:
		return `^` + body + `\z`
	case 2:
		return `^` + body + `$|^` + randomPattern(r, 2) + `$`
	case 3:
		return `^` + body + `|` + randomPattern(r, 2) + `$`
	case 4:
		return `(?i)^` + body + `$`
	case 5:
		return `(?m)^` + body + `$`
	case 6:
		return `^(?:` + body + `)$` + randomPattern(r, 1)
	default:
		return `^` + body + `$`
	}
}

// TestAttack24OverlapDifferential compares Check, Compile and Overlap with regexp on every
// string of up to 3 characters of an alphabet with the letters the random patterns fold to and a
// line break (no device-ID character), for hundreds of random patterns built from the tricks
// above. Check must take only patterns whose every match is the whole string, Compile must not
// call a pattern that matches some device ID empty, and Overlap must find an ID whenever both
// match one, no longer than the shortest. (Run once with 3,000 patterns and strings of up to 4
// characters of a larger alphabet; it is kept small for -race.)
func TestAttack24OverlapDifferential(t *testing.T) {
	const alpha = "akKsS0-.\n"
	var all []string
	var grow func(prefix string)
	grow = func(prefix string) {
		if prefix != "" {
			all = append(all, prefix)
		}
		if len(prefix) < 3 {
			for _, c := range alpha {
				grow(prefix + string(c))
			}
		}
	}
	grow("")
	r := rand.New(rand.NewPCG(24, 24))
	var taken []string
	var takenRe []*regexp.Regexp
	n := 400
	if testing.Short() {
		n = 300
	}
	for len(taken) < n {
		p := anchoredRandom(r)
		re, err := Compile(p)
		std, stdErr := regexp.Compile(p)
		if stdErr != nil {
			if err == nil {
				t.Fatalf("Compile(%q) took a pattern regexp refuses: %v", p, stdErr)
			}
			continue
		}
		matchesID := false
		for _, s := range all {
			if loc := std.FindStringIndex(s); loc != nil && err == nil && (loc[0] != 0 || loc[1] != len(s)) {
				t.Fatalf("Compile took %q, yet it matches %q only at %v: not anchored", p, s, loc)
			}
			if credential.CheckDeviceID(s) == "" && std.MatchString(s) {
				matchesID = true
			}
		}
		if err != nil {
			if matchesID && strings.Contains(err.Error(), "matches no valid device ID") {
				t.Fatalf("Compile(%q): %v; yet it matches a short device ID", p, err)
			}
			continue
		}
		_ = re
		taken = append(taken, p)
		takenRe = append(takenRe, std)
	}
	pairs := 0
	for i := range taken {
		for j := i; j < len(taken) && j < i+8; j++ {
			a, b := taken[i], taken[j]
			shortest := ""
			for _, s := range all {
				if credential.CheckDeviceID(s) == "" && takenRe[i].MatchString(s) && takenRe[j].MatchString(s) {
					if shortest == "" || len(s) < len(shortest) {
						shortest = s
					}
				}
			}
			example, ok, err := Overlap(a, b)
			pairs++
			switch {
			case err != nil:
				t.Errorf("Overlap(%q, %q): %v", a, b, err)
			case shortest != "" && !ok:
				t.Errorf("Overlap(%q, %q) found no shared ID; both match %q", a, b, shortest)
			case ok && shortest != "" && len(example) > len(shortest):
				t.Errorf("Overlap(%q, %q) = %q; %q is shorter", a, b, example, shortest)
			case ok && (!takenRe[i].MatchString(example) || !takenRe[j].MatchString(example) || credential.CheckDeviceID(example) != ""):
				t.Errorf("Overlap(%q, %q) = %q, which is not a device ID both match", a, b, example)
			case ok && shortest == "" && len(example) <= 3 && strings.Trim(example, alpha) == "":
				t.Errorf("Overlap(%q, %q) = %q, but brute force found none", a, b, example)
			}
		}
	}
	t.Logf("%d patterns taken, %d pairs compared", len(taken), pairs)
}

// TestAttack24PatternInvisibleCharacters: a pattern is read by people, in the console, the audit
// log and refusals; characters that show as nothing or reorder the text made two patterns look
// alike (^T1-[0-9]+$ and the same with a zero-width space in its class) or hid what a pattern
// takes. They are refused, saying how to write one that is meant; the same character written as
// an escape is taken.
func TestAttack24PatternInvisibleCharacters(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"^T1-[0-9\u200b]+$", "invisible character U+200B at character 9; write it as \\x{200B}"},
		{"^(?:T1-[0-9]+|\u202e)$", "U+202E"},
		{"^T1-[0-9]+$|^\u2066T2$", "U+2066"},
		{"^T1\u00ad-[0-9]+$", "U+00AD"},
		{"^T1-[0-9]+$\ufeff", "U+FEFF"},
		{"^(?:T1|\u3000)-[0-9]+$", "U+3000"},
		{"^(?:T1|\u2028)-[0-9]+$", "U+2028"},
		{"^T1-[0-9\ufe0f]+$", "U+FE0F"},
		{"^T1-[0-9\U000E0041]+$", "U+E0041"},
	} {
		err := Check(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+q) = %v; want it refused saying %q", tc.pattern, err, tc.want)
		}
	}
	for _, p := range []string{`^T1-[0-9\x{200B}]+$`, `^(?:T1-[0-9]+|\x{202E})$`, `^T1 -[0-9]+$|^T2-[0-9]+$`} {
		if err := Check(p); err != nil {
			t.Errorf("Check(%q): %v", p, err)
		}
	}
}
