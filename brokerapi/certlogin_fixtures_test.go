package brokerapi_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"devreg/internal/certtest"
)

// A certLogin is what a broker sends devreg for a device that proved itself with its certificate,
// the broker having verified the chain itself. The broker endpoints accept these from a broker key
// made with trusts_broker_tls, and only from one (TestCertificateLogins).
type certLogin struct {
	name, path, contentType, body string
	// login is true for a request that logs the device in (allow or deny); false for one
	// that only asks about a topic after a login devreg never heard of.
	login bool
}

// certLogins are the requests, for a device certificate dev whose common name is the device
// ID and a client ID equal to it, each copied from its broker:
//
// RabbitMQ 3.10.8, rabbitmq_mqtt with mqtt.ssl_cert_login = true and ssl_cert_login_from =
// common_name, rabbitmq_auth_backend_http with http_method post: observed from a real node by
// internal/rabbittest's TestCertificateLogin. The login carries the common name alone, with no
// password, vhost or client_id field (a password login always has a password field); the client
// ID comes first with /vhost.
//
// EMQX 5.8+, HTTP authentication with peer_cert_as_username = cn on the TLS listener and the body
// template {"username": "${username}", "password": "${password}", "clientid": "${clientid}",
// "cert_common_name": "${cert_common_name}", "cert_subject": "${cert_subject}", "cert_pem":
// "${cert_pem}"} (placeholders as EMQX's documentation of HTTP authentication lists them;
// emqx_placeholder.hrl). An undefined placeholder renders as "" (emqx_auth_template:render_var),
// so a client that sends no password sends "password": "". ${cert_pem} is NOT a PEM: emqx_channel
// puts the peer certificate's raw DER in the credential ("encoding to PEM (base64) is done lazy in
// emqx_auth_template:render_var") and render_var base64-encodes it: standard base64 of the DER,
// with no BEGIN/END lines and no line breaks. ${cert_subject} is the subject as EMQX formats it
// (its "dn"); only the common name and the certificate are for devreg to rely on.
//
// Mosquitto 2 with use_identity_as_username true (or use_subject_as_username) on a listener with
// require_certificate true: handle_connect.c skips the plugin's password check for such a listener
// ("Authentication assumed to be cleared"), so mosquitto-go-auth's user URI is never called;
// devreg hears of the device first in an ACL check, {"username": CN, "clientid", "topic", "acc"}
// (http_params_mode json), where username is the certificate's common name.
func certLogins(dev *certtest.Cert) []certLogin {
	cn := dev.Cert.Subject.CommonName
	emqx := js(map[string]string{"username": cn, "password": "", "clientid": cn, "cert_common_name": cn,
		"cert_subject": "CN=" + cn, "cert_pem": base64.StdEncoding.EncodeToString(dev.Cert.Raw)})
	return []certLogin{
		{"rabbitmq/user", "/broker/v1/rabbitmq/user", "application/x-www-form-urlencoded", "username=" + url.QueryEscape(cn), true},
		{"rabbitmq/vhost", "/broker/v1/rabbitmq/vhost", "application/x-www-form-urlencoded",
			"username=" + url.QueryEscape(cn) + "&vhost=%2F&ip=127.0.0.1&tags=&client_id=" + url.QueryEscape(cn), false},
		{"emqx/authn", "/broker/v1/emqx/authn", "application/json", emqx, true},
		{"mosquitto/acl", "/broker/v1/mosquitto/acl", "application/json", js(map[string]any{"username": cn, "clientid": cn, "topic": "devices/" + cn + "/up", "acc": 2}), false},
	}
}

// TestCertificateLoginFixtures: EMQX's ${cert_pem} is the certificate's DER in base64, the body of
// its PEM without the armour; and a broker key that does not trust its broker's TLS gets every
// login without a password refused.
func TestCertificateLoginFixtures(t *testing.T) {
	dev := certtest.NewCA(t, "Factory CA").Issue(t, "d1")
	f := newFleet(t, "")
	for _, l := range certLogins(dev) {
		t.Run(l.name, func(t *testing.T) {
			if l.name == "emqx/authn" {
				var in struct {
					CertPEM string `json:"cert_pem"`
				}
				if err := json.Unmarshal([]byte(l.body), &in); err != nil {
					t.Fatal(err)
				}
				der, err := base64.StdEncoding.DecodeString(in.CertPEM)
				if err != nil || !bytes.Equal(der, dev.Cert.Raw) {
					t.Errorf("cert_pem is not the certificate's DER in base64: %v", err)
				}
				lines := strings.Split(strings.TrimSpace(string(dev.PEM)), "\n")
				if body := strings.Join(lines[1:len(lines)-1], ""); body != in.CertPEM {
					t.Errorf("cert_pem %q is not the PEM's body %q", in.CertPEM, body)
				}
			}
			if !l.login {
				return
			}
			status, got := f.post(t, l.path, l.contentType, l.body)
			if status != 200 || (got != "deny" && !strings.Contains(got, `"result":"deny"`)) {
				t.Errorf("a login with only a common name, from a key that does not trust the broker's TLS = %d %s, want deny", status, got)
			}
		})
	}
}
