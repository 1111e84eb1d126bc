package registry

import (
	"path/filepath"
	"testing"

	"devreg"
)

// TestStillAuthorizedUser refuses a long request of a console user whose role changed, or who
// was removed, while it ran, and lets one go on whose role is the same.
func TestStillAuthorizedUser(t *testing.T) {
	s, _ := OpenTestService(t, "sqlite:"+filepath.Join(t.TempDir(), "devreg.db"))
	c := devreg.Caller{AccountID: "acc_a", UserID: "usr_a", Name: "a@example.test", Scope: devreg.ScopeRegister, Source: devreg.SourceConsole}
	for _, tc := range []struct {
		name  string
		now   devreg.Scope
		found bool
		code  string
	}{
		{"same-role", devreg.ScopeRegister, true, ""},
		{"demoted", devreg.ScopeRead, true, devreg.EUNAUTHORIZED},
		{"promoted", devreg.ScopeAdmin, true, devreg.EUNAUTHORIZED},
		{"removed", "", false, devreg.EUNAUTHORIZED},
	} {
		if err := s.stillAuthorized(c, devreg.APIKey{Scope: tc.now}, tc.found, "nothing was registered"); devreg.ErrorCode(err) != tc.code {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.code)
		}
	}
}
