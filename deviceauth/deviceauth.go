// Package deviceauth is how registered devices connect: the OAuth 2.0 client credentials grant
// that trades a device's account ID, device ID and secret for a signed JWT, the JWKS and
// authorization server metadata that let other services trust those tokens, token
// introspection for them, and the check-in that devices make with a token.
package deviceauth

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/registry"
)

// Handler serves the device endpoints.
type Handler struct {
	svc      *registry.Service
	keys     *SigningKeys
	issuer   string
	lifetime time.Duration
	log      *slog.Logger
}

// DefaultLifetime is how long a device token is valid unless configured otherwise.
const DefaultLifetime = time.Hour

// New returns the device endpoints, issuing tokens as issuer (the public URL) signed with keys.
func New(svc *registry.Service, keys *SigningKeys, issuer string, lifetime time.Duration, log *slog.Logger) *Handler {
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	return &Handler{svc: svc, keys: keys, issuer: strings.TrimRight(issuer, "/"), lifetime: lifetime, log: log}
}

// Register adds the device endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /device/v1/token", h.token)
	mux.HandleFunc("POST /device/v1/checkin", h.checkIn)
	mux.HandleFunc("POST /device/v1/introspect", h.introspect)
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		writeJSON(w, http.StatusOK, h.keys.JWKS())
	})
	mux.HandleFunc("GET /.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer":                                h.issuer,
			"token_endpoint":                        h.issuer + "/device/v1/token",
			"jwks_uri":                              h.issuer + "/.well-known/jwks.json",
			"introspection_endpoint":                h.issuer + "/device/v1/introspect",
			"grant_types_supported":                 []string{"client_credentials"},
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
			"introspection_endpoint_auth_methods_supported": []string{"bearer"},
			"response_types_supported":                      []string{},
		})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// oauthError writes an OAuth 2.0 error (RFC 6749 §5.2).
func oauthError(w http.ResponseWriter, status int, code, description string) {
	body := map[string]string{"error": code}
	if description != "" {
		body["error_description"] = description
	}
	writeJSON(w, status, body)
}

// maxTokenRequest bounds the token request's form.
const maxTokenRequest = 16 << 10

// credentialParams are the names that must never come in a query string.
var credentialParams = []string{"client_id", "client_secret", "account_id", "grant_type"}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for _, p := range credentialParams {
		if q.Has(p) {
			oauthError(w, http.StatusBadRequest, "invalid_request", "credentials and parameters in the query string are refused; send them in the form body")
			return
		}
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "send the request as application/x-www-form-urlencoded")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body could not be read")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the form body is malformed")
		return
	}
	for name, vs := range form {
		if len(vs) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", "parameter "+name+" is repeated")
			return
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "grant_type is missing; use client_credentials")
		return
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only the client_credentials grant is supported")
		return
	}
	accountID := form.Get("account_id")
	if accountID == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "account_id is missing")
		return
	}
	deviceID, secret, basic := r.BasicAuth()
	if basic {
		if form.Has("client_id") || form.Has("client_secret") {
			oauthError(w, http.StatusBadRequest, "invalid_request", "use one way to authenticate: HTTP Basic or client_id and client_secret in the form")
			return
		}
		// RFC 6749 §2.3.1: both are form-urlencoded before they go into the Basic header.
		var err1, err2 error
		deviceID, err1 = url.QueryUnescape(deviceID)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the Basic credentials are not form-urlencoded")
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="devreg"`)
	} else {
		deviceID, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if deviceID == "" || secret == "" {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "")
		return
	}
	dev, err := h.svc.AuthenticateDevice(r.Context(), accountID, deviceID, secret)
	var throttled *registry.ThrottledError
	switch {
	case errors.As(err, &throttled):
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(throttled.RetryAfter.Seconds()))))
		oauthError(w, http.StatusTooManyRequests, "invalid_client", "too many failed attempts for this device; retry later")
		return
	case errors.Is(err, registry.ErrInvalidClient):
		oauthError(w, http.StatusUnauthorized, "invalid_client", "")
		return
	case err != nil:
		h.log.ErrorContext(r.Context(), "device authentication", "request_id", devreg.RequestIDFromContext(r.Context()), "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	now := h.svc.Now().UTC()
	claims := Claims{
		Issuer: h.issuer, Subject: dev.DeviceID, AccountID: dev.AccountID, DeviceTypeID: dev.DeviceTypeID,
		Audience: form.Get("audience"), IssuedAt: now.Unix(), Expires: now.Add(h.lifetime).Unix(), ID: credential.RandomString(22),
	}
	tok, err := Sign(h.keys.Current(), claims)
	if err != nil {
		h.log.ErrorContext(r.Context(), "sign device token", "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": int(h.lifetime.Seconds())})
}

// bearer returns the bearer token of r, or "".
func bearer(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

func invalidToken(w http.ResponseWriter, description string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="devreg", error="invalid_token"`)
	oauthError(w, http.StatusUnauthorized, "invalid_token", description)
}

