package httpapi

import (
	"net/http"

	"devreg"
)

func (h *Handler) createDeviceType(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name            string   `json:"name"`
		Description     string   `json:"description"`
		MinSecretLength int      `json:"min_secret_length"`
		MQTTPublish     []string `json:"mqtt_publish"`
		MQTTSubscribe   []string `json:"mqtt_subscribe"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	t, err := h.svc.CreateDeviceType(r.Context(), devreg.DeviceType{Name: in.Name, Description: in.Description, MinSecretLength: in.MinSecretLength,
		MQTTPublish: in.MQTTPublish, MQTTSubscribe: in.MQTTSubscribe})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

func (h *Handler) listDeviceTypes(w http.ResponseWriter, r *http.Request) error {
	types, err := h.svc.ListDeviceTypes(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"device_types": types})
}

func (h *Handler) getDeviceType(w http.ResponseWriter, r *http.Request) error {
	t, err := h.svc.DeviceType(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, t)
}

func (h *Handler) updateDeviceType(w http.ResponseWriter, r *http.Request) error {
	var upd devreg.DeviceTypeUpdate
	if err := decodeJSON(r, &upd); err != nil {
		return err
	}
	t, err := h.svc.UpdateDeviceType(r.Context(), r.PathValue("id"), upd)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, t)
}

func (h *Handler) deleteDeviceType(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteDeviceType(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deviceFilter reads the device listing's query parameters.
func deviceFilter(r *http.Request) (devreg.DeviceFilter, error) {
	q := r.URL.Query()
	f := devreg.DeviceFilter{
		DeviceTypeID: q.Get("device_type_id"),
		BatchID:      q.Get("batch_id"),
		Prefix:       q.Get("prefix"),
		Status:       devreg.DeviceStatus(q.Get("status")),
	}
	var err error
	if f.After, err = devreg.ParseCursor(q.Get("cursor")); err != nil {
		return f, err
	}
	if f.Connected, err = queryBool(r, "connected"); err != nil {
		return f, err
	}
	f.Limit, err = queryInt(r, "limit")
	return f, err
}

func (h *Handler) writeDevices(w http.ResponseWriter, r *http.Request, f devreg.DeviceFilter) error {
	devices, next, err := h.svc.ListDevices(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"devices": devices, "next_cursor": next.String()})
}

func (h *Handler) listDevices(w http.ResponseWriter, r *http.Request) error {
	f, err := deviceFilter(r)
	if err != nil {
		return err
	}
	return h.writeDevices(w, r, f)
}

func (h *Handler) listDeviceTypeDevices(w http.ResponseWriter, r *http.Request) error {
	f, err := deviceFilter(r)
	if err != nil {
		return err
	}
	if _, err := h.svc.DeviceType(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	f.DeviceTypeID = r.PathValue("id")
	return h.writeDevices(w, r, f)
}

func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) error {
	d, err := h.svc.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

type statusUpdate struct {
	Status devreg.DeviceStatus `json:"status"`
}

func (h *Handler) updateDevice(w http.ResponseWriter, r *http.Request) error {
	var in statusUpdate
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	d, err := h.svc.SetDeviceStatus(r.Context(), r.PathValue("id"), in.Status)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteDevice(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (h *Handler) listBatches(w http.ResponseWriter, r *http.Request) error {
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	q := r.URL.Query()
	after, err := devreg.ParseCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	batches, next, err := h.svc.ListBatches(r.Context(), devreg.BatchFilter{DeviceTypeID: q.Get("device_type_id"), Limit: limit, After: after})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"batches": batches, "next_cursor": next.String()})
}

func (h *Handler) getBatch(w http.ResponseWriter, r *http.Request) error {
	b, err := h.svc.Batch(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, b)
}

func (h *Handler) updateBatch(w http.ResponseWriter, r *http.Request) error {
	var in statusUpdate
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	b, err := h.svc.SetBatchStatus(r.Context(), r.PathValue("id"), in.Status)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, b)
}

func (h *Handler) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name  string       `json:"name"`
		Scope devreg.Scope `json:"scope"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	k, err := h.svc.CreateAPIKey(r.Context(), in.Name, in.Scope)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, k)
}

func (h *Handler) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := h.svc.ListAPIKeys(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"api_keys": keys})
}

func (h *Handler) deleteAPIKey(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteAPIKey(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
