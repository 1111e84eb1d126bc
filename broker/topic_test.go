package broker

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		sub, allowed string
		want         bool
	}{
		{"devices/d1/up", "devices/d1/#", true},
		{"devices/d1", "devices/d1/#", true}, // '#' also matches its parent level
		{"devices/d1/cmd/+", "devices/d1/#", true},
		{"devices/d1/#", "devices/d1/#", true},
		{"devices/+/cmd", "devices/d1/#", false},
		{"devices/#", "devices/d1/#", false},
		{"#", "devices/d1/#", false},
		{"devices/d2/up", "devices/d1/#", false},
		{"devices/d1up", "devices/d1/#", false},
		{"devices/d1/up", "devices/+/up", true},
		{"devices/+/up", "devices/+/up", true},
		{"devices/d1/up/x", "devices/+/up", false},
		{"devices/d1", "devices/+/up", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a//b", "a/+/b", true}, // an empty level is a level
		{"$SYS/x", "#", false},
		{"$SYS/x", "+/x", false},
		{"$SYS/x", "$SYS/#", true},
		{"x/$SYS", "x/+", true},
		{"anything/at/all", "#", true},
		{"+", "#", true},
		{"+/+", "+", false},
	} {
		if got := Within(tc.sub, tc.allowed); got != tc.want {
			t.Errorf("Within(%q, %q) = %v, want %v", tc.sub, tc.allowed, got, tc.want)
		}
	}
}

func TestCheckFilterAndTopic(t *testing.T) {
	for f, ok := range map[string]bool{
		"devices/{device_id}/#": true, "#": true, "+": true, "a/+/b": true, "+/+/#": true, "a//b": true, "/": true,
		"": false, "a/#/b": false, "a#": false, "a/b#": false, "a+/b": false, "a/+b": false, "a\x00b": false, "\xff": false,
		strings.Repeat("a", maxTopic+1): false,
	} {
		if err := CheckFilter(f); (err == nil) != ok {
			t.Errorf("CheckFilter(%q) = %v, want valid %v", f, err, ok)
		}
	}
	for topic, ok := range map[string]bool{"devices/d1/up": true, "a//b": true, "a/+": false, "#": false, "": false} {
		if err := CheckTopic(topic); (err == nil) != ok {
			t.Errorf("CheckTopic(%q) = %v, want valid %v", topic, err, ok)
		}
	}
}

func TestExpand(t *testing.T) {
	got := Expand([]string{"devices/{device_id}/#", "acc/{account_id}/{device_type_id}/{device_id}/+"}, Vars{AccountID: "acc_1", DeviceID: "AA:BB", DeviceTypeID: "dt_2"})
	if diff := cmp.Diff([]string{"devices/AA:BB/#", "acc/acc_1/dt_2/AA:BB/+"}, got); diff != "" {
		t.Errorf("Expand (-want +got):\n%s", diff)
	}
}

func TestFromRoutingKey(t *testing.T) {
	for key, want := range map[string]string{"devices.d1.up": "devices/d1/up", "devices.*.up": "devices/+/up", "devices.d1.#": "devices/d1/#", "x*y.z": "x*y/z"} {
		if got := FromRoutingKey(key); got != want {
			t.Errorf("FromRoutingKey(%q) = %q, want %q", key, got, want)
		}
	}
}

// FuzzWithin checks Within against a plain matcher of topics: whatever topic sub matches,
// allowed must match too when Within says sub is within allowed.
func FuzzWithin(f *testing.F) {
	f.Add("devices/d1/#", "devices/+/#", "devices/d1/up")
	f.Add("a/+", "a/b", "a/b")
	f.Add("$x/+", "#", "$x/y")
	f.Fuzz(func(t *testing.T, sub, allowed, topic string) {
		if CheckFilter(sub) != nil || CheckFilter(allowed) != nil || CheckTopic(topic) != nil {
			return
		}
		if Within(sub, allowed) && matches(sub, topic) && !matches(allowed, topic) {
			t.Fatalf("Within(%q, %q), but topic %q matches only the first", sub, allowed, topic)
		}
		if Within(topic, allowed) != matches(allowed, topic) {
			t.Fatalf("Within(%q, %q) = %v, but matching says %v", topic, allowed, Within(topic, allowed), matches(allowed, topic))
		}
	})
}

// matches is MQTT's matching of one topic against one filter, written the plain way.
func matches(filter, topic string) bool {
	f, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	if strings.HasPrefix(tl[0], "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tl) || (l != "+" && l != tl[i]) {
			return false
		}
	}
	return len(f) == len(tl)
}
