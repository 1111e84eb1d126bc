// Package passwordtest hashes the tests' passwords once each. An Argon2id hash of devreg's
// parameters takes most of a second under the race detector, and the tests make an account, with
// the same password, in nearly every test.
package passwordtest

import (
	"sync"

	"devreg/credential"
)

var hashes sync.Map // password -> its hash

// Hash is credential.HashPassword, made once per password in a test binary: every user with the
// same password gets the same hash (and salt), which CheckPassword verifies as it would any.
// For registry.Service.HashPassword in tests.
func Hash(password string) string {
	if h, ok := hashes.Load(password); ok {
		return h.(string)
	}
	h, _ := hashes.LoadOrStore(password, credential.HashPassword(password))
	return h.(string)
}
