package registry

import (
	"strings"
	"testing"

	"devreg"
)

// TestCompilePattern: an ID pattern is anchored RE2 of at most 256 characters of text, and each
// refusal says what is wrong with it.
func TestCompilePattern(t *testing.T) {
	for _, tc := range []struct{ pattern, says string }{
		{`^T1-[0-9A-F]{12}$`, ""},
		{`^(?:A|B)-[0-9]+$`, ""},
		{`^A-[0-9]+$|^B-[0-9]+$`, ""},
		{`^` + strings.Repeat("a", 254) + `$`, ""},
		{`^Ü-[0-9]+$`, ""},
		{``, "id_pattern is required"},
		{`T1-[0-9]+$`, "must be anchored"},
		{`^T1-[0-9]+`, "must be anchored"},
		{`^A|B$`, "anchored as a whole"},
		{`^A$|B$`, "anchored as a whole"},
		{`^` + strings.Repeat("a", 255) + `$`, "at most 256 characters long; it has 257"},
		{"^A\n$", "control character (U+000A) at character 3"},
		{"^A\x00$", "control character"},
		{"^A\xff$", "not valid UTF-8"},
		{`^A[$`, "not a valid RE2 regular expression"},
		{`^(?<=A)B$`, "not a valid RE2 regular expression"},
		{`^(a)\1$`, "not a valid RE2 regular expression"},
	} {
		re, err := compilePattern(tc.pattern)
		switch {
		case tc.says == "" && (err != nil || re == nil):
			t.Errorf("%q refused: %v", tc.pattern, err)
		case tc.says != "" && (devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(err.Error(), tc.says)):
			t.Errorf("%q: %v, want EINVALID saying %q", tc.pattern, err, tc.says)
		}
	}
	re, _ := compilePattern(`^T1-[0-9A-F]{4}$`)
	for id, want := range map[string]bool{"T1-00AF": true, "T1-00AF\n": false, "xT1-00AF": false, "T1-00AFF": false} {
		if re.MatchString(id) != want {
			t.Errorf("^T1-[0-9A-F]{4}$ matches %q: %v", id, !want)
		}
	}
}
