package console

import (
	"fmt"
	"net/http"
	"net/url"

	"devreg"
)

// newWebhook is a webhook made by the post the page answers, with its secret, shown this once.
type newWebhook struct{ devreg.Webhook }

// webhooksPage lists the account's webhooks, with the one the post before made and its secret
// if the address names it (see onceStore): shown on the first load only.
func (h *Handler) webhooksPage(w http.ResponseWriter, r *http.Request) error {
	v, asked, ok := h.once.take(r)
	var created *devreg.Webhook
	var fl *flash
	if nw, isNew := v.(newWebhook); ok && isNew {
		created = &nw.Webhook
	} else if asked {
		fl = &flash{Kind: "error", Text: "The new webhook's secret was shown once already, and devreg shows it to no one again. If you did not copy it, delete the webhook and add another."}
	}
	ws, err := h.svc.Webhooks(r.Context())
	if err != nil {
		return err
	}
	return h.renderFlash(w, r, http.StatusOK, "webhooks", "Webhooks", "webhooks", struct {
		Webhooks []devreg.Webhook
		New      *devreg.Webhook
		Types    []string
	}{ws, created, devreg.EventTypes}, fl)
}

// createWebhook adds a webhook and redirects to the list, which shows its secret once.
func (h *Handler) createWebhook(w http.ResponseWriter, r *http.Request) error {
	types := r.PostForm["event_type"]
	wh, err := h.svc.CreateWebhook(r.Context(), r.PostFormValue("url"), types, true)
	if isUserError(err) {
		return h.redirect(w, r, "/webhooks", "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, h.once.put(r, "/webhooks", newWebhook{wh}), http.StatusSeeOther)
	return nil
}

// webhookPage shows a webhook and its latest deliveries.
func (h *Handler) webhookPage(w http.ResponseWriter, r *http.Request) error {
	wh, err := h.svc.Webhook(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	ds, err := h.svc.WebhookDeliveries(r.Context(), wh.ID)
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "webhook", "Webhook "+wh.ID, "webhooks", struct {
		Webhook    devreg.Webhook
		Deliveries []devreg.WebhookDelivery
	}{wh, ds})
}

// setWebhookEnabled enables or disables a webhook; enabling tries its next event at once.
func (h *Handler) setWebhookEnabled(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	enabled := r.PostFormValue("enabled") == "true"
	wh, err := h.svc.UpdateWebhook(r.Context(), id, devreg.WebhookUpdate{Enabled: &enabled})
	if err != nil {
		return err
	}
	text := "Webhook disabled: it receives nothing until it is enabled again; events wait for it."
	if wh.Enabled {
		text = "Webhook enabled: its next event is sent now."
	}
	return h.redirect(w, r, "/webhooks/"+url.PathEscape(id), "notice", text)
}

// testWebhook sends the webhook a test event at once and says what came back.
func (h *Handler) testWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	d, err := h.svc.TestWebhook(r.Context(), id)
	if err != nil {
		return err
	}
	if d.Delivered() {
		return h.redirect(w, r, "/webhooks/"+url.PathEscape(id), "notice", fmt.Sprintf("Test event %s delivered: the receiver answered %d in %d ms.", d.EventID, d.Status, d.DurationMS))
	}
	return h.redirect(w, r, "/webhooks/"+url.PathEscape(id), "error", fmt.Sprintf("Test event %s was not delivered: %s", d.EventID, d.Error))
}

// deleteWebhook deletes a webhook (the page asks first).
func (h *Handler) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := h.svc.DeleteWebhook(r.Context(), id); err != nil {
		return err
	}
	return h.redirect(w, r, "/webhooks", "notice", "Webhook "+id+" deleted; it receives nothing more.")
}
