package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"devreg"
)

// groupRow is an enrollment group as its type's page lists it.
type groupRow struct {
	devreg.EnrollmentGroup
	Open bool // registers devices now: enabled and inside its window
	Full bool // has registered max_devices
	Keys []keyEnd
	// Failures is how many first connections the group refused in the last hour (wrong
	// secrets, IDs off its allow-list, IDs enrolled before): a key in wrong hands shows here.
	Failures int
}

// keyEnd is one of a group's keys as the page lists it.
type keyEnd struct {
	devreg.EnrollmentKey
	Ended bool
}

// newGroupKey is a group key made by the post the page answers, shown this once.
type newGroupKey struct {
	GroupName string
	KeyID     string
	Key       string
	Rotated   bool
	OldEnd    *time.Time // when a rotation ended the group's older keys
}

// enrollmentGroupsPage lists a type's groups, with the key the post before made if the address
// names it (see onceStore): shown on the first load only. devreg keeps only its hash.
func (h *Handler) enrollmentGroupsPage(w http.ResponseWriter, r *http.Request) error {
	v, asked, ok := h.once.take(r)
	if k, isKey := v.(*newGroupKey); ok && isKey {
		return h.renderGroups(w, r, http.StatusOK, k, nil)
	}
	if asked {
		return h.renderGroups(w, r, http.StatusOK, nil, &flash{Kind: "error", Text: "The group's new key was shown once already, and devreg cannot show it again: it keeps only a hash of it. If you did not copy it, make a new key."})
	}
	return h.renderGroups(w, r, http.StatusOK, nil, nil)
}

// renderGroups renders the page of a type's enrollment groups, with the key just made, if any.
func (h *Handler) renderGroups(w http.ResponseWriter, r *http.Request, status int, created *newGroupKey, fl *flash) error {
	ctx := r.Context()
	t, err := h.svc.DeviceType(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	groups, err := h.svc.ListEnrollmentGroups(ctx, t.ID)
	if err != nil {
		return err
	}
	now := h.svc.Now()
	rows := make([]groupRow, 0, len(groups))
	for _, g := range groups {
		row := groupRow{EnrollmentGroup: g, Open: g.OpenAt(now), Full: g.EnrolledCount >= g.MaxDevices}
		if row.Failures, err = h.svc.EnrollmentFailures(ctx, g.AccountID, g.ID); err != nil {
			return err
		}
		for _, k := range g.Keys {
			row.Keys = append(row.Keys, keyEnd{EnrollmentKey: k, Ended: !k.LiveAt(now)})
		}
		rows = append(rows, row)
	}
	return h.renderFlash(w, r, status, "devicetype_groups", "Enrollment groups of "+t.Name, "devicetypes", struct {
		Type          devreg.DeviceType
		Groups        []groupRow
		NewKey        *newGroupKey
		Max           int
		MaxKeys       int
		MaxPerHour    int
		DefaultHourly int
	}{t, rows, created, devreg.MaxEnrollmentGroupsPerType, devreg.MaxEnrollmentGroupKeys, devreg.MaxEnrollmentPerHour, devreg.DefaultEnrollmentPerHour}, fl)
}

func groupsPage(typeID string) string {
	return "/devicetypes/" + url.PathEscape(typeID) + "/enrollment_groups"
}

func (h *Handler) createEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	in := devreg.NewEnrollmentGroup{Name: r.PostFormValue("name"), IDPattern: strings.TrimSpace(r.PostFormValue("id_pattern"))}
	temporary := r.PostFormValue("temporary") == "on"
	in.Temporary = &temporary
	created, err := func() (devreg.EnrollmentGroupKeyed, error) {
		maxDevices, err := formInt(r, "max_devices")
		if err != nil {
			return devreg.EnrollmentGroupKeyed{}, err
		}
		in.MaxDevices = int64(maxDevices)
		if in.MaxPerHour, err = formOptionalInt(r, "max_per_hour"); err != nil {
			return devreg.EnrollmentGroupKeyed{}, err
		}
		if in.NotBefore, err = formTime(r, "not_before", "Not before"); err != nil {
			return devreg.EnrollmentGroupKeyed{}, err
		}
		if in.NotAfter, err = formTime(r, "not_after", "Not after"); err != nil {
			return devreg.EnrollmentGroupKeyed{}, err
		}
		return h.svc.CreateEnrollmentGroup(r.Context(), id, in)
	}()
	if isUserError(err) {
		return h.redirect(w, r, groupsPage(id), "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, h.once.put(r, "/devicetypes/"+id+"/enrollment_groups", &newGroupKey{GroupName: created.Group.Name, KeyID: created.KeyID, Key: created.GroupKey}), http.StatusSeeOther)
	return nil
}

// setEnrollmentGroupStatus disables or enables a group.
func (h *Handler) setEnrollmentGroupStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	status := devreg.DeviceStatus(r.PostFormValue("status"))
	g, err := h.svc.UpdateEnrollmentGroup(r.Context(), id, r.PathValue("group_id"), devreg.EnrollmentGroupUpdate{Status: &status})
	if isUserError(err) {
		return h.redirect(w, r, groupsPage(id), "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	text := fmt.Sprintf("Group %s is enabled: it registers devices again.", g.Name)
	if g.Status == devreg.StatusDisabled {
		text = fmt.Sprintf("Group %s is disabled: it registers no device until it is enabled; the devices it registered stay.", g.Name)
	}
	return h.redirect(w, r, groupsPage(id), "notice", text)
}

func (h *Handler) deleteEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := h.svc.DeleteEnrollmentGroup(r.Context(), id, r.PathValue("group_id")); err != nil {
		return err
	}
	return h.redirect(w, r, groupsPage(id), "notice", "Group deleted: it registers no device from now on. The devices it registered stay, in their batches.")
}

// rotateEnrollmentKey makes a group's new key and shows it once; the old keys end when the form
// says, or a week from now.
func (h *Handler) rotateEnrollmentKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	end, err := formTime(r, "old_keys_not_after", "Old keys end")
	var k devreg.EnrollmentGroupKeyed
	if err == nil {
		k, err = h.svc.RotateEnrollmentKey(r.Context(), id, r.PathValue("group_id"), end)
	}
	if isUserError(err) {
		return h.redirect(w, r, groupsPage(id), "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	shown := &newGroupKey{GroupName: k.Group.Name, KeyID: k.KeyID, Key: k.GroupKey, Rotated: true}
	for _, old := range k.Group.Keys {
		if old.ID != k.KeyID && old.NotAfter != nil && (shown.OldEnd == nil || old.NotAfter.After(*shown.OldEnd)) {
			shown.OldEnd = old.NotAfter
		}
	}
	http.Redirect(w, r, h.once.put(r, "/devicetypes/"+id+"/enrollment_groups", shown), http.StatusSeeOther)
	return nil
}
