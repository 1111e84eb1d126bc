package brokerapi_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
	"devreg/internal/rabbittest"
)

// certFleet is a fleet with devices that log in by certificate, and a second broker key, made
// with trusts_broker_tls. Its devices, besides the fleet's (d1 has secrets only):
//
//	cp-1        type Pinned (no CA), registered with its certificate (pinned)
//	cp-off      type Pinned, registered with its certificate, disabled
//	cp-revoked  type Pinned, registered with its certificate, whose credential is disabled (it has a secret too)
//	ca-1        type Factory (trusts the factory CA), registered with a secret: its certificate is the CA's to vouch for
type certFleet struct {
	fleet
	trusting       fleet // the same server, with the broker key that trusts its broker's TLS
	factory, other *certtest.Cert
	certs          map[string]*certtest.Cert // each device's certificate from the factory CA
	admin          context.Context
}

func newCertFleet(t *testing.T, database string) certFleet {
	t.Helper()
	f := certFleet{fleet: newFleet(t, database), factory: certtest.NewCA(t, "Factory CA"), other: certtest.NewCA(t, "Other Factory CA"),
		certs: map[string]*certtest.Cert{}}
	svc := f.srv.Service
	f.admin = devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	for _, id := range []string{"cp-1", "cp-off", "cp-revoked", "ca-1", "d1", "ghost"} {
		f.certs[id] = f.factory.Issue(t, id)
	}
	pinned, err := svc.CreateDeviceType(f.admin, devreg.DeviceType{Name: "Pinned"})
	if err != nil {
		t.Fatal(err)
	}
	factory, err := svc.CreateDeviceType(f.admin, devreg.DeviceType{Name: "Factory"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddTrustedCA(f.admin, factory.ID, string(f.factory.PEM)); err != nil {
		t.Fatal(err)
	}
	l := entries{{DeviceID: "cp-1", Certificate: string(f.certs["cp-1"].PEM)}, {Index: 1, DeviceID: "cp-off", Certificate: string(f.certs["cp-off"].PEM)},
		{Index: 2, DeviceID: "cp-revoked", Certificate: string(f.certs["cp-revoked"].PEM)}}
	if _, err := svc.Register(f.admin, pinned.ID, &l, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	l = entries{{DeviceID: "ca-1", Secret: "secretforca-1"}}
	if _, err := svc.Register(f.admin, factory.ID, &l, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.SetDeviceStatus(f.admin, "cp-off", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	// A device's only valid credential cannot be disabled: cp-revoked gets a secret first.
	if _, err := svc.AddCredential(f.admin, "cp-revoked", devreg.NewCredential{Generate: true}); err != nil {
		t.Fatal(err)
	}
	creds, err := svc.ListCredentials(f.admin, "cp-revoked")
	if err != nil || len(creds) != 2 || creds[0].Kind != devreg.CredentialCertificate {
		t.Fatalf("credentials of cp-revoked: %+v, %v", creds, err)
	}
	disabled := devreg.StatusDisabled
	if _, err := svc.UpdateCredential(f.admin, "cp-revoked", creds[0].ID, devreg.CredentialUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}
	k, err := svc.CreateAPIKey(f.admin, devreg.NewAPIKey{Name: "rabbitmq tls", Scope: devreg.ScopeBroker, TrustsBrokerTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	f.trusting = f.fleet
	f.trusting.brokerKey = k.Key
	return f
}

// allowed reads a broker endpoint's answer as allow or deny, whatever the broker's format.
func allowed(t *testing.T, status int, body string) bool {
	t.Helper()
	if status != 200 {
		t.Fatalf("answer %d %s, want 200", status, body)
	}
	switch {
	case body == "allow", strings.Contains(body, `"result":"allow"`), strings.Contains(body, `"ok":true`):
		return true
	case body == "deny", strings.Contains(body, `"result":"deny"`), strings.Contains(body, `"ok":false`):
		return false
	}
	t.Fatalf("answer %q is neither allow nor deny", body)
	return false
}

// TestCertificateLogins sends the certificate logins of certLogins (each broker's, as it sends
// them) for each kind of device, through a broker key that trusts its broker's TLS and one that
// does not. With trust: a common name (RabbitMQ, mosquitto's ACL) lets in a registered, enabled
// device that holds an enabled certificate credential or whose type trusts a CA, nothing else; a
// certificate sent whole (EMQX) must pass devreg's own check as well (pinned, or chained to the
// type's CA). Without trust, no login without a password; mosquitto's ACL check cannot tell a
// certificate login from one by password and answers for any registered device, as before.
func TestCertificateLogins(t *testing.T) { pgtest.Each(t, testCertificateLogins) }

func testCertificateLogins(t *testing.T, database string) {
	f := newCertFleet(t, database)
	expired := f.factory.Issue(t, "ca-1", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour)))
	for _, tc := range []struct {
		name string
		key  fleet
		cert *certtest.Cert
		// the answers to rabbitmq/user (common name), emqx/authn (whole certificate), mosquitto/acl
		rabbit, emqx, acl bool
	}{
		{"trusted/pinned", f.trusting, f.certs["cp-1"], true, true, true},
		{"trusted/type-ca", f.trusting, f.certs["ca-1"], true, true, true},
		// The broker vouches for the name; only a whole certificate shows that it is another one.
		{"trusted/pinned-sibling", f.trusting, f.factory.Issue(t, "cp-1"), true, false, true},
		{"trusted/type-ca-other-ca", f.trusting, f.other.Issue(t, "ca-1"), true, false, true},
		{"trusted/type-ca-expired", f.trusting, expired, true, false, true},
		{"trusted/secrets-only", f.trusting, f.certs["d1"], false, false, false},
		{"trusted/disabled-device", f.trusting, f.certs["cp-off"], false, false, false},
		{"trusted/disabled-certificate", f.trusting, f.certs["cp-revoked"], false, false, false},
		{"trusted/unregistered", f.trusting, f.certs["ghost"], false, false, false},
		{"untrusted/pinned", f.fleet, f.certs["cp-1"], false, false, true},
		{"untrusted/type-ca", f.fleet, f.certs["ca-1"], false, false, true},
		{"untrusted/unregistered", f.fleet, f.certs["ghost"], false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := map[string]bool{"rabbitmq/user": tc.rabbit, "emqx/authn": tc.emqx, "mosquitto/acl": tc.acl, "rabbitmq/vhost": true}
			for _, l := range certLogins(tc.cert) {
				status, body := tc.key.post(t, l.path, l.contentType, l.body)
				if got := allowed(t, status, body); got != want[l.name] {
					t.Errorf("%s = %s, want allowed %v", l.name, body, want[l.name])
				}
			}
		})
	}

	emqx := func(key fleet, fields map[string]string) bool {
		t.Helper()
		status, body := key.post(t, "/broker/v1/emqx/authn", "application/json", js(fields))
		return allowed(t, status, body)
	}
	b64 := func(c *certtest.Cert) string { return base64.StdEncoding.EncodeToString(c.Cert.Raw) }
	cp1 := f.certs["cp-1"]
	for _, tc := range []struct {
		name   string
		fields map[string]string
		want   bool
	}{
		{"pem-taken-too", map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_pem": string(cp1.PEM)}, true},
		{"no-username-common-name-names-device", map[string]string{"username": "", "password": "", "clientid": "cp-1", "cert_common_name": "cp-1", "cert_pem": b64(cp1)}, true},
		{"common-name-alone", map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_common_name": "cp-1", "cert_pem": ""}, true},
		{"common-name-of-another-device", map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_common_name": "ca-1"}, false},
		{"other-client-id", map[string]string{"username": "cp-1", "password": "", "clientid": "ca-1", "cert_pem": b64(cp1)}, false},
		{"certificate-of-another-device", map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_pem": b64(f.certs["cp-off"])}, false},
		{"nothing", map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_common_name": "", "cert_pem": ""}, false},
		// A password takes priority, as in the brokers: right, it lets the device in whatever
		// the certificate; wrong, the certificate does not make up for it.
		{"password-first/right-secret", map[string]string{"username": "d1", "password": "secretford1", "clientid": "d1", "cert_pem": b64(f.other.Issue(t, "x"))}, true},
		{"password-first/wrong-secret", map[string]string{"username": "cp-1", "password": "not-its-secret", "clientid": "cp-1", "cert_common_name": "cp-1", "cert_pem": b64(cp1)}, false},
		{"weak-key", map[string]string{"username": "ca-1", "password": "", "clientid": "ca-1", "cert_pem": b64(f.factory.Issue(t, "ca-1", certtest.RSA(1024)))}, false},
	} {
		t.Run("emqx/"+tc.name, func(t *testing.T) {
			if got := emqx(f.trusting, tc.fields); got != tc.want {
				t.Errorf("authn %v = %v, want %v", tc.fields, got, tc.want)
			}
		})
	}
	t.Run("emqx/cert_pem-not-a-certificate", func(t *testing.T) {
		for _, s := range []string{"not base64!", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" + string(cp1.PEM)} {
			status, body := f.trusting.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": "cp-1", "password": "", "cert_pem": s}))
			if status != 400 || !strings.Contains(body, "cert_pem") {
				t.Errorf("cert_pem %.30q = %d %s, want 400 naming cert_pem", s, status, body)
			}
		}
	})

	t.Run("rabbitmq/password-field-is-a-password-login", func(t *testing.T) {
		// An empty password field is a password login (RabbitMQ sends one for every login by
		// password), refused like any wrong secret: only no field at all is a certificate login.
		if status, body := f.trusting.post(t, "/broker/v1/rabbitmq/user", "application/x-www-form-urlencoded", "username=cp-1&password="); allowed(t, status, body) {
			t.Errorf("an empty password = %s, want deny", body)
		}
	})
	t.Run("rabbitmq/vhost-with-another-client-id", func(t *testing.T) {
		if status, body := f.trusting.post(t, "/broker/v1/rabbitmq/vhost", "application/x-www-form-urlencoded", "username=cp-1&vhost=%2F&ip=127.0.0.1&tags=&client_id=ca-1"); allowed(t, status, body) {
			t.Errorf("/vhost with the client ID of another device = %s, want deny", body)
		}
	})
	t.Run("mosquitto/acl-topic-rules-hold", func(t *testing.T) {
		status, body := f.trusting.post(t, "/broker/v1/mosquitto/acl", "application/json", js(map[string]any{"username": "cp-1", "clientid": "cp-1", "topic": "devices/ca-1/up", "acc": 2}))
		if allowed(t, status, body) {
			t.Errorf("cp-1 publishing to ca-1's topic = %s, want deny", body)
		}
	})
	t.Run("metrics-count-methods", func(t *testing.T) {
		resp, err := http.Get(f.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`devreg_broker_logins_total{answer="allow",broker="rabbitmq",method="common_name"} 5`,
			`devreg_broker_logins_total{answer="allow",broker="emqx",method="certificate"} 4`,
			`devreg_broker_logins_total{answer="allow",broker="emqx",method="secret"} 1`,
			`devreg_broker_logins_total{answer="deny",broker="rabbitmq",method="secret"} 1`,
		} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// TestCertificateLoginThrottle: a login by common name from a trusted broker is not throttled
// (the broker verified the certificate; nothing was guessed), as a token is not; a whole
// certificate is checked by devreg (AuthenticateDeviceCertificate), throttle included.
func TestCertificateLoginThrottle(t *testing.T) {
	f := newCertFleet(t, "")
	for range 10 {
		f.trusting.post(t, "/broker/v1/emqx/authn", "application/json", js(map[string]string{"username": "cp-1", "password": "wrong-guess-0000", "clientid": "cp-1"}))
	}
	if status, body := f.trusting.post(t, "/broker/v1/rabbitmq/user", "application/x-www-form-urlencoded", "username=cp-1"); !allowed(t, status, body) {
		t.Errorf("a common name login of a throttled device = %s, want allow", body)
	}
	status, body := f.trusting.post(t, "/broker/v1/emqx/authn", "application/json",
		js(map[string]string{"username": "cp-1", "password": "", "clientid": "cp-1", "cert_pem": base64.StdEncoding.EncodeToString(f.certs["cp-1"].Cert.Raw)}))
	if allowed(t, status, body) {
		t.Errorf("a whole certificate of a throttled device = %s, want deny", body)
	}
}

// metric reads the value of one series from /metrics; 0 when it is not there yet.
func (f fleet) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// TestRealRabbitMQCertificates runs devices with certificates through real RabbitMQ 3.10 nodes
// with a TLS MQTT listener that logs clients in by their certificate's common name (ssl_cert_login)
// and asks devreg: one whose broker key trusts its TLS, one whose key does not.
func TestRealRabbitMQCertificates(t *testing.T) {
	f := newCertFleet(t, "")
	brokerCA := certtest.NewCA(t, "Broker CA")
	node := rabbittest.Start(t, f.url, f.trusting.brokerKey, rabbittest.WithTLS(f.factory, brokerCA.Server(t)))
	const (
		asked   = `devreg_broker_logins_total{answer="allow",broker="rabbitmq",method="common_name"}`
		refused = `devreg_broker_logins_total{answer="deny",broker="rabbitmq",method="common_name"}`
	)
	// connect connects as device id with cert and says what devreg answered: it was asked once
	// (allow or deny), or not at all (the handshake failed).
	connect := func(t *testing.T, node *rabbittest.Node, clientID string, cert *certtest.Cert) (mqtt.Client, string, error) {
		t.Helper()
		allows, denies := f.metric(t, asked), f.metric(t, refused)
		c, err := node.ConnectTLS(t, clientID, cert)
		switch a, d := f.metric(t, asked)-allows, f.metric(t, refused)-denies; {
		case a == 1 && d == 0:
			return c, "allow", err
		case a == 0 && d == 1:
			return c, "deny", err
		case a == 0 && d == 0:
			return c, "not asked", err
		default:
			t.Fatalf("devreg was asked %v times to allow and %v times to deny", a, d)
			return nil, "", nil
		}
	}

	t.Run("pinned-certificate-publishes-and-receives", func(t *testing.T) {
		c, devreg, err := connect(t, node, "cp-1", f.certs["cp-1"])
		if err != nil || devreg != "allow" {
			t.Fatalf("connect with the registered certificate: %v (devreg: %s)", err, devreg)
		}
		got := make(chan string, 1)
		sub := c.Subscribe("devices/cp-1/cmd/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
		if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
			t.Fatalf("subscribe to its own commands: %v", sub.Error())
		}
		for _, topic := range []string{"devices/cp-1/up", "devices/cp-1/cmd/ping"} {
			if pub := c.Publish(topic, 1, false, "hello"); !pub.WaitTimeout(10*time.Second) || pub.Error() != nil {
				t.Fatalf("publish to %s: %v", topic, pub.Error())
			}
		}
		select {
		case m := <-got:
			if m != "hello" {
				t.Errorf("received %q", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the device did not receive the message on its own topic")
		}
	})
	t.Run("certificate-chained-to-the-type-ca", func(t *testing.T) {
		if _, devreg, err := connect(t, node, "ca-1", f.certs["ca-1"]); err != nil || devreg != "allow" {
			t.Errorf("connect: %v (devreg: %s)", err, devreg)
		}
	})
	t.Run("publish-to-another-device-ends-the-session", func(t *testing.T) {
		c, _, err := connect(t, node, "cp-1", f.certs["cp-1"])
		if err != nil {
			t.Fatal(err)
		}
		tok := c.Publish("devices/ca-1/up", 1, false, "x")
		done := tok.WaitTimeout(5 * time.Second)
		time.Sleep(300 * time.Millisecond)
		if done && tok.Error() == nil && c.IsConnectionOpen() {
			t.Error("the broker took a publish to another device's topic and kept the session")
		}
	})
	for _, tc := range []struct {
		name, clientID string
		cert           *certtest.Cert
		devreg         string // what devreg was asked and answered
	}{
		{"another-ca-refused-in-the-handshake", "cp-1", f.other.Issue(t, "cp-1"), "not asked"},
		{"disabled-device", "cp-off", f.certs["cp-off"], "deny"},
		{"disabled-certificate", "cp-revoked", f.certs["cp-revoked"], "deny"},
		{"device-with-secrets-only", "d1", f.certs["d1"], "deny"},
		{"unregistered", "ghost", f.certs["ghost"], "deny"},
		// The login asks /user with the common name alone; /vhost then brings the client ID.
		{"another-client-id", "ca-1", f.certs["cp-1"], "allow"},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			_, devreg, err := connect(t, node, tc.clientID, tc.cert)
			if err == nil || devreg != tc.devreg {
				t.Errorf("connect: %v, devreg %s; want refused, devreg %s", err, devreg, tc.devreg)
			}
		})
	}

	t.Run("key-without-trusts_broker_tls", func(t *testing.T) {
		plain := rabbittest.Start(t, f.url, f.brokerKey, rabbittest.WithTLS(f.factory, brokerCA.Server(t)))
		for _, id := range []string{"cp-1", "ca-1"} {
			if _, devreg, err := connect(t, plain, id, f.certs[id]); err == nil || devreg != "deny" {
				t.Errorf("%s: %v, devreg %s; want refused by devreg", id, err, devreg)
			}
		}
	})
}
