package registry

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
)

// TestCompilePattern: an ID pattern is anchored RE2 of at most 256 characters of text, and each
// refusal says what is wrong with it.
func TestCompilePattern(t *testing.T) {
	longest := "^" + strings.Repeat("[0-9]?", 41) + "[0-9A-F]$" // 256 characters, matching IDs of 1 to 42
	if n := len(longest); n != 256 {
		t.Fatalf("the longest pattern has %d characters", n)
	}
	for _, tc := range []struct{ pattern, says string }{
		{`^T1-[0-9A-F]{12}$`, ""},
		{`^(?:A|B)-[0-9]+$`, ""},
		{`^A-[0-9]+$|^B-[0-9]+$`, ""},
		{longest, ""},
		{``, "ID pattern is empty"},
		{`T1-[0-9]+$`, "is not anchored"},
		{`^T1-[0-9]+`, "is not anchored"},
		{`^A|B$`, "each alternative needs both anchors"},
		{`^A$|B$`, "each alternative needs both anchors"},
		{strings.Replace(longest, "F]$", "FZ]$", 1), "is 257 characters long; at most 256 are allowed"},
		{"^A\n$", "control character (U+000A)"},
		{"^A\x00$", "control character (U+0000)"},
		{"^A\xff$", "not UTF-8"},
		{`^A[$`, "does not compile as a regular expression (RE2 syntax)"},
		{`^(?<=A)B$`, "does not compile as a regular expression (RE2 syntax)"},
		{`^(a)\1$`, "does not compile as a regular expression (RE2 syntax)"},
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

// TestGroupKeySealedForItsGroup: the key a group's creation and rotation show is stored sealed
// with the server's current key, and opens only with its own account, group and key IDs
// (groupKeyAD), which is how enrollment reads it.
func TestGroupKeySealedForItsGroup(t *testing.T) { pgtest.Each(t, testGroupKeySealedForItsGroup) }

func testGroupKeySealedForItsGroup(t *testing.T, url string) {
	ctx := context.Background()
	s, _ := OpenTestService(t, url)
	acc, apiKey, err := s.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.AuthenticateAPIKey(ctx, apiKey)
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, c)
	dt, err := s.CreateDeviceType(admin, devreg.DeviceType{Name: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.CreateEnrollmentGroup(admin, dt.ID, devreg.NewEnrollmentGroup{Name: "A", IDPattern: "^A-[0-9]+$", MaxDevices: 10})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateEnrollmentGroup(admin, dt.ID, devreg.NewEnrollmentGroup{Name: "B", IDPattern: "^B-[0-9]+$", MaxDevices: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Group.Keys) != 1 || a.Group.Keys[0].Sealed != nil || a.Group.Keys[0].SealKeyID != "" {
		t.Errorf("the service hands out a sealed key: %+v", a.Group.Keys)
	}
	stored := func(groupID string) []devreg.EnrollmentKey {
		t.Helper()
		g, err := s.store.EnrollmentGroup(ctx, acc.ID, dt.ID, groupID)
		if err != nil {
			t.Fatal(err)
		}
		return g.Keys
	}
	opens := func(k devreg.EnrollmentKey, groupID, shown string) {
		t.Helper()
		want, err := credential.ParseGroupKey(shown)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.keys.Open(k.SealKeyID, k.Sealed, groupKeyAD(acc.ID, groupID, k.ID))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("key %s of group %s does not open to the key shown: %v", k.ID, groupID, err)
		}
	}
	ka, kb := stored(a.Group.ID)[0], stored(b.Group.ID)[0]
	if ka.SealKeyID != "k1" || ka.ID != a.KeyID {
		t.Errorf("sealed with %q, key %s; want the current server key k1, key %s", ka.SealKeyID, ka.ID, a.KeyID)
	}
	opens(ka, a.Group.ID, a.GroupKey)
	opens(kb, b.Group.ID, b.GroupKey)
	// Moved to the other group, or opened under another key ID or account, it does not open.
	for _, ad := range [][]byte{groupKeyAD(acc.ID, b.Group.ID, ka.ID), groupKeyAD(acc.ID, a.Group.ID, kb.ID), groupKeyAD("acc_other", a.Group.ID, ka.ID)} {
		if _, err := s.keys.Open(ka.SealKeyID, ka.Sealed, ad); err == nil {
			t.Errorf("the sealed key opens with %q", ad)
		}
	}

	// After a new server key is added, a rotation seals with it; the older sealed key still opens.
	keys, err := credential.NewKeyring(s.keys.Keys()[0], credential.Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")})
	if err != nil {
		t.Fatal(err)
	}
	s.keys = keys
	rot, err := s.RotateEnrollmentKey(admin, dt.ID, a.Group.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	ks := stored(a.Group.ID)
	if len(ks) != 2 || ks[1].ID != rot.KeyID || ks[1].SealKeyID != "k2" {
		t.Fatalf("after the rotation: %+v", ks)
	}
	opens(ks[0], a.Group.ID, a.GroupKey)
	opens(ks[1], a.Group.ID, rot.GroupKey)
	if credential.DeriveSecret(mustKey(t, rot.GroupKey), "A-1") == credential.DeriveSecret(mustKey(t, a.GroupKey), "A-1") {
		t.Errorf("the new key derives the same secrets as the old one")
	}
}

func mustKey(t *testing.T, shown string) []byte {
	t.Helper()
	k, err := credential.ParseGroupKey(shown)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
