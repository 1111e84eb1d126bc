package brokerapi_test

import (
	"context"
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

	"devreg"
)

// rabbitNode is a private RabbitMQ node for one test run: its own node name, ports, config,
// data and logs, with the MQTT plugin and the HTTP auth backend pointed at a devreg server. The
// system's broker is not touched.
type rabbitNode struct {
	mqttAddr string
	cmd      *exec.Cmd
	dir      string
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

// startRabbitMQ starts the node; the test fails (never skips) where RabbitMQ cannot run.
func startRabbitMQ(t *testing.T, devregURL, brokerKey string) *rabbitNode {
	t.Helper()
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
	n := &rabbitNode{mqttAddr: fmt.Sprintf("127.0.0.1:%d", mqttPort), cmd: cmd, dir: dir}
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
		if c, err := net.DialTimeout("tcp", n.mqttAddr, time.Second); err == nil {
			c.Close()
			return n
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "log", "stdout"))
			t.Fatalf("RabbitMQ's MQTT listener did not come up in 90 s:\n%s", b)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// connect opens an MQTT 3.1.1 session with the broker as a device would.
func (n *rabbitNode) connect(t *testing.T, clientID, username, password string) (mqtt.Client, error) {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + n.mqttAddr).SetClientID(clientID).SetUsername(username).SetPassword(password).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
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

// TestRealRabbitMQ runs devices through a real RabbitMQ 3.10 node whose MQTT plugin asks devreg:
// who may connect, and which topics each device may use.
func TestRealRabbitMQ(t *testing.T) {
	f := newFleet(t, "")
	node := startRabbitMQ(t, f.url, f.brokerKey)

	t.Run("connect", func(t *testing.T) {
		for _, tc := range []struct {
			name, client, user, pass string
			ok                       bool
		}{
			{"secret", "d1", "d1", "secretford1", true},
			{"token", "d1", "d1", f.token, true},
			{"mac-address-id", "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:01", "secretforAABBCC000001", true},
			{"wrong-secret", "d1", "d1", "not-the-secret", false},
			{"unknown-device", "ghost", "ghost", "secretforghost", false},
			{"disabled-device", "off", "off", "secretforoff", false},
			{"dotted-id", "dot.ted", "dot.ted", "secretfordot.ted", false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c, err := node.connect(t, tc.client, tc.user, tc.pass)
				if (err == nil) != tc.ok {
					t.Fatalf("connect as %s: %v, want allowed %v", tc.user, err, tc.ok)
				}
				if c != nil {
					c.Disconnect(100)
				}
			})
		}
	})

	t.Run("topics", func(t *testing.T) {
		c, err := node.connect(t, "d1", "d1", f.token)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		sub := c.Subscribe("devices/d1/cmd/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- string(m.Payload()) })
		if !sub.WaitTimeout(10*time.Second) || sub.Error() != nil {
			t.Fatalf("subscribe to its own commands: %v", sub.Error())
		}
		pub := c.Publish("devices/d1/cmd/reboot", 1, false, "now")
		if !pub.WaitTimeout(10*time.Second) || pub.Error() != nil {
			t.Fatalf("publish to its own topic: %v", pub.Error())
		}
		select {
		case m := <-got:
			if m != "now" {
				t.Errorf("received %q", m)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the device did not receive the message on its own topic")
		}
	})

	// A refused publish or subscription ends the session in RabbitMQ 3.10.
	refused := func(t *testing.T, client, user, pass string, act func(c mqtt.Client) mqtt.Token) {
		t.Helper()
		c, err := node.connect(t, client, user, pass)
		if err != nil {
			t.Fatal(err)
		}
		tok := act(c)
		done := tok.WaitTimeout(5 * time.Second)
		time.Sleep(300 * time.Millisecond)
		if done && tok.Error() == nil && c.IsConnectionOpen() {
			if s, ok := tok.(*mqtt.SubscribeToken); ok && s.Result()["devices/#"] != 0x80 && len(s.Result()) > 0 {
				t.Errorf("the broker granted %v", s.Result())
			} else if !ok {
				t.Error("the broker accepted it and kept the session")
			}
		}
	}
	t.Run("publish-to-another-device", func(t *testing.T) {
		refused(t, "d1", "d1", "secretford1", func(c mqtt.Client) mqtt.Token { return c.Publish("devices/AA:BB:CC:00:00:01/up", 1, false, "x") })
	})
	t.Run("subscribe-to-every-device", func(t *testing.T) {
		refused(t, "d1", "d1", "secretford1", func(c mqtt.Client) mqtt.Token { return c.Subscribe("devices/#", 1, nil) })
	})
	t.Run("another-client-id", func(t *testing.T) {
		// RabbitMQ sends the client ID to /user, so a device cannot even take over another's session.
		if _, err := node.connect(t, "AA:BB:CC:00:00:01", "d1", "secretford1"); err == nil {
			t.Error("d1 connected with the client ID of another device")
		}
	})

	t.Run("throttled-secret-but-token-works", func(t *testing.T) {
		for range 10 {
			node.connect(t, "d1", "d1", "wrong-guess-000")
		}
		if _, err := node.connect(t, "d1", "d1", "secretford1"); err == nil {
			t.Error("the right secret after 10 failures was let in")
		}
		if _, err := node.connect(t, "d1", "d1", f.token); err != nil {
			t.Errorf("a valid token while the device is throttled: %v", err)
		}
	})

	t.Run("disabled-batch", func(t *testing.T) {
		ctx := devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: f.account, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
		d, err := f.srv.Service.Device(ctx, "AA:BB:CC:00:00:01")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.srv.Service.SetBatchStatus(ctx, d.BatchID, devreg.StatusDisabled); err != nil {
			t.Fatal(err)
		}
		if _, err := node.connect(t, "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:01", "secretforAABBCC000001"); err == nil {
			t.Error("a device of a disabled batch was let in")
		}
	})
}
