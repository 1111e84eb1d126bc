package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"devreg"
)

// credentialRow is a credential as the device page lists it, with a word on why an enabled one
// does not authenticate the device right now.
type credentialRow struct {
	devreg.Credential
	Note string // "expired", "not yet valid" or ""
}

// deviceData is what the device page shows.
type deviceData struct {
	Device          devreg.Device
	TypeNames       map[string]string
	BatchDisabled   bool
	Credentials     []credentialRow
	MaxCredentials  int
	Full            bool // the device holds MaxCredentials unexpired credentials: adding one fails
	MinSecretLength int
	DeviceMade      int // how many credentials the device made itself
}

func (h *Handler) devicePage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	d, err := h.svc.Device(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	types, names, err := h.types(ctx)
	if err != nil {
		return err
	}
	b, err := h.svc.Batch(ctx, d.BatchID)
	if err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND {
		return err
	}
	creds, err := h.svc.ListCredentials(ctx, d.DeviceID)
	if err != nil {
		return err
	}
	data := deviceData{Device: d, TypeNames: names, BatchDisabled: b.Status == devreg.StatusDisabled, MaxCredentials: devreg.MaxCredentials}
	for _, t := range types {
		if t.ID == d.DeviceTypeID {
			data.MinSecretLength = t.MinSecretLength
		}
	}
	now, live := h.svc.Now(), 0
	for _, c := range creds {
		row := credentialRow{Credential: c}
		if c.Source == devreg.CredentialFromDevice {
			data.DeviceMade++
		}
		switch {
		case c.ExpiredAt(now):
			row.Note = "expired"
		case c.NotBefore != nil && now.Before(*c.NotBefore):
			row.Note = "not yet valid"
			live++
		default:
			live++
		}
		data.Credentials = append(data.Credentials, row)
	}
	// Adding a credential deletes the expired ones first, so only the others count toward the most.
	data.Full = live >= devreg.MaxCredentials
	return h.render(w, r, http.StatusOK, "device", d.DeviceID, "devices", data)
}

// addCredential adds a credential to a device: the secret typed in, or one devreg generates. A
// generated secret is shown once, by the page this post redirects to (see onceStore): never in
// an address, a cookie or a log, and that page is not stored (render sends Cache-Control:
// no-store). devreg keeps only its hash, so it can never be shown again.
func (h *Handler) addCredential(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if r.PostFormValue("kind") == "certificate" {
		return h.addCertificate(w, r, id)
	}
	nc := devreg.NewCredential{Secret: r.PostFormValue("secret"), Generate: r.PostFormValue("generate") == "true"}
	var err error
	if nc.NotBefore, err = formTime(r, "not_before", "Not before"); err != nil {
		return err
	}
	if nc.NotAfter, err = formTime(r, "not_after", "Not after"); err != nil {
		return err
	}
	switch {
	case nc.Generate && nc.Secret != "":
		return devreg.Errorf(devreg.EINVALID, "you typed a secret and chose to generate one; clear the secret field to have devreg generate a secret, or add the one you typed")
	case !nc.Generate && nc.Secret == "":
		return devreg.Errorf(devreg.EINVALID, "type a secret for the new credential, or choose “Generate a secret” to have devreg make one")
	}
	c, err := h.svc.AddCredential(r.Context(), id, nc)
	if err != nil {
		return err
	}
	if nc.Generate {
		http.Redirect(w, r, h.once.put(r, "/devices/"+id+"/credentials/new", newSecret{id, c}), http.StatusSeeOther)
		return nil
	}
	return h.redirect(w, r, devicePath(id), "notice", fmt.Sprintf("Credential %s added to device %s.", c.ID, id))
}

// newSecret is a generated credential and its secret, waiting for its page.
type newSecret struct {
	DeviceID   string
	Credential devreg.Credential
}

// newCredentialPage shows the secret addCredential generated, on its first load only.
func (h *Handler) newCredentialPage(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	v, _, ok := h.once.take(r)
	if s, isSecret := v.(newSecret); ok && isSecret && s.DeviceID == id {
		return h.render(w, r, http.StatusOK, "credential_new", "New secret for "+id, "devices", s)
	}
	return h.redirect(w, r, devicePath(id), "error", "The new secret was shown once already, and devreg cannot show it again: it keeps only a hash of it. If you did not copy it, delete that credential and add another.")
}

// addCertificate adds the certificate pasted on the device page as a credential of device id.
func (h *Handler) addCertificate(w http.ResponseWriter, r *http.Request, id string) error {
	pemText := r.PostFormValue("certificate")
	if strings.TrimSpace(pemText) == "" {
		return devreg.Errorf(devreg.EINVALID, "paste the device's certificate (PEM, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----)")
	}
	c, err := h.svc.AddCredential(r.Context(), id, devreg.NewCredential{Certificate: pemText})
	if err != nil {
		return err
	}
	return h.redirect(w, r, devicePath(id), "notice", fmt.Sprintf("Certificate credential %s (SHA-256 %s…) added to device %s.", c.ID, c.SHA256[:min(16, len(c.SHA256))], id))
}

func (h *Handler) setCredentialStatus(w http.ResponseWriter, r *http.Request) error {
	id, credID := r.PathValue("id"), r.PathValue("cred")
	status := devreg.DeviceStatus(r.PostFormValue("status"))
	c, err := h.svc.UpdateCredential(r.Context(), id, credID, devreg.CredentialUpdate{Status: &status})
	if err != nil {
		return err
	}
	return h.redirect(w, r, devicePath(id), "notice", fmt.Sprintf("Credential %s is %s.", c.ID, c.Status))
}

func (h *Handler) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	id, credID := r.PathValue("id"), r.PathValue("cred")
	if err := h.svc.DeleteCredential(r.Context(), id, credID); err != nil {
		return err
	}
	return h.redirect(w, r, devicePath(id), "notice", fmt.Sprintf("Credential %s deleted; its secret no longer authenticates device %s.", credID, id))
}

// devicePath is the device page's path, at its list of credentials.
func devicePath(id string) string {
	return "/devices/" + url.PathEscape(id) + "#credentials"
}

// graceText says a rotation grace as the edit form takes it (devreg.FormatDuration).
func graceText(seconds *int) string {
	if seconds == nil {
		return graceText(new(devreg.DefaultRotationGraceSeconds))
	}
	return devreg.FormatDuration(time.Duration(*seconds) * time.Second)
}