func (h *Handler) checkIn(w http.ResponseWriter, r *http.Request) {
	c, err := h.keys.Verify(bearer(r), h.issuer, h.svc.Now())
	if err != nil {
		invalidToken(w, "send a valid, unexpired device token as 'Authorization: Bearer <token>'")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" && r.ContentLength != 0 {
		oauthError(w, http.StatusUnsupportedMediaType, "invalid_request", "send the check-in as application/json")
		return
	}
	var in struct {
		FirmwareVersion *string         `json:"firmware_version"`
		Status          json.RawMessage `json:"status"`
	}
	r.Body = http.MaxBytesReader(w, r.Body, registry.MaxReportedStatus+4096)
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil && !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			oauthError(w, http.StatusRequestEntityTooLarge, "invalid_request", "the check-in is too large; status may hold at most 16 KiB")
			return
		}
		oauthError(w, http.StatusBadRequest, "invalid_request", "the body is not valid JSON")
		return
	}
	err = h.svc.CheckIn(r.Context(), c.AccountID, c.Subject, in.FirmwareVersion, in.Status)
	switch devreg.ErrorCode(err) {
	case "":
		w.WriteHeader(http.StatusNoContent)
	case devreg.EUNAUTHORIZED:
		invalidToken(w, "the device is unknown or disabled")
	case devreg.EINVALID:
		oauthError(w, http.StatusBadRequest, "invalid_request", devreg.ErrorMessage(err))
	case devreg.ETOOLARGE:
		oauthError(w, http.StatusRequestEntityTooLarge, "invalid_request", devreg.ErrorMessage(err))
	default:
		h.log.ErrorContext(r.Context(), "check-in", "request_id", devreg.RequestIDFromContext(r.Context()), "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "")
	}
}

// introspect answers RFC 7662 token introspection for the manufacturer's services, which
// authenticate with an API key of the token's account. A token is active while its signature and
// expiry hold and its device and batch are enabled.
func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) {
	caller, err := h.svc.AuthenticateAPIKey(r.Context(), bearer(r))
	if bearer(r) == "" || err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devreg"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "authenticate with an API key as 'Authorization: Bearer <key>'")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "send the token as an application/x-www-form-urlencoded form")
		return
	}
	token := r.PostForm.Get("token")
	if token == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "token is missing")
		return
	}
	c, err := h.keys.Verify(token, h.issuer, h.svc.Now())
	if err != nil || c.AccountID != caller.AccountID {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	active, err := h.svc.DeviceActive(r.Context(), c.AccountID, c.Subject)
	if err != nil {
		h.log.ErrorContext(r.Context(), "introspect", "err", err)
		oauthError(w, http.StatusInternalServerError, "server_error", "")
		return
	}
	if !active {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return
	}
	out := map[string]any{
		"active": true, "token_type": "Bearer", "client_id": c.Subject, "sub": c.Subject, "account_id": c.AccountID,
		"device_type_id": c.DeviceTypeID, "iss": c.Issuer, "iat": c.IssuedAt, "exp": c.Expires, "jti": c.ID,
	}
	if c.Audience != "" {
		out["aud"] = c.Audience
	}
	writeJSON(w, http.StatusOK, out)
}
