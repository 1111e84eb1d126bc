package console

import (
	"fmt"
	"net/http"
	"net/url"

	"devreg"
)

// revokeCredentials deletes the credentials a device made itself (by rotating), after the
// confirmation on its page.
func (h *Handler) revokeCredentials(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	n, err := h.svc.RevokeCredentials(r.Context(), id, devreg.CredentialFromDevice)
	if devreg.ErrorCode(err) == devreg.ECONFLICT {
		return h.redirect(w, r, devicePath(id), "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, devicePath(id), "notice", fmt.Sprintf("Credentials device %s had made itself, revoked: %d. Their secrets no longer authenticate it.", id, n))
}

// revokeBatchCredentials deletes the credentials the devices of a batch made themselves, after
// the confirmation on its page. When some devices were left as they were, the batch page lists
// them with the reason; a redirect could not carry the list.
func (h *Handler) revokeBatchCredentials(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	res, err := h.svc.RevokeBatchCredentials(r.Context(), id, devreg.CredentialFromDevice)
	if err != nil {
		return err
	}
	if res.DevicesLeft > 0 {
		return h.renderBatch(w, r, id, &res)
	}
	return h.redirect(w, r, "/batches/"+url.PathEscape(id), "notice", fmt.Sprintf("Device-made credentials revoked: %s, of %s of the batch's %s devices.",
		devreg.Thousands(res.Deleted), devreg.Thousands(res.DevicesChanged), devreg.Thousands(res.Devices)))
}
