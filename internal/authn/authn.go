// Package authn is the one step in which a request says who sent it, for every surface: it reads
// the credentials the request carries, has the registry check them, counts the caller against
// its rate limit and puts the caller in the request's context. A surface names the ways in that
// it takes (a Door); how it answers a refusal stays its own.
package authn

import (
	"context"
	"crypto/subtle"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"devreg"
	"devreg/devcert"
	"devreg/internal/ratelimit"
	"devreg/internal/respond"
	"devreg/registry"
)

// Method is a way in; a Door takes one or several.
type Method uint8

// The ways in.
const (
	// APIKey is an API key as 'Authorization: Bearer <key>': the caller is the key's
	// (devreg.CallerFromContext).
	APIKey Method = 1 << iota
	// APIKeyBasic is an API key as the password of HTTP Basic too, for brokers that take only a
	// URL, with the key in its user-info.
	APIKeyBasic
	// Session is a console user's session cookie (SessionCookie): the caller is the user.
	Session
	// DeviceSecret is a device's secret as a token endpoint takes it (RFC 6749 §2.3.1): HTTP
	// Basic with each part form-urlencoded, or client_id and client_secret in the form, and
	// account_id in the form: the caller is the device (DeviceFromContext). The form is left in
	// r.PostForm.
	DeviceSecret
	// DeviceToken is a device token as 'Authorization: Bearer <token>', checked by
	// registry.VerifyDeviceToken: the caller is the device (DeviceFromContext). A token bound to
	// a certificate (cnf, RFC 8705 §3) is taken only with that certificate on the connection.
	DeviceToken
	// DeviceCertificate is a device's TLS client certificate, as a token endpoint takes it
	// (RFC 8705 tls_client_auth): client_id and account_id in the form and no secret, and the
	// certificate on the connection or from a trusted proxy (devreg.ClientCertificatesFromContext),
	// checked by registry.AuthenticateDeviceCertificate: the caller is the device, with the
	// certificate's thumbprint in X5tS256. A request that sends a secret too authenticates by the
	// secret alone (one method per request, RFC 8705 §2), with a DeviceSecret door.
	DeviceCertificate
)

// SessionCookie is the name of the console's session cookie.
const SessionCookie = "devreg_session"

// Door is how a surface lets callers in: the ways it takes, and what it tells a request that
// presented none of them.
type Door struct {
	Methods Method
	// Challenge is the WWW-Authenticate field of the answer to a request without credentials;
	// "" for none.
	Challenge string
	// Missing is the message of that answer, an EUNAUTHORIZED error.
	Missing string
	// CheckForm, with DeviceSecret, checks the rest of the form before the secret is checked,
	// so that a request it refuses costs the device no attempt.
	CheckForm func(url.Values) error
}

// Authenticator lets in the callers of every surface.
type Authenticator struct {
	svc    *registry.Service
	limits *ratelimit.Limiter // nil: API keys are not rate-limited
}

// New returns an Authenticator that checks credentials with svc and counts the requests of API
// keys against limits (nil: keys are not limited).
func New(svc *registry.Service, limits *ratelimit.Limiter) *Authenticator {
	return &Authenticator{svc: svc, limits: limits}
}

// Wrap runs fn for the caller that door lets in; a refusal is returned as fn's own errors are,
// for the surface to render.
func (a *Authenticator) Wrap(door Door, fn respond.HandlerFunc) respond.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		r, err := a.Authenticate(w, r, door)
		if err != nil {
			return err
		}
		return fn(w, r)
	}
}

// Authenticate returns r with its caller in the context, if door lets it in. A request without
// credentials gets door's answer (EUNAUTHORIZED); refused credentials get the registry's
// refusal: an API key's EUNAUTHORIZED or EKEYEXPIRED, a device's registry.ErrInvalidClient or
// ERATELIMITED, a token's registry.ErrInvalidToken or registry.ErrTokenRevoked. Beyond its
// rate limit an API key gets ERATELIMITED; the RateLimit-* fields are set on w either way.
func (a *Authenticator) Authenticate(w http.ResponseWriter, r *http.Request, door Door) (*http.Request, error) {
	ctx := r.Context()
	switch {
	case door.Methods&(DeviceSecret|DeviceCertificate) != 0:
		dev, err := a.deviceByForm(w, r, door)
		if err != nil {
			return r, err
		}
		return r.WithContext(NewContextWithDevice(ctx, dev)), nil
	case door.Methods&DeviceToken != 0:
		dev, err := a.svc.VerifyDeviceToken(ctx, bearer(r))
		if err != nil {
			return r, err
		}
		if err := checkBinding(ctx, dev); err != nil {
			return r, err
		}
		return r.WithContext(NewContextWithDevice(ctx, dev)), nil
	}
	var c devreg.Caller
	var err error
	if key := a.apiKey(r, door); key != "" {
		c, err = a.svc.AuthenticateAPIKey(ctx, key)
	} else if cookie, cerr := r.Cookie(SessionCookie); door.Methods&Session != 0 && cerr == nil {
		c, err = a.svc.SessionCaller(ctx, cookie.Value)
	} else {
		if door.Challenge != "" {
			w.Header().Set("WWW-Authenticate", door.Challenge)
		}
		return r, devreg.Errorf(devreg.EUNAUTHORIZED, "%s", door.Missing)
	}
	if err != nil {
		return r, err
	}
	if err := a.admit(w, c); err != nil {
		return r, err
	}
	return r.WithContext(devreg.NewContextWithCaller(ctx, c)), nil
}

