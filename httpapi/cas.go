package httpapi

import (
	"net/http"

	"devreg"
)

func (h *Handler) listTrustedCAs(w http.ResponseWriter, r *http.Request) error {
	cas, err := h.svc.ListTrustedCAs(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		CAs []devreg.TrustedCA `json:"cas"`
	}{cas})
}

func (h *Handler) addTrustedCA(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Certificate string `json:"certificate"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	ca, err := h.svc.AddTrustedCA(r.Context(), r.PathValue("id"), in.Certificate)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, ca)
}

func (h *Handler) deleteTrustedCA(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteTrustedCA(r.Context(), r.PathValue("id"), r.PathValue("ca_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
