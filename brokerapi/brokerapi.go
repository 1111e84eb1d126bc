// Package brokerapi answers the MQTT brokers that ask devreg whether a device may connect and
// use a topic: RabbitMQ (rabbitmq_auth_backend_http), EMQX 5 (HTTP authentication and
// authorization), Mosquitto with mosquitto-go-auth (HTTP backend) and VerneMQ (webhooks). Each
// adapter only translates its broker's protocol; the registry decides. Brokers authenticate
// with an API key of scope broker, as a bearer token or as the password of HTTP Basic. A device
// logs in with a secret or a device token as its MQTT password, or, through a broker whose key
// was made with trusts_broker_tls, with the certificate the broker verified; a token bound to a
// certificate is taken only through such a broker, with that certificate (EMQX's cert_pem).
package brokerapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"devreg"
	"devreg/internal/authn"
	"devreg/internal/respond"
	"devreg/registry"
)

// Handler serves the broker endpoints.
type Handler struct {
	svc *registry.Service
	log *slog.Logger
	// RabbitMQ: the virtual host and the exchange its MQTT plugin uses.
	vhost, exchange string
	checks, logins  *prometheus.CounterVec
	auth            *authn.Authenticator
}

// AuthenticateWith lets brokers in through a, which the server shares among its surfaces (and
// whose limiter counts the admin, register and read keys that call here by mistake, as
// everywhere else; broker keys are not limited).
func (h *Handler) AuthenticateWith(a *authn.Authenticator) { h.auth = a }

// Config configures the broker endpoints.
type Config struct {
	RabbitMQVHost    string // "" for "/"
	RabbitMQExchange string // "" for "amq.topic"
	// Metrics gets the count of checks by broker, check and answer, and of logins by broker,
	// method and answer; nil counts nowhere.
	Metrics prometheus.Registerer
}

// New returns the broker endpoints over svc, which checks the device tokens that devices log in with.
func New(svc *registry.Service, log *slog.Logger, cfg Config) *Handler {
	h := &Handler{svc: svc, log: log, vhost: cfg.RabbitMQVHost, exchange: cfg.RabbitMQExchange, auth: authn.New(svc, nil)}
	if h.vhost == "" {
		h.vhost = "/"
	}
	if h.exchange == "" {
		h.exchange = "amq.topic"
	}
	h.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devreg_broker_checks_total", Help: "Checks brokers asked devreg for, by broker, check (login, publish, subscribe, ...) and answer.",
	}, []string{"broker", "check", "answer"})
	h.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devreg_broker_logins_total", Help: "Device logins brokers asked devreg about, by broker, method (secret, token, certificate, common_name) and answer.",
	}, []string{"broker", "method", "answer"})
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(h.checks, h.logins)
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

// brokerDoor lets brokers in with an API key of scope broker: as a bearer token, or as the
// password of HTTP Basic (for brokers that take only a URL, with the key in its user-info).
var brokerDoor = authn.Door{Methods: authn.APIKey | authn.APIKeyBasic, Challenge: `Basic realm="devreg broker endpoints"`,
	Missing: "authenticate with an API key of scope broker, as 'Authorization: Bearer <key>' or as the password of HTTP Basic"}

// authenticated runs fn for the broker whose API key the request carries.
func (h *Handler) authenticated(fn respond.HandlerFunc) respond.HandlerFunc {
	return h.auth.Wrap(brokerDoor, func(w http.ResponseWriter, r *http.Request) error {
		if err := h.svc.AuthorizeBroker(r.Context()); err != nil {
			return err
		}
		return fn(w, r)
	})
}

// login decides whether a device may connect, with what its broker sent: the core every
// broker's login goes through. It returns, for a device that logged in with a token, when the
// token expires (Unix seconds), else 0. A refused certificate login is logged with its reason,
// which the broker is never told.
func (h *Handler) login(ctx context.Context, brokerName string, bc registry.BrokerCredentials) (allowed bool, expires int64, err error) {
	dev, err := h.svc.BrokerLogin(ctx, bc)
	method := bc.Method()
	var refused *registry.CertificateRefused
	switch code := devreg.ErrorCode(err); {
	case err == nil:
		if !dev.Expires.IsZero() {
			expires = dev.Expires.Unix()
		}
		allowed = true
	case errors.As(err, &refused):
		h.log.InfoContext(ctx, "broker login by certificate refused", "broker", brokerName, "method", method,
			"username", bc.Username, "common_name", bc.CommonName, "reason", refused.Error())
	case errors.Is(err, registry.ErrInvalidClient), code == devreg.ERATELIMITED, errors.Is(err, registry.ErrEnrollmentLimit):
	default:
		return false, 0, err // a wrong key, or the database failed: not the device's answer
	}
	h.logins.WithLabelValues(brokerName, string(method), answer(allowed)).Inc()
	return allowed, expires, nil
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
	h.checks.WithLabelValues(brokerName, check, answer(allowed)).Inc()
}

// answer is an answer's label in the metrics.
func answer(allowed bool) string {
	if allowed {
		return "allow"
	}
	return "deny"
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(v)
}
