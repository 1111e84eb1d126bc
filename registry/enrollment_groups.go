package registry

import (
	"context"
	"errors"
	"regexp"
	"slices"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/enrollpattern"
)

// Managing enrollment groups (issue 24): an administrator creates a group on a device type, with
// an ID pattern, limits and a window, and gets its group key once; rotates the key (a new one
// beside the old ones, which end at a time the administrator sets); changes, disables and
// deletes the group. The group key is sealed with the server's current secret key before it is
// stored, and never appears again: not in listings, audit details, logs or errors.

// groupKeyAD is the additional data a group key is sealed with (credential.Seal): it binds the
// sealed key to its account, group and key ID, so that a sealed key copied into another group's
// row does not open there. Enrollment opens the key with the same value.
func groupKeyAD(accountID, groupID, keyID string) []byte {
	return credential.SealContext(accountID, groupID, keyID)
}

// compilePattern checks an enrollment group's ID pattern and compiles it (enrollpattern.Compile:
// anchored at both ends in every alternative, RE2, bounded in size, matching some valid device ID).
func compilePattern(p string) (*regexp.Regexp, error) {
	return enrollpattern.Compile(p)
}

// checkOverlap refuses a group whose ID pattern shares a valid device ID with the pattern of
// another group of its type (others, read under the type's lock): which of the two a device
// would enrol through could not be told. Groups of different types may overlap; the older group
// wins there.
//
// disjoint holds the patterns found to share no ID with g's, and gains those this call finds.
// One comparison may take tens of milliseconds (enrollpattern.MaxOverlapStates), and a type has
// up to 19 other groups: the callers compare first without the lock, and under it only the
// patterns that appeared meanwhile, so that the lock (on SQLite, every write of the server) is
// not held for the searches.
func checkOverlap(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup, disjoint map[string]bool) error {
	for _, o := range others {
		if o.ID == g.ID || disjoint[o.IDPattern] {
			continue
		}
		example, ok, err := enrollpattern.Overlap(g.IDPattern, o.IDPattern)
		if err != nil {
			return devreg.Errorf(devreg.EINVALID, "id_pattern cannot be compared with the pattern of enrollment group %q (%s) of this device type: %v; simplify it", o.Name, o.ID, err)
		}
		if ok {
			return devreg.Errorf(devreg.ECONFLICT, "id_pattern overlaps the pattern `%s` of enrollment group %q (%s) of this device type: both match the device ID %s, among others; "+
				"two groups of one device type may not share a device ID", o.IDPattern, o.Name, o.ID, example)
		}
		disjoint[o.IDPattern] = true
	}
	return nil
}

// checkEnrollmentGroup checks the fields of a group an administrator sets.
func checkEnrollmentGroup(g devreg.EnrollmentGroup) error {
	if err := checkName("name", g.Name, 1, 200); err != nil {
		return err
	}
	if _, err := compilePattern(g.IDPattern); err != nil {
		return err
	}
	if g.MaxDevices < 1 || g.MaxDevices > devreg.MaxEnrollmentDevices {
		return devreg.Errorf(devreg.EINVALID, "max_devices must be between 1 and %d: the most devices the group may register in all; it is %d", int64(devreg.MaxEnrollmentDevices), g.MaxDevices)
	}
	if g.MaxPerHour < 1 || g.MaxPerHour > devreg.MaxEnrollmentPerHour {
		return devreg.Errorf(devreg.EINVALID, "max_per_hour must be between 1 and %d; it is %d", devreg.MaxEnrollmentPerHour, g.MaxPerHour)
	}
	if g.NotBefore != nil && g.NotAfter != nil && !g.NotBefore.Before(*g.NotAfter) {
		return devreg.Errorf(devreg.EINVALID, "not_before (%s) must be before not_after (%s)", g.NotBefore.Format(time.RFC3339), g.NotAfter.Format(time.RFC3339))
	}
	if g.Status != devreg.StatusEnabled && g.Status != devreg.StatusDisabled {
		return devreg.Errorf(devreg.EINVALID, "status must be %q or %q; it is %q", devreg.StatusEnabled, devreg.StatusDisabled, g.Status)
	}
	return nil
}

