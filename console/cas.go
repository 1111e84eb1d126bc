package console

import (
	"fmt"
	"net/http"
	"net/url"

	"devreg"
)

func (h *Handler) trustedCAsPage(w http.ResponseWriter, r *http.Request) error {
	t, err := h.svc.DeviceType(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	cas, err := h.svc.ListTrustedCAs(r.Context(), t.ID)
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "devicetype_cas", "Trusted CAs of "+t.Name, "devicetypes", struct {
		Type devreg.DeviceType
		CAs  []devreg.TrustedCA
		Max  int
	}{t, cas, devreg.MaxTrustedCAs})
}

func (h *Handler) addTrustedCA(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	page := "/devicetypes/" + url.PathEscape(id) + "/cas"
	ca, err := h.svc.AddTrustedCA(r.Context(), id, r.PostFormValue("certificate"))
	if isUserError(err) {
		return h.redirect(w, r, page, "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, page, "notice", fmt.Sprintf("CA %s is trusted now (SHA-256 %s).", ca.Subject, ca.SHA256))
}

func (h *Handler) deleteTrustedCA(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := h.svc.DeleteTrustedCA(r.Context(), id, r.PathValue("ca_id")); err != nil {
		return err
	}
	return h.redirect(w, r, "/devicetypes/"+url.PathEscape(id)+"/cas", "notice", "CA removed; devices whose certificates chain only to it can no longer log in with them.")
}
