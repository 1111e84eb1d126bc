// Package httpapi serves the Operations API under /api/v1: JSON in and out, API-key
// authentication, the contract's error body, its OpenAPI document and the interactive docs.
package httpapi

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"

	"devreg"
	"devreg/bulkfile"
	"devreg/internal/authn"
	"devreg/internal/respond"
	"devreg/registry"
)

//go:embed openapi.yaml
var openapiYAML []byte

// Spec returns the parsed OpenAPI document of the Operations API.
func Spec() (*openapi3.T, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		return nil, fmt.Errorf("load OpenAPI document: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("OpenAPI document is invalid: %w", err)
	}
	return doc, nil
}

// Handler serves the Operations API.
type Handler struct {
	svc      *registry.Service
	log      *slog.Logger
	specJSON []byte
	auth     *authn.Authenticator
}

// servedSpec is the OpenAPI document served at /api/v1/openapi.json: the same for every Handler of
// the process, so it is loaded, checked and marshalled once.
var servedSpec = sync.OnceValues(func() ([]byte, error) {
	doc, err := Spec()
	if err != nil {
		return nil, err
	}
	return json.Marshal(doc)
})

// New returns a Handler over svc.
func New(svc *registry.Service, log *slog.Logger) (*Handler, error) {
	spec, err := servedSpec()
	if err != nil {
		return nil, err
	}
	return &Handler{svc: svc, log: log, specJSON: spec, auth: authn.New(svc, nil)}, nil
}

// Register adds the API's routes and the docs to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	route := func(pattern string, fn func(w http.ResponseWriter, r *http.Request) error) {
		mux.Handle(pattern, h.authenticated(fn))
	}
	route("POST /api/v1/devicetypes", h.createDeviceType)
	route("GET /api/v1/devicetypes", h.listDeviceTypes)
	route("GET /api/v1/devicetypes/{id}", h.getDeviceType)
	route("PATCH /api/v1/devicetypes/{id}", h.updateDeviceType)
	route("DELETE /api/v1/devicetypes/{id}", h.deleteDeviceType)
	route("PUT /api/v1/devicetypes/{id}/device_ids", h.registerDevices)
	route("GET /api/v1/devicetypes/{id}/device_ids", h.listDeviceTypeDevices)
	route("GET /api/v1/devicetypes/{id}/cas", h.listTrustedCAs)
	route("POST /api/v1/devicetypes/{id}/cas", h.addTrustedCA)
	route("DELETE /api/v1/devicetypes/{id}/cas/{ca_id}", h.deleteTrustedCA)
	route("GET /api/v1/devicetypes/{id}/enrollment_groups", h.listEnrollmentGroups)
	route("POST /api/v1/devicetypes/{id}/enrollment_groups", h.createEnrollmentGroup)
	route("GET /api/v1/devicetypes/{id}/enrollment_groups/{group_id}", h.getEnrollmentGroup)
	route("PATCH /api/v1/devicetypes/{id}/enrollment_groups/{group_id}", h.updateEnrollmentGroup)
	route("DELETE /api/v1/devicetypes/{id}/enrollment_groups/{group_id}", h.deleteEnrollmentGroup)
	route("POST /api/v1/devicetypes/{id}/enrollment_groups/{group_id}/keys", h.rotateEnrollmentKey)
	route("PUT /api/v1/devicetypes/{id}/enrollment_groups/{group_id}/allowed_ids", h.setAllowedIDs)
	route("POST /api/v1/devicetypes/{id}/enrollment_groups/{group_id}/reenroll", h.reenroll)
	route("GET /api/v1/devices", h.listDevices)
	route("GET /api/v1/devices/{id}", h.getDevice)
	route("PATCH /api/v1/devices/{id}", h.updateDevice)
	route("DELETE /api/v1/devices/{id}", h.deleteDevice)
	route("GET /api/v1/devices/{id}/credentials", h.listCredentials)
	route("POST /api/v1/devices/{id}/credentials", h.addCredential)
	route("PATCH /api/v1/devices/{id}/credentials/{credential_id}", h.updateCredential)
	route("DELETE /api/v1/devices/{id}/credentials/{credential_id}", h.deleteCredential)
	route("DELETE /api/v1/devices/{id}/credentials", h.revokeCredentials)
	route("GET /api/v1/batches", h.listBatches)
	route("GET /api/v1/batches/{id}", h.getBatch)
	route("PATCH /api/v1/batches/{id}", h.updateBatch)
	route("DELETE /api/v1/batches/{id}", h.deleteBatch)
	route("DELETE /api/v1/batches/{id}/credentials", h.revokeBatchCredentials)
	route("POST /api/v1/apikeys", h.createAPIKey)
	route("GET /api/v1/apikeys", h.listAPIKeys)
	route("PATCH /api/v1/apikeys/{id}", h.updateAPIKey)
	route("GET /api/v1/audit", h.listAudit)
	route("GET /api/v1/audit/export", h.exportAudit)
	route("DELETE /api/v1/apikeys/{id}", h.deleteAPIKey)
	route("POST /api/v1/users", h.createUser)
	route("GET /api/v1/users", h.listUsers)
	route("PATCH /api/v1/users/{id}", h.updateUser)
	route("DELETE /api/v1/users/{id}", h.deleteUser)
	route("GET /api/v1/events", h.listEvents)
	route("POST /api/v1/webhooks", h.createWebhook)
	route("GET /api/v1/webhooks", h.listWebhooks)
	route("GET /api/v1/webhooks/{id}", h.getWebhook)
	route("PATCH /api/v1/webhooks/{id}", h.updateWebhook)
	route("DELETE /api/v1/webhooks/{id}", h.deleteWebhook)
	route("GET /api/v1/webhooks/{id}/deliveries", h.listWebhookDeliveries)
	route("POST /api/v1/webhooks/{id}/test", h.testWebhook)
	mux.Handle("/api/v1/", h.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return devreg.Errorf(devreg.ENOTFOUND, "no API call %s %s; see /api/v1/openapi.json or /docs", r.Method, r.URL.Path)
	}))
	mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(h.specJSON)
	})
	registerDocs(mux)
}

