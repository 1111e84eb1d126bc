package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"devreg"
)

func (h *Handler) createDeviceType(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name            string   `json:"name"`
		Description     string   `json:"description"`
		MinSecretLength int      `json:"min_secret_length"`
		MQTTPublish     []string `json:"mqtt_publish"`
		MQTTSubscribe   []string `json:"mqtt_subscribe"`
		// Absent (or null) takes the default grace; 0 is a valid grace, so this is a pointer.
		RotationGraceSeconds *int   `json:"rotation_grace_seconds"`
		MaxRotationsPerHour  *int   `json:"max_rotations_per_hour"`
		CertificateIDField   string `json:"certificate_id_field"`
		AutoRegister         bool   `json:"auto_register"`
		AutoRegisterLimit    *int   `json:"auto_register_limit"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	t, err := h.svc.CreateDeviceType(r.Context(), devreg.DeviceType{Name: in.Name, Description: in.Description, MinSecretLength: in.MinSecretLength,
		MQTTPublish: in.MQTTPublish, MQTTSubscribe: in.MQTTSubscribe, RotationGraceSeconds: in.RotationGraceSeconds, MaxRotationsPerHour: in.MaxRotationsPerHour,
		CertificateIDField: in.CertificateIDField, AutoRegister: in.AutoRegister, AutoRegisterLimit: in.AutoRegisterLimit})
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

func (h *Handler) deleteBatch(w http.ResponseWriter, r *http.Request) error {
	n, err := h.svc.DeleteBatch(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, batchDeleted{Deleted: n})
}

// batchDeleted answers a batch's deletion.
type batchDeleted struct {
	Deleted int64 `json:"deleted"` // the devices deleted with it
}

func (h *Handler) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name            string       `json:"name"`
		Scope           devreg.Scope `json:"scope"`
		DeviceTypeIDs   []string     `json:"device_type_ids"`
		ExpiresAt       optionalTime `json:"expires_at"`
		TrustsBrokerTLS bool         `json:"trusts_broker_tls"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	expires, err := in.ExpiresAt.value("expires_at")
	if err != nil {
		return err
	}
	k, err := h.svc.CreateAPIKey(r.Context(), devreg.NewAPIKey{Name: in.Name, Scope: in.Scope, DeviceTypeIDs: in.DeviceTypeIDs, ExpiresAt: expires,
		TrustsBrokerTLS: in.TrustsBrokerTLS})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the only copy of the key
	return writeJSON(w, http.StatusCreated, k)
}

func (h *Handler) updateAPIKey(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name      *string      `json:"name"`
		ExpiresAt optionalTime `json:"expires_at"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	expires, err := in.ExpiresAt.value("expires_at")
	if err != nil {
		return err
	}
	k, err := h.svc.UpdateAPIKey(r.Context(), r.PathValue("id"), devreg.APIKeyUpdate{Name: in.Name, ExpiresAt: expires, ClearExpiry: in.ExpiresAt.set && expires == nil})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, k)
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

// credentialList is the answer of GET /devices/{device_id}/credentials.
type credentialList struct {
	Credentials []devreg.Credential `json:"credentials"`
}

func (h *Handler) listCredentials(w http.ResponseWriter, r *http.Request) error {
	creds, err := h.svc.ListCredentials(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, credentialList{Credentials: creds})
}

// optionalTime is a time field of a request body that may be absent (leave it), null (no limit)
// or an RFC 3339 time. It keeps the raw value, so that a bad one is refused naming its field.
type optionalTime struct {
	set bool
	raw json.RawMessage
}

// UnmarshalJSON implements json.Unmarshaler; it is called for null as well.
func (o *optionalTime) UnmarshalJSON(b []byte) error {
	o.set, o.raw = true, append(json.RawMessage(nil), b...)
	return nil
}

// value returns the time, or nil for null or an absent field. A value that is not a string is a
// malformed body (400), like any field of the wrong JSON type; a string that is not an RFC 3339
// time is an invalid field (422), like a status that is neither enabled nor disabled.
func (o optionalTime) value(field string) (*time.Time, error) {
	if !o.set || string(o.raw) == "null" {
		return nil, nil
	}
	var s string
	if err := json.Unmarshal(o.raw, &s); err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "body is not valid: field %q must be an RFC 3339 time string or null, not %s", field, truncate(string(o.raw)))
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, devreg.Errorf(devreg.EINVALID, "%s must be an RFC 3339 time such as 2027-03-31T00:00:00Z, or null for no limit; it is %q", field, truncate(s))
	}
	// The store keeps microseconds; the answer shows what is kept.
	t = t.UTC().Truncate(time.Microsecond)
	return &t, nil
}

func (h *Handler) addCredential(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Secret      string       `json:"secret"`
		Generate    bool         `json:"generate"`
		Certificate string       `json:"certificate"`
		NotBefore   optionalTime `json:"not_before"`
		NotAfter    optionalTime `json:"not_after"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	nc := devreg.NewCredential{Secret: in.Secret, Generate: in.Generate, Certificate: in.Certificate}
	var err error
	if nc.NotBefore, err = in.NotBefore.value("not_before"); err != nil {
		return err
	}
	if nc.NotAfter, err = in.NotAfter.value("not_after"); err != nil {
		return err
	}
	c, err := h.svc.AddCredential(r.Context(), r.PathValue("id"), nc)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // it may carry a generated secret
	return writeJSON(w, http.StatusCreated, c)
}

func (h *Handler) updateCredential(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Status    *devreg.DeviceStatus `json:"status"`
		NotBefore optionalTime         `json:"not_before"`
		NotAfter  optionalTime         `json:"not_after"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	u := devreg.CredentialUpdate{Status: in.Status, SetNotBefore: in.NotBefore.set, SetNotAfter: in.NotAfter.set}
	var err error
	if u.NotBefore, err = in.NotBefore.value("not_before"); err != nil {
		return err
	}
	if u.NotAfter, err = in.NotAfter.value("not_after"); err != nil {
		return err
	}
	c, err := h.svc.UpdateCredential(r.Context(), r.PathValue("id"), r.PathValue("credential_id"), u)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, c)
}

func (h *Handler) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteCredential(r.Context(), r.PathValue("id"), r.PathValue("credential_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
