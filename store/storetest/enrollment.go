package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/store"
)

// newEnrollmentGroup stores an enrollment group of type typeID with one key, and returns it
// with the key in clear.
func newEnrollmentGroup(t *testing.T, db *store.DB, account, typeID, id, pattern string) (devreg.EnrollmentGroup, []byte) {
	t.Helper()
	raw, _ := credential.NewGroupKey()
	g := devreg.EnrollmentGroup{ID: id, AccountID: account, DeviceTypeID: typeID, Name: "group " + id, IDPattern: pattern,
		MaxDevices: 100, MaxPerHour: 10, Status: devreg.StatusEnabled, Temporary: true, CreatedAt: t0,
		Keys: []devreg.EnrollmentKey{{ID: "egk_" + id, CreatedAt: t0, SealKeyID: key.ID, Sealed: credential.Seal(key, raw, []byte(account+"/"+id))}}}
	if err := db.CreateEnrollmentGroup(context.Background(), g, nil); err != nil {
		t.Fatal(err)
	}
	return g, raw
}

func testEnrollmentGroups(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc, other := newAccount(t, db, "enrol"), newAccount(t, db, "enrolother")
	newType(t, db, acc, "dt_a")
	newType(t, db, acc, "dt_b")
	newType(t, db, other, "dt_o")
	a, raw := newEnrollmentGroup(t, db, acc, "dt_a", "eg_1", "^A-[0-9]+$")
	newEnrollmentGroup(t, db, acc, "dt_b", "eg_2", "^B-[0-9]+$")
	newEnrollmentGroup(t, db, other, "dt_o", "eg_3", "^A-[0-9]+$")

	all, err := db.EnrollmentGroups(ctx, acc, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].ID != "eg_1" || all[1].ID != "eg_2" {
		t.Fatalf("the account's groups: %+v, want eg_1 and eg_2 (not the other account's)", all)
	}
	got := all[0]
	if got.IDPattern != a.IDPattern || got.MaxDevices != 100 || got.MaxPerHour != 10 || !got.Temporary || got.AllowList || got.Status != devreg.StatusEnabled {
		t.Errorf("group read back as %+v, stored %+v", got, a)
	}
	if len(got.Keys) != 1 || got.Keys[0].SealKeyID != key.ID {
		t.Fatalf("keys read back: %+v", got.Keys)
	}
	ring, _ := credential.NewKeyring(key)
	opened, err := ring.Open(got.Keys[0].SealKeyID, got.Keys[0].Sealed, []byte(acc+"/eg_1"))
	if err != nil || string(opened) != string(raw) {
		t.Fatalf("the sealed key does not open to the group's key: %v", err)
	}
	if _, err := db.EnrollmentGroup(ctx, other, "dt_a", "eg_1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account read the group: %v", err)
	}
	if g, err := db.EnrollmentGroup(ctx, acc, "dt_a", "eg_1"); err != nil || len(g.Keys) != 1 {
		t.Errorf("EnrollmentGroup: %+v, %v", g, err)
	}
	if err := db.CreateEnrollmentGroup(ctx, devreg.EnrollmentGroup{ID: "eg_x", AccountID: other, DeviceTypeID: "dt_a", CreatedAt: t0,
		Keys: []devreg.EnrollmentKey{{ID: "k"}}}, nil); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a group on another account's type: %v, want ENOTFOUND", err)
	}
	// The check runs under the type's lock with the type's groups, and its refusal writes nothing.
	err = db.CreateEnrollmentGroup(ctx, devreg.EnrollmentGroup{ID: "eg_y", AccountID: acc, DeviceTypeID: "dt_a", CreatedAt: t0, Status: devreg.StatusEnabled,
		Keys: []devreg.EnrollmentKey{{ID: "k", CreatedAt: t0, SealKeyID: key.ID, Sealed: []byte("x")}}},
		func(others []devreg.EnrollmentGroup) error {
			if len(others) != 1 || others[0].ID != "eg_1" {
				return fmt.Errorf("check saw %d groups", len(others))
			}
			return devreg.Errorf(devreg.ECONFLICT, "overlaps")
		})
	if devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Fatalf("a refused check: %v", err)
	}
	for i := 2; i <= devreg.MaxEnrollmentGroupsPerType; i++ {
		newEnrollmentGroup(t, db, acc, "dt_a", fmt.Sprintf("eg_a%02d", i), fmt.Sprintf("^A%d-[0-9]+$", i))
	}
	err = db.CreateEnrollmentGroup(ctx, devreg.EnrollmentGroup{ID: "eg_z", AccountID: acc, DeviceTypeID: "dt_a", CreatedAt: t0.Add(time.Second), Status: devreg.StatusEnabled,
		Keys: []devreg.EnrollmentKey{{ID: "k", CreatedAt: t0, SealKeyID: key.ID, Sealed: []byte("x")}}}, nil)
	if devreg.ErrorCode(err) != devreg.EINVALID {
		t.Fatalf("group %d of a type: %v, want EINVALID", devreg.MaxEnrollmentGroupsPerType+1, err)
	}
	if n, _ := db.EnrollmentGroups(ctx, acc, "dt_a"); len(n) != devreg.MaxEnrollmentGroupsPerType {
		t.Errorf("type dt_a holds %d groups, want %d", len(n), devreg.MaxEnrollmentGroupsPerType)
	}
}
