// Package rabbittest starts a private RabbitMQ node for tests: its own node name, ports, config,
// data and logs, with the MQTT plugin and the HTTP auth backend pointed at a devreg server. The
// system's broker is never touched. Tests that use it fail, never skip, where RabbitMQ cannot run.
package rabbittest

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"devreg/internal/certtest"
)

// Node is a private RabbitMQ node for one test run: its own node name, ports, config,
// data and logs, with the MQTT plugin and the HTTP auth backend pointed at a devreg server. The
// system's broker is not touched.
type Node struct {
	MQTTAddr string
	// MQTTSAddr is the TLS MQTT listener's address, set when the node was started WithTLS.
	MQTTSAddr string
	// ServerCAs holds the root of the TLS listener's certificate, for clients to verify it.
	ServerCAs *x509.CertPool
	cmd       *exec.Cmd
	dir       string
}

// An Option changes how a node is started.
type Option func(*options)

type options struct {
	clientCA, server *certtest.Cert
}

// WithTLS adds an MQTT listener on TLS (Node.MQTTSAddr) that serves the certificate server, asks
// every client for a certificate that chains to clientCA (verify_peer, fail_if_no_peer_cert) and
// logs the client in by its certificate's common name (mqtt.ssl_cert_login, ssl_cert_login_from =
// common_name): the HTTP auth backend then gets the common name as the username, with no password.
// server is made by the test, e.g. certtest.NewCA(t, "Broker CA").Server(t).
func WithTLS(clientCA, server *certtest.Cert) Option {
	return func(o *options) { o.clientCA, o.server = clientCA, server }
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts a node whose HTTP auth backend asks the devreg server at devregURL with
// brokerKey; the test fails (never skips) where RabbitMQ cannot run. A node takes 5–10 s to start:
// start one per package test run and share it among subtests.
func Start(t *testing.T, devregURL, brokerKey string, opts ...Option) *Node {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	const bin = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("this test needs RabbitMQ 3.10+ with rabbitmq_mqtt and rabbitmq_auth_backend_http (apt-get install -y rabbitmq-server): %v", err)
	}
	rabbit, err := user.Lookup("rabbitmq")
	if err != nil {
		t.Fatalf("this test runs the broker as the rabbitmq user: %v", err)
	}
	uid, _ := strconv.Atoi(rabbit.Uid)
	gid, _ := strconv.Atoi(rabbit.Gid)
	dir, err := os.MkdirTemp("", "devreg-rabbitmq-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	amqp, mqttPort, dist := freePort(t), freePort(t), freePort(t)
	u, _ := url.Parse(devregURL)
	u.User = url.UserPassword("broker", brokerKey)
	base := u.String() + "/broker/v1/rabbitmq/"
	files := map[string]string{
		"enabled_plugins": "[rabbitmq_mqtt,rabbitmq_auth_backend_http].\n",
		"rabbitmq.conf": fmt.Sprintf(`listeners.tcp.default = 127.0.0.1:%d
mqtt.listeners.tcp.default = 127.0.0.1:%d
auth_backends.1 = http
auth_http.http_method = post
auth_http.user_path = %suser
auth_http.vhost_path = %svhost
auth_http.resource_path = %sresource
auth_http.topic_path = %stopic
mqtt.allow_anonymous = false
mqtt.vhost = /
mqtt.exchange = amq.topic
loopback_users = none
`, amqp, mqttPort, base, base, base, base),
		"advanced.config": "[{rabbitmq_mqtt, [{ignore_colons_in_username, true}]}].\n",
		".erlang.cookie":  "DEVREGTEST" + strconv.Itoa(amqp) + "\n",
	}
	var mqttsPort int
	if o.server != nil {
		mqttsPort = freePort(t)
		files["client-ca.pem"] = string(o.clientCA.PEM)
		files["server.pem"] = string(o.server.ChainPEM())
		files["server.key"] = string(o.server.KeyPEM)
		files["rabbitmq.conf"] += fmt.Sprintf(`mqtt.listeners.ssl.default = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
mqtt.ssl_cert_login = true
ssl_cert_login_from = common_name
`, mqttsPort, filepath.Join(dir, "client-ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"))
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"mnesia", "log"} {
		os.Mkdir(filepath.Join(dir, sub), 0o700)
	}
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, uid, gid) })
	os.Chmod(filepath.Join(dir, ".erlang.cookie"), 0o400)

	node := fmt.Sprintf("devreg-test-%d@localhost", amqp)
	cmd := exec.Command(bin)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "LANG=C.UTF-8",
		"RABBITMQ_NODENAME=" + node, "RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(dir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"), "RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(amqp), "RABBITMQ_DIST_PORT=" + strconv.Itoa(dist),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbitmq.pid"),
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	out, _ := os.Create(filepath.Join(dir, "log", "stdout"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start RabbitMQ: %v", err)
	}
	n := &Node{MQTTAddr: fmt.Sprintf("127.0.0.1:%d", mqttPort), cmd: cmd, dir: dir}
	ready := n.MQTTAddr
	if o.server != nil {
		n.MQTTSAddr = fmt.Sprintf("127.0.0.1:%d", mqttsPort)
		root := o.server
		for root.Issuer != nil {
			root = root.Issuer
		}
		n.ServerCAs, ready = root.Pool(), n.MQTTSAddr
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		// The TLS listener, when there is one, starts after the plain one.
		if c, err := net.DialTimeout("tcp", ready, time.Second); err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "log", "stdout"))
			t.Fatalf("RabbitMQ's MQTT listener %s did not come up in 90 s:\n%s", ready, b)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Connect opens an MQTT 3.1.1 session with the broker as a device would.
func (n *Node) Connect(t *testing.T, clientID, username, password string) (mqtt.Client, error) {
	t.Helper()
	return connect(t, mqtt.NewClientOptions().AddBroker("tcp://"+n.MQTTAddr).SetClientID(clientID).SetUsername(username).SetPassword(password))
}

// ConnectTLS opens an MQTT 3.1.1 session on the TLS listener with the client certificate cert
// (nil for none) and no username or password, as a device with a certificate would.
func (n *Node) ConnectTLS(t *testing.T, clientID string, cert *certtest.Cert) (mqtt.Client, error) {
	t.Helper()
	if n.MQTTSAddr == "" {
		t.Fatal("ConnectTLS: the node was not started WithTLS")
	}
	cfg := &tls.Config{RootCAs: n.ServerCAs, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{cert.TLS()}
	}
	return connect(t, mqtt.NewClientOptions().AddBroker("ssl://"+n.MQTTSAddr).SetClientID(clientID).SetTLSConfig(cfg))
}

func connect(t *testing.T, opts *mqtt.ClientOptions) (mqtt.Client, error) {
	t.Helper()
	c := mqtt.NewClient(opts.SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4))
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}
