// Package broker decides, for the MQTT brokers that ask devreg, whether a device may use a topic:
// MQTT topic filters with per-device placeholders, matched by MQTT's rules, and the mapping of
// RabbitMQ's routing keys back to MQTT topics. The adapters of each broker's protocol only
// translate to and from it.
package broker

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// DefaultFilters are a device type's topic filters for both actions unless it sets its own.
var DefaultFilters = []string{"devices/{device_id}/#"}

// Vars are what a device's placeholders stand for.
type Vars struct {
	AccountID    string
	DeviceID     string
	DeviceTypeID string
}

// Expand returns filters with {device_id}, {account_id} and {device_type_id} replaced by v. The
// values cannot hold '/', '+' or '#' (device IDs and devreg's IDs never do), so a value never
// adds a level or a wildcard.
func Expand(filters []string, v Vars) []string {
	r := strings.NewReplacer("{device_id}", v.DeviceID, "{account_id}", v.AccountID, "{device_type_id}", v.DeviceTypeID)
	out := make([]string, len(filters))
	for i, f := range filters {
		out[i] = r.Replace(f)
	}
	return out
}

// maxTopic is the longest topic or filter MQTT can carry (a 2-byte length).
const maxTopic = 65535

// CheckFilter returns why f is not a valid MQTT topic filter (MQTT 3.1.1 §4.7, MQTT 5 §4.7), or
// nil: not empty, valid UTF-8 without NUL, '#' only as the whole last level, '+' only as a whole
// level. Placeholders count as text.
func CheckFilter(f string) error {
	if err := checkText(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic filter %q: '#' may only be the last level", f)
		case l != "#" && strings.Contains(l, "#"):
			return fmt.Errorf("topic filter %q: '#' must be a level of its own", f)
		case l != "+" && strings.Contains(l, "+"):
			return fmt.Errorf("topic filter %q: '+' must be a level of its own", f)
		}
	}
	return nil
}

// CheckTopic returns why t is not a topic a device may publish to, or nil: a valid filter
// without wildcards.
func CheckTopic(t string) error {
	if err := checkText(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("topic %q: a topic to publish to has no wildcards", t)
	}
	return nil
}

func checkText(s string) error {
	switch {
	case s == "":
		return errors.New("a topic or topic filter may not be empty")
	case len(s) > maxTopic:
		return fmt.Errorf("a topic or topic filter may hold at most %d bytes", maxTopic)
	case !utf8.ValidString(s) || strings.ContainsRune(s, 0):
		return fmt.Errorf("topic %q is not valid UTF-8 without NUL characters", s)
	}
	return nil
}

// Within reports whether every topic that filter sub matches is matched by filter allowed: a
// device allowed "devices/d1/#" may subscribe to "devices/d1/cmd/+", never to "devices/+/cmd".
// A topic (no wildcards) is within allowed when allowed matches it. As MQTT says, a wildcard in
// the first level never matches a topic that starts with '$'.
func Within(sub, allowed string) bool {
	s, a := strings.Split(sub, "/"), strings.Split(allowed, "/")
	if strings.HasPrefix(s[0], "$") && (a[0] == "+" || a[0] == "#") {
		return false
	}
	for i := 0; ; i++ {
		switch {
		case i < len(a) && a[i] == "#":
			// "x/#" also matches "x" itself (MQTT 3.1.1 §4.7.1.2).
			return true
		case i == len(s) || i == len(a):
			return len(s) == len(a)
		case s[i] == "#":
			return false // only "#" in allowed covers it, which returned above
		case s[i] == "+":
			if a[i] != "+" {
				return false
			}
		case a[i] != "+" && a[i] != s[i]:
			return false
		}
	}
}

// Allowed reports whether sub (a topic or a topic filter) is within one of the filters.
func Allowed(filters []string, sub string) bool {
	for _, f := range filters {
		if Within(sub, f) {
			return true
		}
	}
	return false
}

// FromRoutingKey turns a RabbitMQ routing key back into the MQTT topic or filter it came from:
// RabbitMQ's MQTT plugin turns '/' into '.' and '+' into '*' ('#' stays). A '.' in an MQTT topic
// would come back as '/', which is why devices whose IDs hold '.' are refused with RabbitMQ.
func FromRoutingKey(key string) string {
	levels := strings.Split(key, ".")
	for i, l := range levels {
		if l == "*" {
			levels[i] = "+"
		}
	}
	return strings.Join(levels, "/")
}

// Action is what a device wants to do with a topic.
type Action string

// The actions a broker asks about.
const (
	Publish   Action = "publish"
	Subscribe Action = "subscribe"
)
