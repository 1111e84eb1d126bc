// Package deviceauth is how registered devices connect: the OAuth 2.0 client credentials grant
// that trades a device's account ID, device ID and secret (or TLS client certificate, RFC 8705,
// for a token bound to it) for a signed JWT, the JWKS and
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
	"devreg/devcert"
	"devreg/devtoken"
	"devreg/internal/authn"
	"devreg/internal/metrics"
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
	auth     *authn.Authenticator
}

// DefaultLifetime is how long a device token is valid unless configured otherwise.
const DefaultLifetime = time.Hour

// New returns the device endpoints, issuing tokens as issuer (the public URL) signed with keys.
func New(svc *registry.Service, keys *devtoken.SigningKeys, issuer string, lifetime time.Duration, log *slog.Logger) *Handler {
	if lifetime <= 0 {
		lifetime = DefaultLifetime
	}
	return &Handler{svc: svc, keys: keys, issuer: strings.TrimRight(issuer, "/"), lifetime: lifetime, log: log, auth: authn.New(svc, nil)}
}

// Register adds the device endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	route := func(pattern string, door authn.Door, refused func(http.ResponseWriter, *http.Request, error) error, fn respond.HandlerFunc) {
		mux.Handle(pattern, respond.Handler(h.log, func(w http.ResponseWriter, r *http.Request) error {
			r, err := h.auth.Authenticate(w, r, door)
			if err != nil {
				return refused(w, r, err)
			}
			return fn(w, r)
		}, h.writeError))
	}
	route("POST /device/v1/token", authn.Door{Methods: authn.DeviceSecret | authn.DeviceCertificate, CheckForm: checkGrant}, h.countRefusal(h.tokenEndpointRefused), h.token)
	route("POST /device/v1/credentials", authn.Door{Methods: authn.DeviceSecret}, anyRequest(clientRefused), h.rotate)
	route("POST /device/v1/checkin", authn.Door{Methods: authn.DeviceToken}, anyRequest(tokenRefused), h.checkIn)
	route("POST /device/v1/introspect", keyDoor, anyRequest(keyRefused), h.introspect)
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
			"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post", "tls_client_auth"},
			// RFC 8705 §3.3: tokens of devices that authenticate by certificate are bound to it.
			"tls_client_certificate_bound_access_tokens":    true,
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
			respond.LogInternal(h.log, r, err)
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

// clientRefused is what a device that failed to authenticate with its secret is told:
// invalid_client, also when it is throttled, so that the answer tells nothing more about the
// device. One that authenticated and has used up its rotations, or whose valid certificate would
// register it beyond its type's auto_register_limit, is told that (rate_limited), and when to retry.
// One whose first connection would enrol it beyond its enrollment group's limits is told
// enrollment_limit: 429 with when to retry beyond max_per_hour, 403 beyond max_devices.
func clientRefused(_ http.ResponseWriter, err error) error {
	switch code := devreg.ErrorCode(err); {
	case errors.Is(err, registry.ErrEnrollmentLimit):
		msg := devreg.ErrorMessage(err)
		return &devreg.Error{Code: code, Message: msg, RetryAfter: retryAfter(err), Err: &oauthError{code, "enrollment_limit", msg}}
	case errors.Is(err, registry.ErrTooManyRotations), errors.Is(err, registry.ErrAutoRegisterLimit):
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

// anyRequest makes a refusal that needs only the answer one that takes the request too.
func anyRequest(refused func(http.ResponseWriter, error) error) func(http.ResponseWriter, *http.Request, error) error {
	return func(w http.ResponseWriter, _ *http.Request, err error) error { return refused(w, err) }
}

// tokenEndpointRefused is clientRefused at the token endpoint, which logs why a certificate was refused
// (registry.CertificateRefused): the device is told only invalid_client, and whoever runs devreg
// needs to know which rule its certificate broke.
func (h *Handler) tokenEndpointRefused(w http.ResponseWriter, r *http.Request, err error) error {
	var refused *registry.CertificateRefused
	if errors.As(err, &refused) {
		attrs := []any{"request_id", devreg.RequestIDFromContext(r.Context()), "account_id", r.PostForm.Get("account_id"),
			"device_id", r.PostForm.Get("client_id"), "reason", refused.Error()}
		if chain := devreg.ClientCertificatesFromContext(r.Context()); len(chain) > 0 {
			attrs = append(attrs, "certificate_sha256", devcert.FingerprintHex(chain[0]), "subject", chain[0].Subject.String())
		}
		h.log.Warn("device certificate refused at the token endpoint", attrs...)
	}
	return clientRefused(w, err)
}

// countRefusal counts the refusals of the token endpoint by reason: the OAuth error the device is
// told, except that a throttled device (told invalid_client) counts as throttled.
func (h *Handler) countRefusal(refused func(http.ResponseWriter, *http.Request, error) error) func(http.ResponseWriter, *http.Request, error) error {
	return func(w http.ResponseWriter, r *http.Request, err error) error {
		err = refused(w, r, err)
		reason := metrics.RefusedServerError
		var oe *oauthError
		switch {
		case errors.As(err, &oe) && oe.oauth == "invalid_client" && oe.code == devreg.ERATELIMITED:
			reason = metrics.RefusedThrottled
		case errors.As(err, &oe):
			reason = oe.oauth
		case devreg.ErrorCode(err) == devreg.ERATELIMITED:
			reason = metrics.RefusedRateLimited
		case devreg.Status(devreg.ErrorCode(err)) < http.StatusInternalServerError:
			reason = metrics.RefusedInvalidRequest // as writeError tells it
		}
		h.svc.Metrics.TokenRefused(reason)
		return err
	}
}

// checkGrant refuses a token request for another grant than client_credentials.
func checkGrant(form url.Values) error {
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
		return nil
	case "":
		return invalidRequest("grant_type is missing; use client_credentials")
	default:
		return &oauthError{devreg.EBADREQUEST, "unsupported_grant_type", "only the client_credentials grant is supported"}
	}
}

// token issues a token to the device that authenticated (with its grant checked by checkGrant).
func (h *Handler) token(w http.ResponseWriter, r *http.Request) error {
	dev, _ := authn.DeviceFromContext(r.Context())
	now := h.svc.Now().UTC()
	claims := devtoken.Claims{
		Issuer: h.issuer, Subject: dev.DeviceID, AccountID: dev.AccountID, DeviceTypeID: dev.DeviceTypeID,
		Audience: r.PostForm.Get("audience"), IssuedAt: now.Unix(), Expires: now.Add(h.lifetime).Unix(), ID: credential.RandomString(22),
		Cred: dev.CredentialID,
	}
	if dev.X5tS256 != "" {
		claims.Cnf = &devtoken.Confirmation{X5tS256: dev.X5tS256}
	}
	tok, err := devtoken.Sign(h.keys.Current(), claims)
	if err != nil {
		return fmt.Errorf("sign device token: %w", err)
	}
	h.svc.Metrics.TokenIssued()
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
	dev, _ := authn.DeviceFromContext(r.Context())
	rot, err := h.svc.RotateOwnCredential(r.Context(), dev)
	if err != nil {
		return clientRefused(w, err)
	}
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusCreated, rot)
	return nil
}

