// Package credential holds the rules for device IDs and secrets, the keyed hashing that stores
// secrets (HMAC-SHA-256 under a server key kept outside the database), and the random credentials
// devreg hands out: API keys and password hashes.
package credential

import (
	"fmt"
	"unicode/utf8"
)

// Limits of device IDs and secrets.
const (
	MaxDeviceIDLength = 128
	MinSecretLength   = 8
	MaxSecretLength   = 256
)

// CheckDeviceID returns a sentence saying what is wrong with id, or "" when it is a valid device ID:
// 1 to 128 characters from A-Z a-z 0-9 . _ : -, the first a letter or digit.
func CheckDeviceID(id string) string {
	if id == "" {
		return "device ID is empty"
	}
	if n := utf8.RuneCountInString(id); n > MaxDeviceIDLength {
		return fmt.Sprintf("device ID is %s long; at most %d are allowed", characters(n), MaxDeviceIDLength)
	}
	for i, r := range id {
		switch {
		case isAlnum(r):
		case r == '.' || r == '_' || r == ':' || r == '-':
			if i == 0 {
				return fmt.Sprintf("device ID starts with %q; it must start with a letter or digit", r)
			}
		case r == ' ':
			return "device ID contains a space"
		default:
			return fmt.Sprintf("device ID contains %s; only A-Z a-z 0-9 . _ : - are allowed", describeRune(r))
		}
	}
	return ""
}

// CheckSecret returns a sentence saying what is wrong with secret under a device type's minimum
// length (0 for the default), or "" when it is acceptable: printable ASCII, 8 to 256 characters.
func CheckSecret(secret string, minLength int) string {
	min := max(minLength, MinSecretLength)
	switch {
	case secret == "":
		return "secret is empty"
	case len(secret) > MaxSecretLength:
		return fmt.Sprintf("secret is %s long; at most %d are allowed", characters(len(secret)), MaxSecretLength)
	}
	for _, r := range secret {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("secret contains %s; only printable ASCII characters are allowed", describeRune(r))
		}
	}
	if len(secret) < min {
		return fmt.Sprintf("secret is %s long; this device type needs at least %d", characters(len(secret)), min)
	}
	return ""
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func describeRune(r rune) string {
	switch {
	case r == '\t':
		return "a tab"
	case r == utf8.RuneError:
		return "bytes that are not UTF-8"
	case r < 0x20 || r == 0x7f:
		return fmt.Sprintf("a control character (U+%04X)", r)
	case r > 0x7e:
		return fmt.Sprintf("the non-ASCII character %q", r)
	default:
		return fmt.Sprintf("%q", r)
	}
}

func characters(n int) string {
	if n == 1 {
		return "1 character"
	}
	return fmt.Sprintf("%d characters", n)
}
