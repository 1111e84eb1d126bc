package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"devreg"
)

// listEvents answers GET /events?after=SEQ&wait=SECONDS: the account's events after after, at
// most 500, waiting up to wait seconds for the first when there are none yet (a long poll).
func (h *Handler) listEvents(w http.ResponseWriter, r *http.Request) error {
	var after int64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return devreg.Errorf(devreg.EBADREQUEST, "query parameter after must be a seq, a whole number of 0 or more; it is %q", truncate(v))
		}
		after = n
	}
	var wait time.Duration
	if v := r.URL.Query().Get("wait"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > int(devreg.MaxEventWait.Seconds()) {
			return devreg.Errorf(devreg.EBADREQUEST, "query parameter wait must be 0 to %d seconds; it is %q", int(devreg.MaxEventWait.Seconds()), truncate(v))
		}
		wait = time.Duration(n) * time.Second
	}
	events, next, err := h.svc.Events(r.Context(), after, wait)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Events    []devreg.Event `json:"events"`
		NextAfter int64          `json:"next_after"`
	}{events, next})
}

// webhookIn is the body of POST and PATCH /webhooks.
type webhookIn struct {
	URL         *string   `json:"url"`
	EventTypes  *[]string `json:"event_types"`
	Enabled     *bool     `json:"enabled"`
	ResumeAfter *int64    `json:"resume_after"`
}

func (h *Handler) createWebhook(w http.ResponseWriter, r *http.Request) error {
	var in webhookIn
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	if in.URL == nil {
		return devreg.Errorf(devreg.EINVALID, "url is required: the https:// address devreg POSTs the events to")
	}
	if in.ResumeAfter != nil {
		return devreg.Errorf(devreg.EINVALID, "resume_after is for PATCH; a new webhook delivers the events from its creation on")
	}
	var types []string
	if in.EventTypes != nil {
		types = *in.EventTypes
	}
	enabled := in.Enabled == nil || *in.Enabled
	wh, err := h.svc.CreateWebhook(r.Context(), *in.URL, types, enabled)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the only copy of the secret
	return writeJSON(w, http.StatusCreated, wh)
}

func (h *Handler) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	ws, err := h.svc.Webhooks(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Webhooks []devreg.Webhook `json:"webhooks"`
	}{ws})
}

func (h *Handler) getWebhook(w http.ResponseWriter, r *http.Request) error {
	wh, err := h.svc.Webhook(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, wh)
}

func (h *Handler) updateWebhook(w http.ResponseWriter, r *http.Request) error {
	var in webhookIn
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	wh, err := h.svc.UpdateWebhook(r.Context(), r.PathValue("id"), devreg.WebhookUpdate{URL: in.URL, EventTypes: in.EventTypes, Enabled: in.Enabled, ResumeAfter: in.ResumeAfter})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, wh)
}

func (h *Handler) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteWebhook(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) testWebhook(w http.ResponseWriter, r *http.Request) error {
	d, err := h.svc.TestWebhook(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

func (h *Handler) listWebhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	ds, err := h.svc.WebhookDeliveries(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Deliveries []devreg.WebhookDelivery `json:"deliveries"`
	}{ds})
}
