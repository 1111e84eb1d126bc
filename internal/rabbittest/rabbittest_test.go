package rabbittest

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/google/go-cmp/cmp"

	"devreg/internal/certtest"
)

// peer records what RabbitMQ's HTTP auth backend asks, and allows everything.
type peer struct {
	mu   sync.Mutex
	seen []string // "path body"
}

func (p *peer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	if u, pw, _ := r.BasicAuth(); u != "broker" || pw != "the-broker-key" || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		http.Error(w, "unexpected request", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	p.seen = append(p.seen, r.URL.Path+" "+string(b))
	p.mu.Unlock()
	w.Write([]byte("allow"))
}

// take returns the requests seen since the last call.
func (p *peer) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.seen
	p.seen = nil
	return s
}

// TestCertificateLogin records what RabbitMQ 3.10.8 sends to devreg when a device logs in on a
// TLS MQTT listener with its certificate (mqtt.ssl_cert_login, ssl_cert_login_from = common_name),
// through the Go client devreg uses and through Mosquitto's mosquitto_pub; the broker endpoints
// of devreg are written against these requests. Observed, verbatim (form bodies, POST with
// Content-Type application/x-www-form-urlencoded and the broker key as Basic auth):
//
//	/broker/v1/rabbitmq/user   username=dev-0001
//	/broker/v1/rabbitmq/vhost  username=dev-0001&vhost=%2F&ip=127.0.0.1&tags=&client_id=dev-0001
//	/broker/v1/rabbitmq/topic  username=dev-0001&vhost=%2F&resource=topic&name=amq.topic&permission=write&tags=&routing_key=devices.dev-0001.up&variable_map.client_id=dev-0001&variable_map.username=dev-0001&variable_map.vhost=%2F
//
// The login has no password, vhost or client_id field at all: the client ID reaches devreg first
// at /vhost. A device that sends a username and password on the TLS listener is logged in by them,
// not by its certificate (RabbitMQ: "username and password take priority"), and that login reads
//
//	/broker/v1/rabbitmq/user   username=other&password=its-secret&vhost=%2F&client_id=dev-0001
//
// so a login without a password field is one RabbitMQ made from a verified certificate, on a broker
// configured so (which is what a broker key's trusts_broker_tls asserts). A client without a certificate, or with one from another CA or
// expired, is refused in the handshake: devreg hears nothing.
func TestCertificateLogin(t *testing.T) {
	p := &peer{}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	factory := certtest.NewCA(t, "Factory CA")
	brokerCA := certtest.NewCA(t, "Broker CA")
	node := Start(t, srv.URL, "the-broker-key", WithTLS(factory, brokerCA.Server(t)))
	dev := factory.Issue(t, "dev-0001")
	login := []string{
		"/broker/v1/rabbitmq/user username=dev-0001",
		"/broker/v1/rabbitmq/vhost username=dev-0001&vhost=%2F&ip=127.0.0.1&tags=&client_id=dev-0001",
	}
	publish := "/broker/v1/rabbitmq/topic username=dev-0001&vhost=%2F&resource=topic&name=amq.topic&permission=write&tags=&routing_key=devices.dev-0001.up&variable_map.client_id=dev-0001&variable_map.username=dev-0001&variable_map.vhost=%2F"

	t.Run("go-client", func(t *testing.T) {
		p.take()
		c, err := node.ConnectTLS(t, "dev-0001", dev)
		if err != nil {
			t.Fatalf("a device with a certificate of the factory CA: %v", err)
		}
		if diff := cmp.Diff(login, p.take()); diff != "" {
			t.Errorf("the login (-want +got):\n%s", diff)
		}
		if tok := c.Publish("devices/dev-0001/up", 1, false, "x"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
		// The first publish checks the exchange too (/resource), once per session.
		if got := p.take(); len(got) == 0 || got[len(got)-1] != publish {
			t.Errorf("the publish asked %q, want it to end with %q", got, publish)
		}
	})

	t.Run("mosquitto_pub", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := dev.WriteFiles(t, dir, "dev")
		caFile, _ := brokerCA.WriteFiles(t, dir, "broker-ca")
		_, port, _ := net.SplitHostPort(node.MQTTSAddr)
		p.take()
		out, err := exec.Command("mosquitto_pub", "-h", "127.0.0.1", "-p", port, "--cafile", caFile, "--cert", certFile, "--key", keyFile,
			"-i", "dev-0001", "-q", "1", "-t", "devices/dev-0001/up", "-m", "hi").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub (apt-get install -y mosquitto-clients): %v\n%s", err, out)
		}
		got := p.take()
		if len(got) < len(login) || got[len(got)-1] != publish {
			t.Fatalf("login and publish asked %q", got)
		}
		if diff := cmp.Diff(login, got[:len(login)]); diff != "" {
			t.Errorf("the login (-want +got):\n%s", diff)
		}
	})

	t.Run("password-takes-priority", func(t *testing.T) {
		p.take()
		cfg := &tls.Config{RootCAs: node.ServerCAs, Certificates: []tls.Certificate{dev.TLS()}}
		_, err := connect(t, mqtt.NewClientOptions().AddBroker("ssl://"+node.MQTTSAddr).SetClientID("dev-0001").
			SetUsername("other").SetPassword("its-secret").SetTLSConfig(cfg))
		if err != nil {
			t.Fatal(err)
		}
		const want = "/broker/v1/rabbitmq/user username=other&password=its-secret&vhost=%2F&client_id=dev-0001"
		if got := p.take(); len(got) == 0 || got[0] != want {
			t.Errorf("a password login on the TLS listener asked %q", got)
		}
	})

	for name, cert := range map[string]*certtest.Cert{
		"no-certificate":   nil,
		"another-ca":       certtest.NewCA(t, "Other Factory").Issue(t, "dev-0001"),
		"expired":          factory.Issue(t, "dev-0001", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))),
		"not-yet-valid":    factory.Issue(t, "dev-0001", certtest.Valid(time.Now().Add(time.Hour), time.Now().Add(48*time.Hour))),
		"self-signed-same": certtest.NewCA(t, "Factory CA").Issue(t, "dev-0001"),
	} {
		t.Run("refused/"+name, func(t *testing.T) {
			p.take()
			if _, err := node.ConnectTLS(t, "dev-0001", cert); err == nil {
				t.Error("the broker let the device in")
			}
			if got := p.take(); len(got) > 0 {
				t.Errorf("the broker asked devreg %q after a failed handshake", got)
			}
		})
	}
}
