// Package deviceauth is how registered devices connect: the OAuth 2.0 client credentials grant
// that trades a device's account ID, device ID and secret for a signed JWT, the JWKS and
// authorization server metadata that let other services trust those tokens, token
// introspection for them, and the check-in that devices make with a token.
package deviceauth

import (
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
	"time"

	"devreg"
	"devreg/credential"
	"devreg/devtoken"
	"devreg/internal/ratelimit"
	"devreg/internal/respond"
	"devreg/registry"
)

// Handler serves the device endpoints.
type Handler struct {
	svc      *registry.Service
	keys     *devtoken.SigningKeys
	issuer   string
	lifetime time.Duration
	log      *slog.Logger
	limits   *ratelimit.Limiter // nil: API keys are not rate-limited
}

// DefaultLifetime is how long a device token is valid unless configured otherwise.
const DefaultLifetime = time.Hour

// New returns the device endpoints, issuing tokens as issuer (the public URL) signed with keys.
func New(svc *registry.Service, keys *devtoken.SigningKeys, issuer string, lifetime time.Duration, log *slog.Logger) *Handler {
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	return &Handler{svc: svc, keys: keys, issuer: strings.TrimRight(issuer, "/"), lifetime: lifetime, log: log}
}

// Register adds the device endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.Handle("POST /device/v1/token", respond.Handler(h.log, h.token, h.writeError))
	mux.Handle("POST /device/v1/credentials", respond.Handler(h.log, h.rotate, h.writeError))
	mux.Handle("POST /device/v1/checkin", respond.Handler(h.log, h.checkIn, h.writeError))
	mux.Handle("POST /device/v1/introspect", respond.Handler(h.log, h.introspect, h.writeError))
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

// oauthError is an answer of the device endpoints in OAuth 2.0's shape (RFC 6749 §5.2,
// RFC 6750 §3.1): the OAuth error code and description, and the devreg code whose status it gets.
type oauthError struct {
	code        string // devreg error code, for the status
	oauth       string // "invalid_request", "invalid_client", ...
	description string
}

func (e *oauthError) Error() string { return e.oauth + ": " + e.description }

func invalidRequest(description string) error {
	return &oauthError{devreg.EBADREQUEST, "invalid_request", description}
}

func invalidClient(description string) error {
	return &oauthError{devreg.EUNAUTHORIZED, "invalid_client", description}
}

func invalidToken(description string) error {
	return &oauthError{devreg.EUNAUTHORIZED, "invalid_token", description}
}

// writeError renders err as the device endpoints answer: an OAuth error whose status comes from
// the one table of devreg codes. A domain error keeps its code and message; anything else is a
// server_error that is logged and not shown.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		code := devreg.ErrorCode(err)
		oe = &oauthError{code, "invalid_request", devreg.ErrorMessage(err)}
		if code == devreg.EFORBIDDEN {
			oe.oauth = "insufficient_scope" // RFC 6750 §3.1
		}
		if devreg.Status(code) == http.StatusInternalServerError {
			h.log.ErrorContext(r.Context(), "internal error", "request_id", devreg.RequestIDFromContext(r.Context()),
				"method", r.Method, "path", r.URL.Path, "err", err)
			oe.oauth, oe.description = "server_error", ""
		}
	}
	if wait, ok := devreg.RetryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(devreg.RetryAfterSeconds(wait)))
	}
	if oe.oauth == "invalid_token" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devreg", error="invalid_token"`)
	}
	body := map[string]string{"error": oe.oauth}
	if oe.description != "" {
		body["error_description"] = oe.description
	}
	writeJSON(w, devreg.Status(oe.code), body)
}

// formType is the media type of the token and rotation requests.
const formType = "application/x-www-form-urlencoded"

// maxTokenRequest bounds the token request's form.
const maxTokenRequest = 16 << 10

// credentialParams are the names that must never come in a query string.
var credentialParams = []string{"client_id", "client_secret", "account_id", "grant_type"}

// clientRequest is a device's authenticated request to the token or rotation endpoint: its form
// and the credentials it presented.
type clientRequest struct {
	form                        url.Values
	accountID, deviceID, secret string
}

