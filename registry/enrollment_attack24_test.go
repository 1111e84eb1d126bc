package registry

import (
	"context"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// TestAttack24CheckCountsSealedGroupKeys: group keys are sealed with a server key of the key file,
// but "devreg check" (store.CheckHashKeys) counted only the keys of secret hashes. An operator who
// rotated the key file and dropped the old key once check showed it unused lost every group key
// sealed with it: each group enrolled nothing from then on, and the devices already flashed with
// secrets derived from those keys could never enrol. Fixed: the check counts the sealed group
// keys, and a missing key that sealed some is a problem naming them.
func TestAttack24CheckCountsSealedGroupKeys(t *testing.T) {
	pgtest.Each(t, testAttack24CheckCountsSealedGroupKeys)
}

func testAttack24CheckCountsSealedGroupKeys(t *testing.T, url string) {
	ctx := context.Background()
	s, _ := OpenTestService(t, url)
	_, apiKey, err := s.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
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
	for _, p := range []string{"^A-[0-9]+$", "^B-[0-9]+$"} {
		if _, err := s.CreateEnrollmentGroup(admin, dt.ID, devreg.NewEnrollmentGroup{Name: p[1:2], IDPattern: p, MaxDevices: 10}); err != nil {
			t.Fatal(err)
		}
	}
	db := s.store.(*store.DB)
	r, err := db.CheckHashKeys(ctx, func(id string) bool { return id == "k1" }, "secret.keys")
	if err != nil || len(r.Problems) > 0 || !strings.Contains(r.Summary, "k1") {
		t.Errorf("check with the sealing key = %+v, %v; want clean, naming k1", r, err)
	}
	r, err = db.CheckHashKeys(ctx, func(id string) bool { return id == "k2" }, "secret.keys")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "key k1 is not in secret.keys, but 2 enrollment group keys were sealed with it") {
		t.Errorf("check without the key that sealed the group keys = %+v; want the group keys named as a problem", r)
	}
}