// uniqueGroupName refuses a name another group of the type has: the console and the audit log
// tell groups apart by name. It runs under the type's lock, with the type's other groups.
func uniqueGroupName(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup) error {
	for _, o := range others {
		if strings.EqualFold(o.Name, g.Name) {
			return devreg.Errorf(devreg.ECONFLICT, "device type %s has an enrollment group named %q already (%s); choose another name", g.DeviceTypeID, o.Name, o.ID)
		}
	}
	return nil
}

// newGroupKey makes a group key and seals it with the server's current secret key for group
// groupID of the account; the key in base64 is for the caller to show once.
func (s *Service) newGroupKey(accountID, groupID string, now time.Time) (devreg.EnrollmentKey, string) {
	raw, encoded := credential.NewGroupKey()
	current := s.keys.Current()
	k := devreg.EnrollmentKey{ID: credential.RandomID("egk", 16), CreatedAt: now, SealKeyID: current.ID}
	k.Sealed = credential.Seal(current, raw, groupKeyAD(accountID, groupID, k.ID))
	clear(raw)
	return k, encoded
}

// CreateEnrollmentGroup creates an enrollment group on one of the caller's device types (admin
// only) and returns it with its first group key, which is shown this once. max_devices is
// required (1 to devreg.MaxEnrollmentDevices); max_per_hour takes devreg.DefaultEnrollmentPerHour
// when nil; temporary takes true when nil. A type holds at most devreg.MaxEnrollmentGroupsPerType
// groups (EINVALID), with different names (ECONFLICT).
func (s *Service) CreateEnrollmentGroup(ctx context.Context, deviceTypeID string, in devreg.NewEnrollmentGroup) (devreg.EnrollmentGroupKeyed, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	now := s.now()
	g := devreg.EnrollmentGroup{ID: credential.RandomID("eg", 16), AccountID: c.AccountID, DeviceTypeID: deviceTypeID,
		Name: strings.TrimSpace(in.Name), IDPattern: in.IDPattern, MaxDevices: in.MaxDevices, MaxPerHour: devreg.DefaultEnrollmentPerHour,
		NotBefore: in.NotBefore, NotAfter: in.NotAfter, Status: devreg.StatusEnabled, Temporary: true, CreatedAt: now}
	if in.MaxPerHour != nil {
		g.MaxPerHour = *in.MaxPerHour
	}
	if in.Temporary != nil {
		g.Temporary = *in.Temporary
	}
	if in.MaxDevices == 0 {
		return devreg.EnrollmentGroupKeyed{}, devreg.Errorf(devreg.EINVALID, "max_devices is required: the most devices the group may register in all, from 1 to %d", int64(devreg.MaxEnrollmentDevices))
	}
	if err := checkEnrollmentGroup(g); err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	k, encoded := s.newGroupKey(c.AccountID, g.ID, now)
	g.Keys = []devreg.EnrollmentKey{k}
	details := groupFields(g)
	details["key_id"] = k.ID
	ctx = s.audited(ctx, actorOf(c), "enrollment_group.create", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID}, details)
	disjoint := map[string]bool{}
	check := func(others []devreg.EnrollmentGroup) error {
		if err := uniqueGroupName(g, others); err != nil {
			return err
		}
		return checkOverlap(g, others, disjoint)
	}
	// Without the lock first (see checkOverlap); under it, check again what changed meanwhile.
	others, err := s.store.EnrollmentGroups(ctx, c.AccountID, deviceTypeID)
	if err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	if err := check(others); err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	if err := s.store.CreateEnrollmentGroup(ctx, g, check); err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	return devreg.EnrollmentGroupKeyed{Group: shown(g), KeyID: k.ID, GroupKey: encoded}, nil
}

// ListEnrollmentGroups returns the enrollment groups of one of the caller's device types (admin
// only), oldest first, each with its keys' IDs and ends but never the keys.
func (s *Service) ListEnrollmentGroups(ctx context.Context, deviceTypeID string) ([]devreg.EnrollmentGroup, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return nil, err
	}
	groups, err := s.store.EnrollmentGroups(ctx, c.AccountID, deviceTypeID)
	if err != nil {
		return nil, err
	}
	for i := range groups {
		groups[i] = shown(groups[i])
	}
	return groups, nil
}