// admit counts a request against its caller's rate limit. This is where the limit's key is
// chosen for every kind of caller: an API key of a limited scope counts in its own bucket, by
// its ID (ratelimit.Admit); broker keys and console users are not limited, and devices are
// throttled by their failures, in the registry, not here.
func (a *Authenticator) admit(w http.ResponseWriter, c devreg.Caller) error {
	if c.KeyID == "" {
		return nil
	}
	// Counted only now, so that requests without a valid key count against no key; the
	// RateLimit-* fields are set before anything is written, so that every answer to the key
	// carries them, errors included.
	return a.limits.Admit(w.Header(), c)
}

// apiKey returns the API key that r presents in a way door takes, or "".
func (a *Authenticator) apiKey(r *http.Request, door Door) string {
	if door.Methods&(APIKey|APIKeyBasic) == 0 {
		return ""
	}
	if key := bearer(r); key != "" || door.Methods&APIKeyBasic == 0 {
		return key
	}
	_, password, _ := r.BasicAuth()
	return password
}

// bearer returns the token of r's 'Authorization: Bearer' field, or "".
func bearer(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// formType is the media type of a token endpoint's request.
const formType = "application/x-www-form-urlencoded"

// maxDeviceForm bounds the form of a device's request.
const maxDeviceForm = 16 << 10

// credentialParams are the names that must never come in a query string.
var credentialParams = []string{"client_id", "client_secret", "account_id", "grant_type"}

// deviceByForm reads the form of a request that a device authenticates with at a token endpoint,
// and has the registry check the device's secret or, with no secret, its certificate.
func (a *Authenticator) deviceByForm(w http.ResponseWriter, r *http.Request, door Door) (registry.AuthenticatedDevice, error) {
	var none registry.AuthenticatedDevice
	form, err := readForm(w, r)
	if err != nil {
		return none, err
	}
	accountID := form.Get("account_id")
	if accountID == "" {
		return none, devreg.Errorf(devreg.EBADREQUEST, "account_id is missing")
	}
	deviceID, secret, basic := r.BasicAuth()
	if basic {
		if form.Has("client_id") || form.Has("client_secret") {
			return none, devreg.Errorf(devreg.EBADREQUEST, "use one way to authenticate: HTTP Basic or client_id and client_secret in the form")
		}
		var err1, err2 error
		deviceID, err1 = url.QueryUnescape(deviceID)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return none, devreg.Errorf(devreg.EBADREQUEST, "the Basic credentials are not form-urlencoded")
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="devreg"`)
	} else {
		deviceID, secret = form.Get("client_id"), form.Get("client_secret")
	}
	chain := devreg.ClientCertificatesFromContext(r.Context())
	byCertificate := secret == "" && len(chain) > 0 && door.Methods&DeviceCertificate != 0
	if deviceID == "" || secret == "" && !byCertificate || secret != "" && door.Methods&DeviceSecret == 0 {
		return none, registry.ErrInvalidClient
	}
	if door.CheckForm != nil {
		if err := door.CheckForm(form); err != nil {
			return none, err
		}
	}
	if !byCertificate {
		return a.svc.AuthenticateDevice(r.Context(), accountID, deviceID, secret)
	}
	dev, err := a.svc.AuthenticateDeviceCertificate(r.Context(), accountID, deviceID, chain)
	if err != nil {
		return none, err
	}
	dev.X5tS256 = devcert.X5tS256(chain[0])
	return dev, nil
}

// ErrCertificateUnbound refuses a certificate-bound token presented without its certificate on
// the connection, or with another one (RFC 8705 §3: the resource server checks that the
// certificate's thumbprint is the token's cnf x5t#S256).
var ErrCertificateUnbound = devreg.Errorf(devreg.EUNAUTHORIZED, "the token is bound to a certificate: present that certificate on the TLS connection")

// checkBinding refuses the token of dev if it is bound to a certificate and the request does not
// come with that certificate.
func checkBinding(ctx context.Context, dev registry.AuthenticatedDevice) error {
	if dev.Token == nil || dev.Token.Cnf == nil {
		return nil
	}
	chain := devreg.ClientCertificatesFromContext(ctx)
	if len(chain) == 0 || subtle.ConstantTimeCompare([]byte(devcert.X5tS256(chain[0])), []byte(dev.Token.Cnf.X5tS256)) != 1 {
		return ErrCertificateUnbound
	}
	return nil
}

// readForm reads the form of a device's request into r.PostForm: from the body only (credentials
// in the query string are refused), each parameter once.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	q := r.URL.Query()
	for _, p := range credentialParams {
		if q.Has(p) {
			return nil, devreg.Errorf(devreg.EBADREQUEST, "credentials and parameters in the query string are refused; send them in the form body")
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != formType { // as devices send it, or with parameters
		if mt, _, _ := mime.ParseMediaType(ct); mt != formType {
			return nil, devreg.Errorf(devreg.EBADREQUEST, "send the request as application/x-www-form-urlencoded")
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxDeviceForm)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "the request body could not be read")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "the form body is malformed")
	}
	for name, vs := range form {
		if len(vs) > 1 {
			return nil, devreg.Errorf(devreg.EBADREQUEST, "parameter %s is repeated", name)
		}
	}
	r.PostForm = form
	return form, nil
}

type deviceKey struct{}

// NewContextWithDevice returns a copy of ctx that carries dev, the device a request came from.
func NewContextWithDevice(ctx context.Context, dev registry.AuthenticatedDevice) context.Context {
	return context.WithValue(ctx, deviceKey{}, dev)
}

// DeviceFromContext returns the device that ctx's request came from, if a device sent it.
func DeviceFromContext(ctx context.Context) (registry.AuthenticatedDevice, bool) {
	dev, ok := ctx.Value(deviceKey{}).(registry.AuthenticatedDevice)
	return dev, ok
}
