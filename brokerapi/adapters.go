package brokerapi

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"devreg"
	"devreg/broker"
	"devreg/devcert"
	"devreg/registry"
)

// RabbitMQ: rabbitmq_auth_backend_http with auth_http.http_method = post. Each path gets a form
// and answers the text "allow" or "deny". Its MQTT plugin turns '/' in topics into '.', so a
// device ID holding '.' would share routing keys with another device's topics: refused.

func (h *Handler) rabbitAnswer(w http.ResponseWriter, check string, allow bool) error {
	h.count("rabbitmq", check, allow)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if allow {
		_, err := w.Write([]byte("allow"))
		return err
	}
	_, err := w.Write([]byte("deny"))
	return err
}

// rabbitDevice returns the device ID of a RabbitMQ username, and whether RabbitMQ may carry it.
func rabbitDevice(username string) (string, bool) {
	id, _, _ := strings.Cut(username, "@")
	return id, !strings.Contains(id, ".")
}

// rabbitUser: a login with a password field is one by password (RabbitMQ sends the field even
// when it is empty); one without is a login RabbitMQ made from the client's certificate
// (mqtt.ssl_cert_login, AMQP's EXTERNAL), whose username is the name it read from it.
func (h *Handler) rabbitUser(w http.ResponseWriter, r *http.Request) error {
	if err := form(r); err != nil {
		return err
	}
	username := r.PostForm.Get("username")
	if _, ok := rabbitDevice(username); !ok {
		return h.rabbitAnswer(w, "login", false)
	}
	// RabbitMQ sends the MQTT client ID as client_id (3.10.8 does, with a password); where it is
	// missing, /vhost and /resource still tie the session to the device's own ID.
	bc := registry.BrokerCredentials{Username: username, ClientID: r.PostForm.Get("client_id"), Password: r.PostForm.Get("password")}
	if _, password := r.PostForm["password"]; !password {
		bc.CommonName = username
	}
	allowed, _, err := h.login(r.Context(), "rabbitmq", bc)
	if err != nil {
		return err
	}
	return h.rabbitAnswer(w, "login", allowed)
}

// rabbitVHost allows the one virtual host, and only with the device's own client ID where
// RabbitMQ sends one (a certificate login reaches devreg with the client ID first here).
func (h *Handler) rabbitVHost(w http.ResponseWriter, r *http.Request) error {
	if err := form(r); err != nil {
		return err
	}
	f := r.PostForm
	id, ok := rabbitDevice(f.Get("username"))
	if _, sent := f["client_id"]; sent && f.Get("client_id") != id {
		ok = false
	}
	return h.rabbitAnswer(w, "vhost", ok && f.Get("vhost") == h.vhost)
}

// rabbitResource allows the MQTT exchange and the device's own MQTT subscription queues
// (mqtt-subscription-{client_id}qos0 and qos1, the client ID being the device ID), nothing else.
func (h *Handler) rabbitResource(w http.ResponseWriter, r *http.Request) error {
	if err := form(r); err != nil {
		return err
	}
	f := r.PostForm
	id, ok := rabbitDevice(f.Get("username"))
	if !ok || f.Get("vhost") != h.vhost {
		return h.rabbitAnswer(w, "resource", false)
	}
	switch f.Get("resource") {
	case "exchange":
		return h.rabbitAnswer(w, "resource", f.Get("name") == h.exchange && f.Get("permission") != "configure")
	case "queue":
		name := f.Get("name")
		return h.rabbitAnswer(w, "resource", name == "mqtt-subscription-"+id+"qos0" || name == "mqtt-subscription-"+id+"qos1")
	default:
		return h.rabbitAnswer(w, "resource", false)
	}
}

// rabbitTopic maps the routing key back to an MQTT topic: write is a publish, read a subscription.
func (h *Handler) rabbitTopic(w http.ResponseWriter, r *http.Request) error {
	if err := form(r); err != nil {
		return err
	}
	f := r.PostForm
	username := f.Get("username")
	if _, ok := rabbitDevice(username); !ok || f.Get("vhost") != h.vhost || f.Get("name") != h.exchange {
		return h.rabbitAnswer(w, "topic", false)
	}
	action := broker.Publish
	switch f.Get("permission") {
	case "write":
	case "read":
		action = broker.Subscribe
	default:
		return h.rabbitAnswer(w, "topic", false)
	}
	allowed, err := h.svc.BrokerAllows(r.Context(), username, f.Get("variable_map.client_id"), broker.FromRoutingKey(f.Get("routing_key")), action)
	if err != nil {
		return err
	}
	return h.rabbitAnswer(w, "topic", allowed)
}

// EMQX 5: HTTP authentication and authorization with JSON bodies.

