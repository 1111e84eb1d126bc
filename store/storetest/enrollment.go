package storetest

import (
	"context"
	"fmt"
	"strings"
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
		Keys: []devreg.EnrollmentKey{{ID: "egk_" + id, CreatedAt: t0, SealKeyID: key.ID, Sealed: credential.Seal(key, raw, credential.SealContext(account, id, "egk_"+id))}}}
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
	opened, err := ring.Open(got.Keys[0].SealKeyID, got.Keys[0].Sealed, credential.SealContext(acc, "eg_1", "egk_eg_1"))
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

// auditedCtx carries an audit entry with action, as the registry's writes do.
func auditedCtx(action string) context.Context {
	return devreg.NewContextWithAudit(context.Background(), &devreg.AuditEntry{Time: t0, Action: action,
		Actor: devreg.AuditActor{Type: devreg.ActorCLI, ID: "cli"}, Object: devreg.AuditObject{Type: "devicetype", ID: "dt_a"}, Details: map[string]any{}})
}

// auditActions are the account's audit actions, newest first.
func auditActions(t *testing.T, db *store.DB, account string) []string {
	t.Helper()
	entries, err := db.ListAudit(context.Background(), account, devreg.AuditFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action)
	}
	return actions
}

// testEnrollmentGroupChanges updates, rotates the keys of and deletes enrollment groups: each
// change is audited in its transaction, a refused one writes nothing, and the limits hold.
func testEnrollmentGroupChanges(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc, other := newAccount(t, db, "enrolchg"), newAccount(t, db, "enrolchgother")
	newType(t, db, acc, "dt_a")
	newType(t, db, other, "dt_o")
	newEnrollmentGroup(t, db, acc, "dt_a", "eg_1", "^A-[0-9]+$")
	newEnrollmentGroup(t, db, acc, "dt_a", "eg_2", "^B-[0-9]+$")

	t.Run("update", func(t *testing.T) {
		end := t0.Add(48 * time.Hour)
		g, err := db.UpdateEnrollmentGroup(auditedCtx("enrollment_group.update"), acc, "dt_a", "eg_1",
			func(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error) {
				if g.ID != "eg_1" || len(others) != 1 || others[0].ID != "eg_2" {
					return g, fmt.Errorf("decide saw %s and %d others", g.ID, len(others))
				}
				g.Name, g.IDPattern, g.MaxDevices, g.MaxPerHour, g.NotAfter, g.Status, g.Temporary = "renamed", "^A-[0-9]{4}$", 7, 3, &end, devreg.StatusDisabled, false
				g.EnrolledCount, g.Keys = 99, nil // not the decision's to change
				return g, nil
			})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := db.EnrollmentGroup(ctx, acc, "dt_a", "eg_1")
		if err != nil {
			t.Fatal(err)
		}
		if stored.Name != "renamed" || stored.IDPattern != "^A-[0-9]{4}$" || stored.MaxDevices != 7 || stored.MaxPerHour != 3 ||
			stored.NotAfter == nil || !stored.NotAfter.Equal(end) || stored.NotBefore != nil || stored.Status != devreg.StatusDisabled || stored.Temporary {
			t.Errorf("after the update the group is %+v", stored)
		}
		if stored.EnrolledCount != 0 || len(stored.Keys) != 1 || g.EnrolledCount != 0 || len(g.Keys) != 1 {
			t.Errorf("the update changed the count or the keys: stored %d, %d keys; returned %d, %d keys", stored.EnrolledCount, len(stored.Keys), g.EnrolledCount, len(g.Keys))
		}
		// A refusal writes nothing and records nothing.
		_, err = db.UpdateEnrollmentGroup(auditedCtx("enrollment_group.update"), acc, "dt_a", "eg_1",
			func(g devreg.EnrollmentGroup, _ []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error) {
				return g, devreg.Errorf(devreg.ECONFLICT, "name taken")
			})
		if devreg.ErrorCode(err) != devreg.ECONFLICT {
			t.Errorf("a refused decision: %v", err)
		}
		for _, c := range []struct{ account, typ, group string }{{other, "dt_a", "eg_1"}, {acc, "dt_o", "eg_1"}, {acc, "dt_a", "eg_x"}} {
			_, err := db.UpdateEnrollmentGroup(ctx, c.account, c.typ, c.group, func(g devreg.EnrollmentGroup, _ []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error) {
				t.Errorf("decide called for %v", c)
				return g, nil
			})
			if devreg.ErrorCode(err) != devreg.ENOTFOUND {
				t.Errorf("update of %v: %v, want ENOTFOUND", c, err)
			}
		}
		if got := auditActions(t, db, acc); len(got) != 1 || got[0] != "enrollment_group.update" {
			t.Errorf("audit entries %v, want the one update", got)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		sealed := func(id string, at time.Time) devreg.EnrollmentKey {
			return devreg.EnrollmentKey{ID: id, CreatedAt: at, SealKeyID: key.ID, Sealed: []byte("sealed " + id)}
		}
		now := t0.Add(time.Hour)
		week := now.Add(7 * 24 * time.Hour)
		if err := db.AddEnrollmentKey(auditedCtx("enrollment_group.key_create"), acc, "dt_a", "eg_2", sealed("egk_2b", now), week, now); err != nil {
			t.Fatal(err)
		}
		g, _ := db.EnrollmentGroup(ctx, acc, "dt_a", "eg_2")
		if len(g.Keys) != 2 || g.Keys[0].ID != "egk_eg_2" || g.Keys[0].NotAfter == nil || !g.Keys[0].NotAfter.Equal(week) ||
			g.Keys[1].ID != "egk_2b" || g.Keys[1].NotAfter != nil || string(g.Keys[1].Sealed) != "sealed egk_2b" {
			t.Fatalf("after a rotation the keys are %+v", g.Keys)
		}
		// A later rotation ending the old keys earlier moves every later end to its time; an
		// end that comes sooner stays.
		soon := now.Add(time.Hour)
		noErr(t, db.AddEnrollmentKey(ctx, acc, "dt_a", "eg_2", sealed("egk_2c", now), soon, now))
		noErr(t, db.AddEnrollmentKey(ctx, acc, "dt_a", "eg_2", sealed("egk_2d", now), week, now))
		g, _ = db.EnrollmentGroup(ctx, acc, "dt_a", "eg_2")
		ends := map[string]*time.Time{}
		for _, k := range g.Keys {
			ends[k.ID] = k.NotAfter
		}
		if !ends["egk_eg_2"].Equal(soon) || !ends["egk_2b"].Equal(soon) || !ends["egk_2c"].Equal(week) || ends["egk_2d"] != nil {
			t.Errorf("ends after three rotations: %v %v %v %v", ends["egk_eg_2"], ends["egk_2b"], ends["egk_2c"], ends["egk_2d"])
		}
		noErr(t, db.AddEnrollmentKey(ctx, acc, "dt_a", "eg_2", sealed("egk_2e", now), week, now))
		// Five keys, none ended at now: the sixth is refused, and nothing changes.
		err := db.AddEnrollmentKey(auditedCtx("enrollment_group.key_create"), acc, "dt_a", "eg_2", sealed("egk_2f", now), now.Add(time.Minute), now)
		if devreg.ErrorCode(err) != devreg.EINVALID || !strings.Contains(err.Error(), "holds 5 keys") {
			t.Fatalf("a sixth key with none ended: %v, want EINVALID", err)
		}
		g, _ = db.EnrollmentGroup(ctx, acc, "dt_a", "eg_2")
		if len(g.Keys) != 5 || g.Keys[4].NotAfter != nil {
			t.Fatalf("a refused rotation changed the keys: %+v", g.Keys)
		}
		// Two hours on, the first two have ended: the sixth takes the place of the one that ended first.
		later := now.Add(2 * time.Hour)
		noErr(t, db.AddEnrollmentKey(ctx, acc, "dt_a", "eg_2", sealed("egk_2f", later), later.Add(time.Hour), later))
		g, _ = db.EnrollmentGroup(ctx, acc, "dt_a", "eg_2")
		var ids []string
		for _, k := range g.Keys {
			ids = append(ids, k.ID)
		}
		if len(g.Keys) != devreg.MaxEnrollmentGroupKeys || strings.Contains(strings.Join(ids, " "), "egk_eg_2") || ids[len(ids)-1] != "egk_2f" {
			t.Errorf("after a rotation of a full group whose keys ended: %v", ids)
		}
		if err := db.AddEnrollmentKey(ctx, other, "dt_a", "eg_2", sealed("egk_x", now), week, now); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("another account's rotation: %v", err)
		}
		if got := auditActions(t, db, acc); len(got) != 2 || got[0] != "enrollment_group.key_create" {
			t.Errorf("audit entries %v, want the one audited rotation on top", got)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := db.DeleteEnrollmentGroup(auditedCtx("enrollment_group.delete"), other, "dt_a", "eg_1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("another account's delete: %v", err)
		}
		noErr(t, db.DeleteEnrollmentGroup(auditedCtx("enrollment_group.delete"), acc, "dt_a", "eg_1"))
		if _, err := db.EnrollmentGroup(ctx, acc, "dt_a", "eg_1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("a deleted group reads as %v", err)
		}
		if err := db.DeleteEnrollmentGroup(ctx, acc, "dt_a", "eg_1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("deleting it again: %v", err)
		}
		if left, _ := db.EnrollmentGroups(ctx, acc, "dt_a"); len(left) != 1 || left[0].ID != "eg_2" || len(left[0].Keys) != devreg.MaxEnrollmentGroupKeys {
			t.Errorf("left: %+v", left)
		}
		if got := auditActions(t, db, acc); len(got) != 3 || got[0] != "enrollment_group.delete" {
			t.Errorf("audit entries %v", got)
		}
		// Its place is free again.
		newEnrollmentGroup(t, db, acc, "dt_a", "eg_1", "^A-[0-9]+$")
	})
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