// wrap turns a handler that returns an error into an http.Handler that renders the error.
func (h *Handler) wrap(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return respond.Handler(h.log, func(w http.ResponseWriter, r *http.Request) error {
		if err := checkQuery(r); err != nil {
			return err
		}
		return fn(w, r)
	}, h.writeError)
}

// checkQuery refuses a query string that does not parse, which r.URL.Query would silently cut
// short (so that a broken cursor would list the first page again).
func checkQuery(r *http.Request) error {
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		name, value, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(name)
		if err != nil {
			return devreg.Errorf(devreg.EBADREQUEST, "the query string is malformed near %q; percent-encode its parameters", truncate(name))
		}
		if _, err := url.QueryUnescape(value); err != nil {
			if key == "cursor" {
				return devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one this service handed out; use next_cursor from the previous page", truncate(value))
			}
			return devreg.Errorf(devreg.EBADREQUEST, "query parameter %s is malformed; percent-encode it", truncate(key))
		}
	}
	return nil
}

// truncate shortens a value echoed in an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// keyDoor lets in the callers of the Operations API: API keys, as bearer tokens.
var keyDoor = authn.Door{Methods: authn.APIKey, Challenge: `Bearer realm="devreg"`,
	Missing: "authentication required: send an API key as 'Authorization: Bearer <key>'"}

// authenticated wraps fn so that it runs for the caller whose API key the request carries.
func (h *Handler) authenticated(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return h.wrap(h.auth.Wrap(keyDoor, fn)) // a refused key's WWW-Authenticate is writeError's
}

// WriteError renders err as the contract's JSON error body; see respond.WriteJSONError.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	respond.WriteJSONError(w, r, log, err)
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	// A key refused, at the start or because it was revoked or expired while its request ran,
	// gets the header of an invalid token (unless the request sent no key, which got its own).
	if code := devreg.ErrorCode(err); (code == devreg.EUNAUTHORIZED || code == devreg.EKEYEXPIRED) && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devreg", error="invalid_token"`)
	}
	WriteError(w, r, h.log, err)
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// mediaType returns the request body's media type, lower-cased, without parameters.
func mediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(ct)
	}
	return mt
}

// maxSmallBody bounds the JSON bodies of calls other than registration.
const maxSmallBody = 64 << 10

// decodeJSON reads a small JSON request body into v, refusing unknown fields.
func decodeJSON(r *http.Request, v any) error {
	// Such bodies hold a few short fields; the server's --max-body is for registrations.
	return decodeJSONUpTo(r, v, maxSmallBody)
}

// decodeJSONUpTo is decodeJSON for a body of at most limit bytes.
func decodeJSONUpTo(r *http.Request, v any, limit int64) error {
	if mt := mediaType(r); mt != "" && mt != "application/json" {
		return devreg.Errorf(devreg.EUNSUPPORTED, "send the body as JSON with 'Content-Type: application/json'; it was %q", mt)
	}
	body := &io.LimitedReader{R: r.Body, N: limit + 1}
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if body.N <= 0 {
			return devreg.Errorf(devreg.ETOOLARGE, "body is larger than %d KiB; this call takes a small JSON object", limit>>10)
		}
		return bulkfile.JSONError(err, dec.InputOffset())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: unexpected data after the object at byte offset %d", dec.InputOffset())
	}
	return nil
}

// queryBool parses an optional boolean query parameter.
func queryBool(r *http.Request, name string) (*bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "query parameter %s must be true or false; it is %q", name, v)
	}
	return &b, nil
}

// queryInt parses an optional integer query parameter.
func queryInt(r *http.Request, name string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, devreg.Errorf(devreg.EBADREQUEST, "query parameter %s must be a positive whole number; it is %q", name, v)
	}
	return n, nil
}