// emqxAuthn: with the body template of the README, EMQX sends the client certificate too (on a
// TLS listener that asks for one): cert_pem, the DER in base64, and cert_common_name. A client
// that sent no password arrives with "password": "", and is logged in by its certificate.
func (h *Handler) emqxAuthn(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username       string `json:"username"`
		Password       string `json:"password"`
		ClientID       string `json:"clientid"`
		CertCommonName string `json:"cert_common_name"`
		CertPEM        string `json:"cert_pem"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	bc := registry.BrokerCredentials{Username: in.Username, ClientID: in.ClientID, Password: in.Password, CommonName: in.CertCommonName}
	if in.CertPEM != "" {
		var err error
		if bc.CertificateDER, err = certificateDER(in.CertPEM); err != nil {
			return devreg.Errorf(devreg.EBADREQUEST, "cert_pem: %v", err)
		}
	}
	allowed, expires, err := h.login(r.Context(), "emqx", bc)
	if err != nil {
		return err
	}
	h.count("emqx", "login", allowed)
	out := map[string]any{"result": "deny", "is_superuser": false}
	if allowed {
		out["result"] = "allow"
		if expires > 0 { // EMQX disconnects the client then
			out["expire_at"] = expires
		}
	}
	return writeJSON(w, out)
}

// certificateDER reads the certificate a broker sent: EMQX's ${cert_pem} is, despite its name,
// the DER in standard base64 with no armour and no line breaks; a PEM block is taken too.
func certificateDER(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) > devcert.MaxPEMSize {
		return nil, fmt.Errorf("certificate is %d bytes; at most %d are accepted", len(s), devcert.MaxPEMSize)
	}
	if strings.HasPrefix(s, "-----BEGIN") {
		b, rest := pem.Decode([]byte(s))
		if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) > 0 {
			return nil, errors.New("not one PEM block of type CERTIFICATE")
		}
		return b.Bytes, nil
	}
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("neither a PEM certificate nor a DER certificate in base64 (EMQX's ${cert_pem})")
	}
	return der, nil
}

func (h *Handler) emqxAuthz(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		ClientID string `json:"clientid"`
		Topic    string `json:"topic"`
		Action   string `json:"action"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	allowed := false
	if action := broker.Action(in.Action); action == broker.Publish || action == broker.Subscribe {
		var err error
		if allowed, err = h.svc.BrokerAllows(r.Context(), in.Username, in.ClientID, in.Topic, action); err != nil {
			return err
		}
	}
	h.count("emqx", checkName(in.Action), allowed)
	result := "deny"
	if allowed {
		result = "allow"
	}
	return writeJSON(w, map[string]string{"result": result})
}

// mosquitto-go-auth: HTTP backend with http_params_mode json and http_response_mode json.

func (h *Handler) mosquittoAnswer(w http.ResponseWriter, check string, ok bool, refusal string) error {
	h.count("mosquitto", check, ok)
	if ok {
		return writeJSON(w, map[string]any{"ok": true, "error": ""})
	}
	return writeJSON(w, map[string]any{"ok": false, "error": refusal})
}

func (h *Handler) mosquittoUser(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		Password string `json:"password"`
		ClientID string `json:"clientid"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	allowed, _, err := h.login(r.Context(), "mosquitto", registry.BrokerCredentials{Username: in.Username, ClientID: in.ClientID, Password: in.Password})
	if err != nil {
		return err
	}
	return h.mosquittoAnswer(w, "login", allowed, "not a registered device with these credentials")
}

// mosquittoSuperuser always refuses: devices are never superusers.
func (h *Handler) mosquittoSuperuser(w http.ResponseWriter, r *http.Request) error {
	return h.mosquittoAnswer(w, "superuser", false, "devices are never superusers")
}

// mosquittoACL: acc is 1 read, 2 write, 3 read and write, 4 subscribe. A listener with
// use_identity_as_username lets a device in by its certificate without calling the user URI, so
// this may be the first devreg hears of the device: BrokerAllowsUnannounced.
func (h *Handler) mosquittoACL(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		ClientID string `json:"clientid"`
		Topic    string `json:"topic"`
		Acc      int    `json:"acc"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	var actions []broker.Action
	switch in.Acc {
	case 1, 4:
		actions = []broker.Action{broker.Subscribe}
	case 2:
		actions = []broker.Action{broker.Publish}
	case 3:
		actions = []broker.Action{broker.Subscribe, broker.Publish}
	}
	allowed := len(actions) > 0
	for _, a := range actions {
		ok, err := h.svc.BrokerAllowsUnannounced(r.Context(), in.Username, in.ClientID, in.Topic, a)
		if err != nil {
			return err
		}
		allowed = allowed && ok
	}
	return h.mosquittoAnswer(w, "acl", allowed, "the device may not use this topic")
}

// VerneMQ: webhooks, told apart by the vernemq-hook header.

func (h *Handler) verneMQ(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"username"`
		Password string `json:"password"`
		ClientID string `json:"client_id"`
		Topic    string `json:"topic"`
		Topics   []struct {
			Topic string `json:"topic"`
		} `json:"topics"`
	}
	if err := decode(r, &in); err != nil {
		return err
	}
	allowed := false
	var err error
	switch hook := r.Header.Get("vernemq-hook"); hook {
	case "auth_on_register":
		allowed, _, err = h.login(r.Context(), "vernemq", registry.BrokerCredentials{Username: in.Username, ClientID: in.ClientID, Password: in.Password})
	case "auth_on_publish":
		allowed, err = h.svc.BrokerAllows(r.Context(), in.Username, in.ClientID, in.Topic, broker.Publish)
	case "auth_on_subscribe": // "ok" only when every requested filter is allowed
		allowed = len(in.Topics) > 0
		for _, t := range in.Topics {
			ok, terr := h.svc.BrokerAllows(r.Context(), in.Username, in.ClientID, t.Topic, broker.Subscribe)
			if terr != nil {
				err = terr
				break
			}
			allowed = allowed && ok
		}
	default:
		return writeJSON(w, map[string]any{"result": map[string]string{"error": "not_allowed"}})
	}
	if err != nil {
		return err
	}
	h.count("vernemq", checkName(r.Header.Get("vernemq-hook")), allowed)
	if allowed {
		return writeJSON(w, map[string]string{"result": "ok"})
	}
	return writeJSON(w, map[string]any{"result": map[string]string{"error": "not_allowed"}})
}

// checkName is a check's label in the metrics: only names devreg knows, so that what a request
// says cannot grow the metrics without bound.
func checkName(s string) string {
	switch s {
	case "publish", "subscribe", "auth_on_register", "auth_on_publish", "auth_on_subscribe":
		return s
	default:
		return "other"
	}
}
