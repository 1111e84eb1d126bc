package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"devreg"
)

// keyRow is an API key as the API Keys page lists it.
type keyRow struct {
	devreg.APIKey
	Types   []string // the names of the device types it is restricted to; nil when it reaches all
	Expired bool
	LastIP  string
}

func newKeyRow(k devreg.APIKey, names map[string]string, now time.Time) keyRow {
	row := keyRow{APIKey: k, Expired: k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)}
	if k.LastUsedIP != nil {
		row.LastIP = *k.LastUsedIP
	}
	for _, id := range k.DeviceTypeIDs {
		if n, ok := names[id]; ok {
			row.Types = append(row.Types, n)
		} else {
			row.Types = append(row.Types, id)
		}
	}
	return row
}

// apiKeysPage lists the keys, with the one the post before made if the address names it (see
// onceStore): shown on the first load only.
func (h *Handler) apiKeysPage(w http.ResponseWriter, r *http.Request) error {
	v, asked, ok := h.once.take(r)
	if k, isKey := v.(devreg.APIKey); ok && isKey {
		return h.renderKeys(w, r, &k, nil)
	}
	if asked {
		return h.renderKeys(w, r, nil, &flash{Kind: "error", Text: "The new key was shown once already, and devreg cannot show it again: it keeps only a hash of it. If you did not copy it, revoke it and create another."})
	}
	return h.renderKeys(w, r, nil, nil)
}

func (h *Handler) renderKeys(w http.ResponseWriter, r *http.Request, created *devreg.APIKey, fl *flash) error {
	ctx := r.Context()
	keys, err := h.svc.ListAPIKeys(ctx)
	if err != nil {
		return err
	}
	types, names, err := h.types(ctx)
	if err != nil {
		return err
	}
	now := h.svc.Now()
	data := struct {
		Keys   []keyRow
		NewKey *keyRow
		Types  []devreg.DeviceType
	}{Types: types}
	for _, k := range keys {
		data.Keys = append(data.Keys, newKeyRow(k, names, now))
	}
	if created != nil {
		row := newKeyRow(*created, names, now)
		data.NewKey = &row
	}
	return h.renderFlash(w, r, http.StatusOK, "apikeys", "API Keys", "apikeys", data, fl)
}

// createAPIKey makes a key and redirects to the key list, which shows it once: a reload of that
// page makes no second key.
func (h *Handler) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	nk := devreg.NewAPIKey{Name: r.PostFormValue("name"), Scope: devreg.Scope(r.PostFormValue("scope")),
		TrustsBrokerTLS: r.PostFormValue("trusts_broker_tls") == "on"}
	// No type ticked is a key for every type (nil), not a key for none.
	for _, id := range r.PostForm["device_type_id"] {
		if id = strings.TrimSpace(id); id != "" {
			nk.DeviceTypeIDs = append(nk.DeviceTypeIDs, id)
		}
	}
	var k devreg.APIKey
	var err error
	if nk.ExpiresAt, err = formTime(r, "expires_at", "Expires"); err == nil {
		k, err = h.svc.CreateAPIKey(r.Context(), nk)
	}
	if isUserError(err) {
		return h.redirect(w, r, "/apikeys", "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, h.once.put(r, "/apikeys", k), http.StatusSeeOther)
	return nil
}

func (h *Handler) editAPIKeyPage(w http.ResponseWriter, r *http.Request) error {
	k, err := h.svc.APIKey(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	_, names, err := h.types(r.Context())
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "apikey_edit", "Edit key "+k.Name, "apikeys", struct {
		Key     keyRow
		Expires string
	}{newKeyRow(k, names, h.svc.Now()), inputTime(k.ExpiresAt)})
}

// updateAPIKey renames a key and changes its expiry. The form sends back the expiry it showed
// (expires_was), so that saving a new name for an expired key leaves its expiry alone rather than
// setting it to a time in the past; a blank expiry means the key never expires.
func (h *Handler) updateAPIKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	name := r.PostFormValue("name")
	u := devreg.APIKeyUpdate{Name: &name}
	var err error
	switch v := strings.TrimSpace(r.PostFormValue("expires_at")); {
	case v == strings.TrimSpace(r.PostFormValue("expires_was")):
	case v == "":
		u.ClearExpiry = true
	default:
		u.ExpiresAt, err = formTime(r, "expires_at", "Expires")
	}
	var k devreg.APIKey
	if err == nil {
		k, err = h.svc.UpdateAPIKey(r.Context(), id, u)
	}
	if isUserError(err) {
		return h.redirect(w, r, "/apikeys/"+url.PathEscape(id)+"/edit", "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/apikeys", "notice", fmt.Sprintf("Key %q saved.", k.Name))
}

func (h *Handler) deleteAPIKey(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteAPIKey(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	return h.redirect(w, r, "/apikeys", "notice", "The key is revoked; it stopped working at once.")
}