func retryAfter(err error) time.Duration {
	d, _ := devreg.RetryAfter(err)
	return d
}

// tokenRefused is what a device whose token was refused is told: invalid_token, and why in
// words that do not tell more.
func tokenRefused(_ http.ResponseWriter, err error) error {
	switch {
	case errors.Is(err, registry.ErrInvalidToken):
		return invalidToken("send a valid, unexpired device token as 'Authorization: Bearer <token>'")
	case errors.Is(err, registry.ErrTokenRevoked):
		return invalidToken("the device is unknown or disabled, or the credential the token was issued for is no longer valid")
	case errors.Is(err, authn.ErrCertificateUnbound):
		return invalidToken(devreg.ErrorMessage(err))
	default:
		return err
	}
}

func (h *Handler) checkIn(w http.ResponseWriter, r *http.Request) error {
	dev, _ := authn.DeviceFromContext(r.Context())
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
	err := h.svc.CheckIn(r.Context(), dev, in.FirmwareVersion, in.Status)
	switch devreg.ErrorCode(err) {
	case "":
		w.WriteHeader(http.StatusNoContent)
		return nil
	case devreg.EUNAUTHORIZED:
		return tokenRefused(w, err)
	case devreg.EINVALID:
		return invalidRequest(devreg.ErrorMessage(err))
	default:
		return err
	}
}

// keyDoor lets in the manufacturer's services that introspect tokens: API keys, as bearer tokens.
var keyDoor = authn.Door{Methods: authn.APIKey}

// keyRefused is what a service whose API key was refused is told: invalid_client, unless the key
// expired, ran out of requests, or the database failed.
func keyRefused(w http.ResponseWriter, err error) error {
	if devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		return err // the database failed: a 500 that is logged, not a wrong key
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="devreg"`)
	return invalidClient("authenticate with an API key as 'Authorization: Bearer <key>'")
}

// introspect answers RFC 7662 token introspection for the manufacturer's services, which
// authenticate with an API key of the token's account; an introspection counts against the key's
// rate limit like any call of the Operations API. A token is active while
// registry.VerifyDeviceToken holds it valid (its signature, expiry, device, batch and credential)
// and the caller's key reaches its device.
func (h *Handler) introspect(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := h.svc.CanIntrospect(ctx); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxIntrospection)
	if err := r.ParseForm(); err != nil {
		return invalidRequest("send the token as an application/x-www-form-urlencoded form")
	}
	token := r.PostForm.Get("token")
	if token == "" {
		return invalidRequest("token is missing")
	}
	dev, err := h.svc.VerifyDeviceToken(ctx, token)
	if errors.Is(err, registry.ErrInvalidToken) || errors.Is(err, registry.ErrTokenRevoked) {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return nil
	}
	if err != nil {
		return err
	}
	active, err := h.svc.DeviceActive(ctx, dev)
	if err != nil {
		return err
	}
	if !active {
		writeJSON(w, http.StatusOK, map[string]any{"active": false})
		return nil
	}
	c := dev.Token
	out := map[string]any{
		"active": true, "token_type": "Bearer", "client_id": c.Subject, "sub": c.Subject, "account_id": c.AccountID,
		"device_type_id": c.DeviceTypeID, "iss": c.Issuer, "iat": c.IssuedAt, "exp": c.Expires, "jti": c.ID,
	}
	if c.Audience != "" {
		out["aud"] = c.Audience
	}
	if c.Cnf != nil {
		out["cnf"] = c.Cnf // RFC 8705 §3.2
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// maxIntrospection bounds an introspection's form.
const maxIntrospection = 16 << 10
