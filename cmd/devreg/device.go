package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"devreg/client"
)

// deviceConnect acts as a device: it gets a token with the device's credentials and checks in,
// printing each step, as a factory's end-of-line test station does with every new device. With
// --rotate it first replaces the device's secret and proves the new one by logging in with it.
func (m *Main) deviceConnect(ctx context.Context, args []string) error {
	fs := m.flagSet("device connect", "device connect --server URL --account ID --device ID [--secret S | --cert FILE --key FILE] [--rotate] [flags]\n\n"+
		"The secret comes from --secret, DEVREG_DEVICE_SECRET or one line of stdin. A device with a\n"+
		"certificate instead (--cert, --key) presents it on the TLS connection and gets its token without\n"+
		"a secret (mutual TLS, RFC 8705); the server must be https:// and --mqtt then logs in to the\n"+
		"broker by the same certificate (mqtts://HOST:8883), with no username or password.\n\n"+
		"With --rotate the device first replaces that secret with one the server generates\n"+
		"(POST /device/v1/credentials), then gets its token with the new secret and checks in. The new\n"+
		"secret is printed once, on stdout only, as soon as the server hands it out (also when a later\n"+
		"step fails), on a line of its own for scripts:\n"+
		"  new secret: SECRET\n"+
		"  new credential: CREDENTIAL_ID\n"+
		"  old secret valid until: RFC3339_TIME\n"+
		"Store the new secret in the device; the old one keeps working until the time shown (the device\n"+
		"type's rotation_grace_seconds). Once the new secret has been used (this command uses it at once)\n"+
		"the old one can no longer rotate; if the new secret was lost after that, an administrator adds\n"+
		"a credential for the device (console: the device's page, Credentials).\n\n"+
		"Examples:\n  echo \"$SECRET\" | devreg device connect --server https://devreg.example.com --account acc_123 --device AA:BB:CC:00:00:01\n"+
		"  NEW=$(echo \"$SECRET\" | devreg device connect --account acc_123 --device AA:BB:CC:00:00:01 --rotate | sed -n 's/^new secret: //p')\n"+
		"  devreg device connect --server https://devreg.example.com --account acc_123 --device dev-0001 --cert dev-0001.crt --key dev-0001.key --mqtt mqtts://broker.example.com:8883")
	server := fs.String("server", m.env("DEVREG_SERVER", "http://localhost:8080"), "the devreg server's `URL` (env DEVREG_SERVER)")
	account := fs.String("account", "", "the account `ID` the device belongs to (required)")
	device := fs.String("device", "", "the device `ID` (required)")
	secret := fs.String("secret", "", "the device `secret` (prefer DEVREG_DEVICE_SECRET or stdin: arguments show in process lists)")
	firmware := fs.String("firmware", "", "firmware `version` to report at check-in")
	status := fs.String("status", "", "status to report at check-in, a JSON `object`")
	audience := fs.String("audience", "", "audience for the token's aud claim")
	rotate := fs.Bool("rotate", false, "first replace the device's secret with a new one the server generates, print it, and go on with it")
	broker := fs.String("mqtt", "", "also connect to this MQTT broker `URL` (tcp://HOST:1883, or mqtts://HOST:8883 on TLS) with the token as password, or by --cert, and publish a check-in to devices/{device_id}/checkin")
	certFile := fs.String("cert", "", "the device's certificate `FILE` (PEM, then any intermediates) to authenticate with instead of a secret; needs --key")
	keyFile := fs.String("key", "", "the private key `FILE` (PEM) of --cert")
	caFile := fs.String("ca-file", "", "trust the server and the broker by the CA certificates in this PEM `FILE` instead of the system's")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *account == "" || *device == "" {
		return usageError{"--account and --device are required"}
	}
	byCert := *certFile != "" || *keyFile != ""
	switch {
	case byCert && (*certFile == "" || *keyFile == ""):
		return usageError{"--cert and --key go together: the device's certificate and its private key"}
	case byCert && (*secret != "" || *rotate):
		return usageError{"a device with --cert authenticates by its certificate: leave out --secret and --rotate"}
	case byCert && !strings.HasPrefix(*server, "https://"):
		return usageError{"--cert needs an https:// --server: the certificate is presented on the TLS connection"}
	}
	if *status != "" && !json.Valid([]byte(*status)) {
		return usageError{"--status must be a JSON object, such as '{\"selftest\": \"pass\"}'"}
	}
	tlsConfig, err := client.DeviceTLSConfig(*certFile, *keyFile, *caFile)
	if err != nil {
		return usageError{err.Error()}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}, Timeout: time.Minute}
	var tok client.Token
	if byCert {
		fmt.Fprintf(m.Stdout, "device %s of account %s at %s, by certificate %s\n", *device, *account, *server, *certFile)
		tok, err = client.DeviceTokenByCertificate(ctx, hc, *server, *account, *device, *audience)
	} else {
		tok, err = m.deviceTokenBySecret(ctx, hc, *server, *account, *device, *secret, *audience, *rotate)
		if errors.Is(err, errRotate) || errors.As(err, new(usageError)) {
			return err
		}
	}
	var reported json.RawMessage
	if *status != "" {
		reported = json.RawMessage(*status)
	}
	if err != nil {
		fmt.Fprintf(m.Stdout, "token:    FAILED: %v\n", explainDeviceError(err))
		return errors.New("the device could not authenticate")
	}
	fmt.Fprintf(m.Stdout, "token:    ok (%s token, valid for %ds)\n", tok.TokenType, tok.ExpiresIn)
	if err := client.CheckIn(ctx, hc, *server, tok.AccessToken, *firmware, reported); err != nil {
		fmt.Fprintf(m.Stdout, "check-in: FAILED: %v\n", explainDeviceError(err))
		return errors.New("the device could not check in")
	}
	fmt.Fprintf(m.Stdout, "check-in: ok\n")
	if *broker == "" {
		return nil
	}
	if err := mqttCheckIn(*broker, *device, tok.AccessToken, reported, tlsConfig, byCert); err != nil {
		fmt.Fprintf(m.Stdout, "mqtt:     FAILED: %v\n", err)
		return errors.New("the device could not reach the MQTT broker")
	}
	fmt.Fprintf(m.Stdout, "mqtt:     ok (connected to %s, check-in published)\n", *broker)
	return nil
}

