package httpapi

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"time"

	"devreg"
)

// enrollmentGroupList is the answer of GET /devicetypes/{id}/enrollment_groups.
type enrollmentGroupList struct {
	Groups []devreg.EnrollmentGroup `json:"enrollment_groups"`
}

// newEnrollmentGroup is the answer of POST /devicetypes/{id}/enrollment_groups: the group and
// its key, this once.
type newEnrollmentGroup struct {
	devreg.EnrollmentGroup
	GroupKey string `json:"group_key"`
}

// newEnrollmentKey is the answer of POST …/enrollment_groups/{group_id}/keys.
type newEnrollmentKey struct {
	ID       string                 `json:"id"`
	GroupKey string                 `json:"group_key"`
	Group    devreg.EnrollmentGroup `json:"group"`
}

func (h *Handler) listEnrollmentGroups(w http.ResponseWriter, r *http.Request) error {
	groups, err := h.svc.ListEnrollmentGroups(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, enrollmentGroupList{groups})
}

func (h *Handler) createEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name       string       `json:"name"`
		IDPattern  string       `json:"id_pattern"`
		MaxDevices int64        `json:"max_devices"`
		MaxPerHour *int         `json:"max_per_hour"`
		NotBefore  optionalTime `json:"not_before"`
		NotAfter   optionalTime `json:"not_after"`
		Temporary  *bool        `json:"temporary"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	notBefore, notAfter, err := groupWindow(in.NotBefore, in.NotAfter)
	if err != nil {
		return err
	}
	g, err := h.svc.CreateEnrollmentGroup(r.Context(), r.PathValue("id"), devreg.NewEnrollmentGroup{Name: in.Name, IDPattern: in.IDPattern,
		MaxDevices: in.MaxDevices, MaxPerHour: in.MaxPerHour, NotBefore: notBefore, NotAfter: notAfter, Temporary: in.Temporary})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the only copy of the group key
	return writeJSON(w, http.StatusCreated, newEnrollmentGroup{g.Group, g.GroupKey})
}

func (h *Handler) getEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := h.svc.EnrollmentGroup(r.Context(), r.PathValue("id"), r.PathValue("group_id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, g)
}

func (h *Handler) updateEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name       *string              `json:"name"`
		IDPattern  *string              `json:"id_pattern"`
		MaxDevices *int64               `json:"max_devices"`
		MaxPerHour *int                 `json:"max_per_hour"`
		NotBefore  optionalTime         `json:"not_before"`
		NotAfter   optionalTime         `json:"not_after"`
		Status     *devreg.DeviceStatus `json:"status"`
		Temporary  *bool                `json:"temporary"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	notBefore, notAfter, err := groupWindow(in.NotBefore, in.NotAfter)
	if err != nil {
		return err
	}
	g, err := h.svc.UpdateEnrollmentGroup(r.Context(), r.PathValue("id"), r.PathValue("group_id"), devreg.EnrollmentGroupUpdate{
		Name: in.Name, IDPattern: in.IDPattern, MaxDevices: in.MaxDevices, MaxPerHour: in.MaxPerHour,
		NotBefore: notBefore, ClearNotBefore: in.NotBefore.set && notBefore == nil,
		NotAfter: notAfter, ClearNotAfter: in.NotAfter.set && notAfter == nil,
		Status: in.Status, Temporary: in.Temporary})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, g)
}

func (h *Handler) deleteEnrollmentGroup(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteEnrollmentGroup(r.Context(), r.PathValue("id"), r.PathValue("group_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// rotateEnrollmentKey takes an optional body: none at all ends the old keys a week from now.
func (h *Handler) rotateEnrollmentKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		OldKeysNotAfter optionalTime `json:"old_keys_not_after"`
	}
	// No body at all may also come chunked, with no Content-Length to tell.
	body := bufio.NewReader(r.Body)
	if _, err := body.Peek(1); err != nil && !errors.Is(err, io.EOF) {
		return devreg.Errorf(devreg.EBADREQUEST, "could not read the body: %v", err)
	} else if err == nil {
		r.Body = struct {
			io.Reader
			io.Closer
		}{body, r.Body}
		if err := decodeJSON(r, &in); err != nil {
			return err
		}
	}
	end, err := in.OldKeysNotAfter.value("old_keys_not_after")
	if err != nil {
		return err
	}
	k, err := h.svc.RotateEnrollmentKey(r.Context(), r.PathValue("id"), r.PathValue("group_id"), end)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the only copy of the group key
	return writeJSON(w, http.StatusCreated, newEnrollmentKey{ID: k.KeyID, GroupKey: k.GroupKey, Group: k.Group})
}

// groupWindow reads a group's not_before and not_after, each nil when absent or null.
func groupWindow(notBefore, notAfter optionalTime) (*time.Time, *time.Time, error) {
	nb, err := notBefore.value("not_before")
	if err != nil {
		return nil, nil, err
	}
	na, err := notAfter.value("not_after")
	return nb, na, err
}
