package brokerapi_test

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"devreg"
	"devreg/internal/rabbittest"
)

// TestRealRabbitMQ runs devices through a real RabbitMQ 3.10 node whose MQTT plugin asks devreg:
// who may connect, and which topics each device may use.
func TestRealRabbitMQ(t *testing.T) {
	f := newFleet(t, "")
	node := rabbittest.Start(t, f.url, f.brokerKey)

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
				c, err := node.Connect(t, tc.client, tc.user, tc.pass)
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
		c, err := node.Connect(t, "d1", "d1", f.token)
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
		c, err := node.Connect(t, client, user, pass)
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
		if _, err := node.Connect(t, "AA:BB:CC:00:00:01", "d1", "secretford1"); err == nil {
			t.Error("d1 connected with the client ID of another device")
		}
	})

	t.Run("throttled-secret-but-token-works", func(t *testing.T) {
		for range 10 {
			node.Connect(t, "d1", "d1", "wrong-guess-000")
		}
		if _, err := node.Connect(t, "d1", "d1", "secretford1"); err == nil {
			t.Error("the right secret after 10 failures was let in")
		}
		if _, err := node.Connect(t, "d1", "d1", f.token); err != nil {
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
		if _, err := node.Connect(t, "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:01", "secretforAABBCC000001"); err == nil {
			t.Error("a device of a disabled batch was let in")
		}
	})
}