// EnrollmentGroup returns one enrollment group of one of the caller's device types (admin only),
// without its keys' values.
func (s *Service) EnrollmentGroup(ctx context.Context, deviceTypeID, groupID string) (devreg.EnrollmentGroup, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return devreg.EnrollmentGroup{}, err
	}
	if !opaqueID(groupID) {
		return devreg.EnrollmentGroup{}, groupNotFound(deviceTypeID, groupID)
	}
	g, err := s.store.EnrollmentGroup(ctx, c.AccountID, deviceTypeID, groupID)
	return shown(g), err
}

// errUnchanged ends an update that changes nothing: nothing is written or recorded.
var errUnchanged = errors.New("nothing to change")

// UpdateEnrollmentGroup changes the fields of an enrollment group that upd sets (admin only),
// checked as at creation. Disabling a group stops its enrolments at once. A max_devices below the
// group's enrolled_count is allowed: the group then registers no more devices, and those it
// registered stay.
func (s *Service) UpdateEnrollmentGroup(ctx context.Context, deviceTypeID, groupID string, upd devreg.EnrollmentGroupUpdate) (devreg.EnrollmentGroup, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return devreg.EnrollmentGroup{}, err
	}
	if !opaqueID(groupID) {
		return devreg.EnrollmentGroup{}, groupNotFound(deviceTypeID, groupID)
	}
	if upd.IDPattern != nil {
		if _, err := compilePattern(*upd.IDPattern); err != nil {
			return devreg.EnrollmentGroup{}, err
		}
	}
	disjoint := map[string]bool{}
	if upd.IDPattern != nil {
		// Without the lock first (see checkOverlap); under it, check again what changed meanwhile.
		groups, err := s.store.EnrollmentGroups(ctx, c.AccountID, deviceTypeID)
		if err != nil {
			return devreg.EnrollmentGroup{}, err
		}
		if slices.ContainsFunc(groups, func(g devreg.EnrollmentGroup) bool { return g.ID == groupID }) {
			if err := checkOverlap(devreg.EnrollmentGroup{ID: groupID, IDPattern: *upd.IDPattern}, groups, disjoint); err != nil {
				return devreg.EnrollmentGroup{}, err
			}
		}
	}
	entry := s.auditEntry(ctx, actorOf(c), "enrollment_group.update", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID}, nil)
	var same devreg.EnrollmentGroup
	g, err := s.store.UpdateEnrollmentGroup(devreg.NewContextWithAudit(ctx, entry), c.AccountID, deviceTypeID, groupID,
		func(g devreg.EnrollmentGroup, others []devreg.EnrollmentGroup) (devreg.EnrollmentGroup, error) {
			before := groupFields(g)
			applyGroupUpdate(&g, upd)
			if err := checkEnrollmentGroup(g); err != nil {
				return g, err
			}
			if err := uniqueGroupName(g, others); err != nil {
				return g, err
			}
			if upd.IDPattern != nil {
				if err := checkOverlap(g, others, disjoint); err != nil {
					return g, err
				}
			}
			diff := change(before, groupFields(g))
			if unchanged(diff) {
				same = g
				return g, errUnchanged
			}
			diff["group_id"] = g.ID
			entry.Details = diff
			return g, nil
		})
	if errors.Is(err, errUnchanged) {
		return shown(same), nil
	}
	return shown(g), err
}

// applyGroupUpdate sets the fields of g that upd sets.
func applyGroupUpdate(g *devreg.EnrollmentGroup, upd devreg.EnrollmentGroupUpdate) {
	if upd.Name != nil {
		g.Name = strings.TrimSpace(*upd.Name)
	}
	if upd.IDPattern != nil {
		g.IDPattern = *upd.IDPattern
	}
	if upd.MaxDevices != nil {
		g.MaxDevices = *upd.MaxDevices
	}
	if upd.MaxPerHour != nil {
		g.MaxPerHour = *upd.MaxPerHour
	}
	if upd.ClearNotBefore {
		g.NotBefore = nil
	} else if upd.NotBefore != nil {
		g.NotBefore = upd.NotBefore
	}
	if upd.ClearNotAfter {
		g.NotAfter = nil
	} else if upd.NotAfter != nil {
		g.NotAfter = upd.NotAfter
	}
	if upd.Status != nil {
		g.Status = *upd.Status
	}
	if upd.Temporary != nil {
		g.Temporary = *upd.Temporary
	}
}

