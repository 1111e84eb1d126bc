// Package brokerapi answers the MQTT brokers that ask devreg whether a device may connect and
// use a topic: RabbitMQ (rabbitmq_auth_backend_http), EMQX 5 (HTTP authentication and
// authorization), Mosquitto with mosquitto-go-auth (HTTP backend) and VerneMQ (webhooks). Each
// adapter only translates its broker's protocol; the registry decides. Brokers authenticate
// with an API key of scope broker, as a bearer token or as the password of HTTP Basic.
package brokerapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"devreg"
	"devreg/devtoken"
	"devreg/internal/ratelimit"
	"devreg/internal/respond"
	"devreg/registry"
)

// Handler serves the broker endpoints.
type Handler struct {
	svc    *registry.Service
	keys   *devtoken.SigningKeys
	issuer string
	log    *slog.Logger
	// RabbitMQ: the virtual host and the exchange its MQTT plugin uses.
	vhost, exchange string
	checks          *prometheus.CounterVec
	limits          *ratelimit.Limiter // counts keys of other scopes that call here by mistake
}

// LimitKeys counts the requests of admin, register and read keys that call the broker endpoints
// (which answer them 403) against l, as everywhere else; broker keys are not limited.
func (h *Handler) LimitKeys(l *ratelimit.Limiter) { h.limits = l }

// Config configures the broker endpoints.
type Config struct {
	Issuer           string // the issuer of device tokens (the public URL)
	RabbitMQVHost    string // "" for "/"
	RabbitMQExchange string // "" for "amq.topic"
	// Metrics gets the count of checks by broker, check and answer; nil counts nowhere.
	Metrics prometheus.Registerer
}

// New returns the broker endpoints over svc; device tokens are checked with keys.
func New(svc *registry.Service, keys *devtoken.SigningKeys, log *slog.Logger, cfg Config) *Handler {
	h := &Handler{svc: svc, keys: keys, issuer: strings.TrimRight(cfg.Issuer, "/"), log: log, vhost: cfg.RabbitMQVHost, exchange: cfg.RabbitMQExchange}
	if h.vhost == "" {
		h.vhost = "/"
	}
	if h.exchange == "" {
		h.exchange = "amq.topic"
	}
	h.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devreg_broker_checks_total", Help: "Checks brokers asked devreg for, by broker, check (login, publish, subscribe, ...) and answer.",
	}, []string{"broker", "check", "answer"})
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(h.checks)
	}
	return h
}

// Register adds the broker endpoints to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	route := func(pattern string, fn respond.HandlerFunc) {
		mux.Handle(pattern, respond.Handler(h.log, h.authenticated(fn), h.writeError))
	}
	route("POST /broker/v1/rabbitmq/user", h.rabbitUser)
	route("POST /broker/v1/rabbitmq/vhost", h.rabbitVHost)
	route("POST /broker/v1/rabbitmq/resource", h.rabbitResource)
	route("POST /broker/v1/rabbitmq/topic", h.rabbitTopic)
	route("POST /broker/v1/emqx/authn", h.emqxAuthn)
	route("POST /broker/v1/emqx/authz", h.emqxAuthz)
	route("POST /broker/v1/mosquitto/user", h.mosquittoUser)
	route("POST /broker/v1/mosquitto/superuser", h.mosquittoSuperuser)
	route("POST /broker/v1/mosquitto/acl", h.mosquittoACL)
	route("POST /broker/v1/vernemq", h.verneMQ)
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	respond.WriteJSONError(w, r, h.log, err)
}

// authenticated runs fn for the broker whose API key the request carries: as a bearer token, or
// as the password of HTTP Basic (for brokers that take only a URL, with the key in its user-info).
func (h *Handler) authenticated(fn respond.HandlerFunc) respond.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		key := ""
		if scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(token)
		} else if _, password, ok := r.BasicAuth(); ok {
			key = password
		}
		if key == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="devreg broker endpoints"`)
			return devreg.Errorf(devreg.EUNAUTHORIZED, "authenticate with an API key of scope broker, as 'Authorization: Bearer <key>' or as the password of HTTP Basic")
		}
		c, err := h.svc.AuthenticateAPIKey(r.Context(), key)
		if err != nil {
			return err
		}
		// Broker keys are never limited; another key is counted and told its limits here too.
		if err := h.limits.Admit(w.Header(), c); err != nil {
			return err
		}
		ctx := devreg.NewContextWithCaller(r.Context(), c)
		if err := h.svc.AuthorizeBroker(ctx); err != nil {
			return err
		}
		return fn(w, r.WithContext(ctx))
	}
}

// login decides whether a device may connect: the core every broker's login goes through. A
// password that is a valid device token is taken as one; anything else as a secret. It returns
// the token's expiry (Unix seconds) for a token, else 0.
func (h *Handler) login(ctx context.Context, username, clientID, password string) (allowed bool, expires int64, err error) {
	var tok *registry.BrokerToken
	if looksLikeToken(password) {
		c, err := h.keys.Verify(password, h.issuer, h.svc.Now())
		if err != nil {
			return false, 0, nil
		}
		tok, expires = &registry.BrokerToken{AccountID: c.AccountID, DeviceID: c.Subject, Cred: c.Cred}, c.Expires
	}
	_, err = h.svc.BrokerLogin(ctx, username, clientID, password, tok)
	switch code := devreg.ErrorCode(err); {
	case err == nil:
		return true, expires, nil
	case errors.Is(err, registry.ErrInvalidClient), code == devreg.ERATELIMITED:
		return false, 0, nil
	default:
		return false, 0, err // a wrong key, or the database failed: not the device's answer
	}
}

// looksLikeToken tells a device token (a JWT: three base64url parts, the first a JSON object)
// from a secret, which is at most 256 printable characters.
func looksLikeToken(s string) bool {
	return len(s) > 256 && strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// maxHookBody bounds what a broker sends: a few short fields.
const maxHookBody = 64 << 10

// decode reads a broker's small JSON body into v.
func decode(r *http.Request, v any) error {
	body := &io.LimitedReader{R: r.Body, N: maxHookBody + 1}
	if err := json.NewDecoder(body).Decode(v); err != nil {
		if body.N <= 0 {
			return devreg.Errorf(devreg.ETOOLARGE, "the request is larger than %d KiB", maxHookBody>>10)
		}
		return devreg.Errorf(devreg.EBADREQUEST, "the request is not the JSON this broker endpoint takes: %v", err)
	}
	return nil
}

// form reads a broker's small form body.
func form(r *http.Request) error {
	r.Body = http.MaxBytesReader(nil, r.Body, maxHookBody)
	if err := r.ParseForm(); err != nil {
		return devreg.Errorf(devreg.EBADREQUEST, "the request is not the form this broker endpoint takes: %v", err)
	}
	return nil
}

// count records the answer to one check of a broker.
func (h *Handler) count(brokerName, check string, allowed bool) {
	answer := "deny"
	if allowed {
		answer = "allow"
	}
	h.checks.WithLabelValues(brokerName, check, answer).Inc()
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(v)
}
