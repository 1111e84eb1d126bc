package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/rabbittest"
)

// TestDeviceConnectMQTT runs the end-of-line check through a real RabbitMQ node that asks the
// real server: the device gets a token, checks in, connects to the broker with the token and
// publishes its check-in; a device whose type may not publish there fails the check.
func TestDeviceConnectMQTT(t *testing.T) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	url, _ := serve(t, dir)
	ctx := context.Background()
	c := client.New(url, acme.APIKey)
	open, closed := "Open", "Closed"
	openType, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &open})
	if err != nil {
		t.Fatal(err)
	}
	closedType, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &closed, MQTTPublish: []string{"telemetry/{device_id}"}})
	if err != nil {
		t.Fatal(err)
	}
	for typeID, id := range map[string]string{openType.ID: "AA:BB:CC:00:00:01", closedType.ID: "quiet-1"} {
		if _, err := c.Register(ctx, typeID, []client.Credential{{DeviceID: id, Secret: "secret-of-" + strings.ReplaceAll(id, ":", "")}}, client.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	key, err := c.CreateAPIKey(ctx, "rabbitmq", devreg.ScopeBroker)
	if err != nil {
		t.Fatal(err)
	}
	node := rabbittest.Start(t, url, key.Key)

	connect := func(device string) (int, string) {
		cmd := exec.Command(binary, "device", "connect", "--server", url, "--account", acme.AccountID, "--device", device, "--mqtt", "tcp://"+node.MQTTAddr)
		cmd.Env = append(os.Environ(), "DEVREG_DEVICE_SECRET=secret-of-"+strings.ReplaceAll(device, ":", ""))
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return code, string(out)
	}
	if code, out := connect("AA:BB:CC:00:00:01"); code != 0 || !strings.Contains(out, "mqtt:     ok") {
		t.Errorf("device connect --mqtt = exit %d:\n%s", code, out)
	}
	if code, out := connect("quiet-1"); code != 1 || !strings.Contains(out, "mqtt:     FAILED") || !strings.Contains(out, "devices/quiet-1/checkin") {
		t.Errorf("device connect --mqtt for a device that may not publish there = exit %d:\n%s", code, out)
	}
}
