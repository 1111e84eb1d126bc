package passwordtest

import (
	"testing"

	"devreg/credential"
)

// TestHashVerifies: the hash kept for a password is a real one: it verifies that password and
// no other, and is handed out again for the same password.
func TestHashVerifies(t *testing.T) {
	h := Hash("correct horse")
	if !credential.CheckPassword(h, "correct horse") || credential.CheckPassword(h, "correct horse!") {
		t.Fatalf("Hash(%q) = %q does not verify as credential.HashPassword's would", "correct horse", h)
	}
	if again := Hash("correct horse"); again != h {
		t.Errorf("the same password was hashed again: %q, then %q", h, again)
	}
	if other := Hash("battery staple"); other == h {
		t.Errorf("two passwords share the hash %q", h)
	}
}