// errRotate is a failed rotation, reported already.
var errRotate = errors.New("the device could not rotate its secret; its secret is unchanged")

// deviceTokenBySecret reads the device's secret (the flag, the environment or a line of stdin),
// rotates it first with rotate, and gets a token with it.
func (m *Main) deviceTokenBySecret(ctx context.Context, hc *http.Client, server, account, device, secret, audience string, rotate bool) (client.Token, error) {
	if secret == "" {
		secret = m.Getenv("DEVREG_DEVICE_SECRET")
	}
	if secret == "" {
		line, _ := bufio.NewReader(m.Stdin).ReadString('\n')
		secret = strings.TrimRight(line, "\r\n")
	}
	if secret == "" {
		return client.Token{}, usageError{"no secret: pass --secret, set DEVREG_DEVICE_SECRET or write it to stdin"}
	}
	fmt.Fprintf(m.Stdout, "device %s of account %s at %s\n", device, account, server)
	if rotate {
		rot, err := client.RotateCredential(ctx, hc, server, account, device, secret)
		if err != nil {
			fmt.Fprintf(m.Stdout, "rotate:   FAILED: %v\n", explainDeviceError(err))
			return client.Token{}, errRotate
		}
		// The only place the new secret ever goes: stdout, once.
		fmt.Fprintf(m.Stdout, "rotate:   ok (credential %s replaces %s)\n", rot.CredentialID, rot.PreviousCredentialID)
		fmt.Fprintf(m.Stdout, "new secret: %s\n", rot.Secret)
		fmt.Fprintf(m.Stdout, "new credential: %s\n", rot.CredentialID)
		fmt.Fprintf(m.Stdout, "old secret valid until: %s\n", rot.PreviousNotAfter.UTC().Format(time.RFC3339))
		secret = rot.Secret
	}
	return client.DeviceToken(ctx, hc, server, account, device, secret, audience)
}

// mqttCheckIn connects to an MQTT broker as the device (client ID its device ID) and publishes a
// check-in at QoS 1: both the connect and the publish must be accepted by the broker. A device
// with a secret logs in with its device ID as username and its token as password, so the broker
// never sees the secret; a device with a certificate (byCert) presents it on TLS and sends no
// username or password, for the broker to log it in by the certificate's common name (RabbitMQ
// ssl_cert_login, mosquitto use_identity_as_username, EMQX peer_cert_as_username).
func mqttCheckIn(brokerURL, deviceID, token string, status json.RawMessage, tlsConfig *tls.Config, byCert bool) error {
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetClientID(deviceID).SetTLSConfig(tlsConfig).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(15 * time.Second).SetProtocolVersion(4)
	if !byCert {
		opts.SetUsername(deviceID).SetPassword(token)
	}
	c := mqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(20*time.Second) || t.Error() != nil {
		if t.Error() != nil {
			return fmt.Errorf("connect: %v (is the device registered and enabled, and does the broker ask devreg?)", t.Error())
		}
		return errors.New("connect: no answer from the broker in 20 s")
	}
	defer c.Disconnect(250)
	payload, _ := json.Marshal(struct {
		DeviceID string          `json:"device_id"`
		Status   json.RawMessage `json:"status,omitempty"`
	}{deviceID, status})
	t := c.Publish("devices/"+deviceID+"/checkin", 1, false, payload)
	if !t.WaitTimeout(15*time.Second) || t.Error() != nil || !c.IsConnectionOpen() {
		return fmt.Errorf("publish to devices/%s/checkin was not accepted (does the device type allow it?)", deviceID)
	}
	return nil
}

func explainDeviceError(err error) string {
	var de *client.DeviceError
	if errors.As(err, &de) {
		switch {
		case de.Status == 401 && de.Code == "invalid_client":
			return "invalid_client: unknown device, wrong secret, the device or its batch is disabled, or the secret's " +
				"credential is disabled, expired or not yet valid; a secret this device has rotated away from, once the " +
				"new one was used, cannot rotate again (an administrator can add a credential on the device's page)"
		case de.Status == 429 && de.Code == "rate_limited":
			return de.Error() + " (its current secret still works)"
		case de.Status == 429:
			return de.Error() + " (too many failed attempts for this device)"
		}
		return de.Error()
	}
	return "the server could not be reached: " + err.Error()
}