// readClient reads the form of a request that a device authenticates as at the token endpoint:
// HTTP Basic (each part form-urlencoded first, RFC 6749 §2.3.1) or client_id and client_secret in
// the form, and account_id in the form; never in the query string.
func readClient(w http.ResponseWriter, r *http.Request) (clientRequest, error) {
	var cr clientRequest
	q := r.URL.Query()
	for _, p := range credentialParams {
		if q.Has(p) {
			return cr, invalidRequest("credentials and parameters in the query string are refused; send them in the form body")
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != formType { // as devices send it, or with parameters
		if mt, _, _ := mime.ParseMediaType(ct); mt != formType {
			return cr, invalidRequest("send the request as application/x-www-form-urlencoded")
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return cr, invalidRequest("the request body could not be read")
	}
	if cr.form, err = url.ParseQuery(string(body)); err != nil {
		return cr, invalidRequest("the form body is malformed")
	}
	for name, vs := range cr.form {
		if len(vs) > 1 {
			return cr, invalidRequest("parameter " + name + " is repeated")
		}
	}
	if cr.accountID = cr.form.Get("account_id"); cr.accountID == "" {
		return cr, invalidRequest("account_id is missing")
	}
	deviceID, secret, basic := r.BasicAuth()
	if basic {
		if cr.form.Has("client_id") || cr.form.Has("client_secret") {
			return cr, invalidRequest("use one way to authenticate: HTTP Basic or client_id and client_secret in the form")
		}
		var err1, err2 error
		deviceID, err1 = url.QueryUnescape(deviceID)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return cr, invalidRequest("the Basic credentials are not form-urlencoded")
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="devreg"`)
	} else {
		deviceID, secret = cr.form.Get("client_id"), cr.form.Get("client_secret")
	}
	if deviceID == "" || secret == "" {
		return cr, invalidClient("")
	}
	cr.deviceID, cr.secret = deviceID, secret
	return cr, nil
}

// clientError is what a device that failed to authenticate is told: invalid_client, also when it
// is throttled, so that the answer tells nothing more about the device. One that authenticated
// and has used up its rotations is told that (rate_limited), and when to retry.
func clientError(err error) error {
	switch code := devreg.ErrorCode(err); {
	case errors.Is(err, registry.ErrTooManyRotations):
		msg := devreg.ErrorMessage(err)
		return &devreg.Error{Code: code, Message: msg, RetryAfter: retryAfter(err), Err: &oauthError{code, code, msg}}
	case code == devreg.ERATELIMITED:
		return &devreg.Error{Code: code, Message: "too many failed attempts for this device; retry later", RetryAfter: retryAfter(err),
			Err: &oauthError{code, "invalid_client", "too many failed attempts for this device; retry later"}}
	case errors.Is(err, registry.ErrInvalidClient):
		return invalidClient("")
	default:
		return err
	}
}

func (h *Handler) token(w http.ResponseWriter, r *http.Request) error {
	cr, err := readClient(w, r)
	if err != nil {
		return err
	}
	switch gt := cr.form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return invalidRequest("grant_type is missing; use client_credentials")
	default:
		return &oauthError{devreg.EBADREQUEST, "unsupported_grant_type", "only the client_credentials grant is supported"}
	}
	dev, err := h.svc.AuthenticateDevice(r.Context(), cr.accountID, cr.deviceID, cr.secret)
	if err != nil {
		return clientError(err)
	}
	now := h.svc.Now().UTC()
	claims := devtoken.Claims{
		Issuer: h.issuer, Subject: dev.DeviceID, AccountID: dev.AccountID, DeviceTypeID: dev.DeviceTypeID,
		Audience: cr.form.Get("audience"), IssuedAt: now.Unix(), Expires: now.Add(h.lifetime).Unix(), ID: credential.RandomString(22),
		Cred: dev.CredentialID,
	}
	tok, err := devtoken.Sign(h.keys.Current(), claims)
	if err != nil {
		return fmt.Errorf("sign device token: %w", err)
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, tokenResponse{AccessToken: tok, TokenType: "Bearer", ExpiresIn: int(h.lifetime.Seconds())})
	return nil
}

// tokenResponse is the token endpoint's answer (RFC 6749 §5.1).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
}

// rotate replaces the device's secret with one the server generates, at the device's request; the
// device authenticates with its current secret, as at the token endpoint.
func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) error {
	cr, err := readClient(w, r)
	if err != nil {
		return err
	}
	rot, err := h.svc.RotateCredential(r.Context(), cr.accountID, cr.deviceID, cr.secret)
	if err != nil {
		return clientError(err)
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusCreated, rot)
	return nil
}

func retryAfter(err error) time.Duration {
	d, _ := devreg.RetryAfter(err)
	return d
}

// bearer returns the bearer token of r, or "".
func bearer(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

func (h *Handler) checkIn(w http.ResponseWriter, r *http.Request) error {
	c, err := h.keys.Verify(bearer(r), h.issuer, h.svc.Now())
	if err != nil {
		return invalidToken("send a valid, unexpired device token as 'Authorization: Bearer <token>'")
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" && r.ContentLength != 0 {
		return &oauthError{devreg.EUNSUPPORTED, "invalid_request", "send the check-in as application/json"}
	}
	var in struct {
		FirmwareVersion *string         `json:"firmware_version"`
		Status          json.RawMessage `json:"status"`
	}
	r.Body = http.MaxBytesReader(w, r.Body, registry.MaxReportedStatus+4096)
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil && !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return &oauthError{devreg.ETOOLARGE, "invalid_request", "the check-in is too large; status may hold at most 16 KiB"}
		}
		return invalidRequest("the body is not valid JSON")
	}
	err = h.svc.CheckIn(r.Context(), c.AccountID, c.Subject, c.Cred, in.FirmwareVersion, in.Status)
	switch devreg.ErrorCode(err) {
	case "":
		w.WriteHeader(http.StatusNoContent)
		return nil
	case devreg.EUNAUTHORIZED:
		return invalidToken("the device is unknown or disabled, or the credential the token was issued for is no longer valid")
	case devreg.EINVALID:
		return invalidRequest(devreg.ErrorMessage(err))
	default:
		return err
	}
}

// introspect answers RFC 7662 token introspection for the manufacturer's services, which
// authenticate with an API key of the token's account. A token is active while its signature and
// expiry hold, its device and batch are enabled, and the credential it was issued for is still
// the device's and valid.
func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) error {
	if bearer(r) == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devreg"`)
		return invalidClient("authenticate with an API key as 'Authorization: Bearer <key>'")
	}
	caller, err := h.svc.AuthenticateAPIKey(r.Context(), bearer(r))
	if devreg.ErrorCode(err) == devreg.EUNAUTHORIZED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="devreg"`)
		return invalidClient("authenticate with an API key as 'Authorization: Bearer <key>'")
	}
	if err != nil {
		return err // the database failed: a 500 that is logged, not a wrong key
	}
	// An introspection is an answer to the key like any call of the Operations API: it counts
	// against the same bucket and carries the RateLimit-* fields.
	if err := h.limits.Admit(w.Header(), caller); err != nil {
		return err
	}
	ctx := devreg.NewContextWithCaller(r.Context(), caller)
	if err := h.svc.CanIntrospect(ctx); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
	if err := r.ParseForm(); err != nil {
		return invalidRequest("send the token as an application/x-www-form-urlencoded form")
	}
	token := r.PostForm.Get("token")
	if token == "" {
		return invalidRequest("token is missing")
	}
	c, err := h.keys.Verify(token, h.issuer, h.svc.Now())
	if err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return nil
	}
	active, err := h.svc.DeviceActive(ctx, c.AccountID, c.Subject, c.Cred)
	if err != nil {
		return err
	}
	if !active {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return nil
	}
	out := map[string]any{
		"active": true, "token_type": "Bearer", "client_id": c.Subject, "sub": c.Subject, "account_id": c.AccountID,
		"device_type_id": c.DeviceTypeID, "iss": c.Issuer, "iat": c.IssuedAt, "exp": c.Expires, "jti": c.ID,
	}
	if c.Audience != "" {
		out["aud"] = c.Audience
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
