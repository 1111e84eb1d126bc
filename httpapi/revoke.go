package httpapi

import (
	"net/http"

	"devreg"
)

// revocation is the answer of DELETE /devices/{device_id}/credentials.
type revocation struct {
	Deleted int `json:"deleted"`
}

func (h *Handler) revokeCredentials(w http.ResponseWriter, r *http.Request) error {
	n, err := h.svc.RevokeCredentials(r.Context(), r.PathValue("id"), devreg.CredentialSource(r.URL.Query().Get("source")))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, revocation{Deleted: n})
}

func (h *Handler) revokeBatchCredentials(w http.ResponseWriter, r *http.Request) error {
	res, err := h.svc.RevokeBatchCredentials(r.Context(), r.PathValue("id"), devreg.CredentialSource(r.URL.Query().Get("source")))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}