// DeleteEnrollmentGroup deletes an enrollment group with its keys and allow-list (admin only):
// it registers no device from then on. The devices it registered stay, in their batches, and so
// do its records of which IDs enrolled, so that those IDs do not enrol again through another
// group of the account unless an administrator re-allows them.
func (s *Service) DeleteEnrollmentGroup(ctx context.Context, deviceTypeID, groupID string) error {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return err
	}
	if !opaqueID(groupID) {
		return groupNotFound(deviceTypeID, groupID)
	}
	g, err := s.store.EnrollmentGroup(ctx, c.AccountID, deviceTypeID, groupID)
	if err != nil {
		return err
	}
	ctx = s.audited(ctx, actorOf(c), "enrollment_group.delete", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID}, groupFields(g))
	return s.store.DeleteEnrollmentGroup(ctx, c.AccountID, deviceTypeID, groupID)
}

// RotateEnrollmentKey gives an enrollment group a new key (admin only), shown this once, beside
// its older keys, which end at oldKeysNotAfter: by then the factory lines must derive secrets
// with the new key. Nil ends them devreg.DefaultOldKeysGrace from now; a time already past ends
// them now. A key that ends sooner keeps its end. A group holds at most
// devreg.MaxEnrollmentGroupKeys keys; keys that have ended make room, and when none has, the
// rotation is EINVALID.
func (s *Service) RotateEnrollmentKey(ctx context.Context, deviceTypeID, groupID string, oldKeysNotAfter *time.Time) (devreg.EnrollmentGroupKeyed, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	if !opaqueID(groupID) {
		return devreg.EnrollmentGroupKeyed{}, groupNotFound(deviceTypeID, groupID)
	}
	now := s.now()
	end := now.Add(devreg.DefaultOldKeysGrace)
	if oldKeysNotAfter != nil {
		end = oldKeysNotAfter.UTC().Truncate(time.Microsecond)
	}
	if end.Before(now) {
		end = now
	}
	k, encoded := s.newGroupKey(c.AccountID, groupID, now)
	ctx = s.audited(ctx, actorOf(c), "enrollment_group.key_create", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID},
		map[string]any{"group_id": groupID, "key_id": k.ID, "old_keys_not_after": end.Format(time.RFC3339Nano)})
	if err := s.store.AddEnrollmentKey(ctx, c.AccountID, deviceTypeID, groupID, k, end, now); err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	g, err := s.store.EnrollmentGroup(ctx, c.AccountID, deviceTypeID, groupID)
	if err != nil {
		return devreg.EnrollmentGroupKeyed{}, err
	}
	return devreg.EnrollmentGroupKeyed{Group: shown(g), KeyID: k.ID, GroupKey: encoded}, nil
}

func groupNotFound(deviceTypeID, groupID string) error {
	return devreg.Errorf(devreg.ENOTFOUND, "device type %s has no enrollment group %s", deviceTypeID, groupID)
}

// shown is a group as the service hands it out: its keys without their sealed values.
func shown(g devreg.EnrollmentGroup) devreg.EnrollmentGroup {
	keys := make([]devreg.EnrollmentKey, len(g.Keys))
	for i, k := range g.Keys {
		keys[i] = devreg.EnrollmentKey{ID: k.ID, CreatedAt: k.CreatedAt, NotAfter: k.NotAfter}
	}
	g.Keys = keys
	return g
}

// groupFields are an enrollment group's fields as its audit entries show them: never a key.
func groupFields(g devreg.EnrollmentGroup) map[string]any {
	when := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return map[string]any{"group_id": g.ID, "name": g.Name, "id_pattern": g.IDPattern, "max_devices": g.MaxDevices, "max_per_hour": g.MaxPerHour,
		"not_before": when(g.NotBefore), "not_after": when(g.NotAfter), "status": string(g.Status), "temporary": g.Temporary}
}
