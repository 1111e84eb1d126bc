package httpapi

import (
	"net/http"

	"devreg"
	"devreg/bulkfile"
	"devreg/internal/reqbody"
	"devreg/registry"
)

// maxReenrollBody bounds a reenroll request: registry.MaxReenrollIDs IDs of at most 128
// characters (up to 4 bytes each in UTF-8, quoted and separated).
const maxReenrollBody = registry.MaxReenrollIDs * (4*128 + 4)

// setAllowedIDs replaces an enrollment group's allow-list with the file of device IDs in the
// body (the bulk upload file's syntax, one ID per field).
func (h *Handler) setAllowedIDs(w http.ResponseWriter, r *http.Request) error {
	var src devreg.EntrySource = reqbody.Entries(bulkfile.NewIDReader(r.Body))
	if mt := mediaType(r); mt != "text/csv" {
		// Told once the caller is known to reach the group: a caller who does not is told that.
		src = refusedBody{devreg.Errorf(devreg.EUNSUPPORTED, "send the allow-list as a file of device IDs with 'Content-Type: text/csv'; the body was %q", mt)}
	}
	n, err := h.svc.SetAllowedIDs(r.Context(), r.PathValue("id"), r.PathValue("group_id"), src)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, allowedResponse{Allowed: n})
}

// refusedBody is a body that is refused as soon as it is read.
type refusedBody struct{ err error }

func (b refusedBody) Next() (devreg.DeviceEntry, error) { return devreg.DeviceEntry{}, b.err }

type allowedResponse struct {
	Allowed int64 `json:"allowed"`
}

// reenroll lets the device IDs in the body enrol through the group again.
func (h *Handler) reenroll(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DeviceIDs []string `json:"device_ids"`
	}
	if err := decodeJSONUpTo(r, &req, maxReenrollBody); err != nil {
		return err
	}
	n, err := h.svc.Reenroll(r.Context(), r.PathValue("id"), r.PathValue("group_id"), req.DeviceIDs)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, reenrollResponse{Reenrolled: n})
}

type reenrollResponse struct {
	Reenrolled int64 `json:"reenrolled"`
}
