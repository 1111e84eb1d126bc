package registry

import (
	"context"
	"errors"
	"strings"
	"time"

	"devreg"
	"devreg/broker"
	"devreg/credential"
)

// AuthorizeBroker refuses a caller without a key of scope broker: every broker endpoint asks,
// also those whose answer needs no device.
func (s *Service) AuthorizeBroker(ctx context.Context) error {
	_, err := authorize(ctx, devreg.ScopeBroker)
	return err
}

// BrokerDevice is a device that a broker has let in.
type BrokerDevice struct {
	AccountID    string
	DeviceID     string
	DeviceTypeID string
	// Expires is when the token the device logged in with expires (brokers that can disconnect
	// the client then are told); zero for a secret.
	Expires time.Time
}

// BrokerCredentials are what a broker sent for a device's login, as it sent them.
type BrokerCredentials struct {
	Username string // the device ID, or DEVICE_ID@ACCOUNT_ID
	ClientID string // the MQTT client ID; "" where the broker does not send it
	Password string // a secret or a device token: BrokerLogin tells them apart
}

// brokerDeviceID reads the MQTT username a device presents: its device ID, or
// DEVICE_ID@ACCOUNT_ID, whose account must be the broker key's. Device IDs hold no '@'.
func brokerDeviceID(c devreg.Caller, username string) (string, bool) {
	id, account, qualified := strings.Cut(username, "@")
	if qualified && account != c.AccountID || credential.CheckDeviceID(id) != "" {
		return "", false
	}
	return id, true
}

// BrokerLogin decides, for a caller with a broker key, whether a device may connect with the
// credentials its broker sent: its username names a device of the key's account, its MQTT client
// ID is its device ID (where the broker sends one), and its password is either a device token
// (checked as VerifyDeviceToken checks it: issued to this device of this account for a credential
// that is still valid) or one of its secrets (checked as at the token endpoint, the throttle
// included). A token is accepted even while the device is throttled: tokens cannot be guessed,
// so devices that use them ride out someone spending the device's failures. The device and its
// batch must be enabled. Every refusal is ErrInvalidClient, or ERATELIMITED for a throttled secret.
func (s *Service) BrokerLogin(ctx context.Context, bc BrokerCredentials) (BrokerDevice, error) {
	c, err := authorize(ctx, devreg.ScopeBroker)
	if err != nil {
		return BrokerDevice{}, err
	}
	deviceID, ok := brokerDeviceID(c, bc.Username)
	if !ok || bc.ClientID != "" && bc.ClientID != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	if looksLikeToken(bc.Password) {
		return s.brokerTokenLogin(ctx, c, deviceID, bc.Password)
	}
	dev, err := s.AuthenticateDevice(ctx, c.AccountID, deviceID, bc.Password)
	if err != nil {
		return BrokerDevice{}, err
	}
	if !c.Reaches(dev.DeviceTypeID) {
		return BrokerDevice{}, ErrInvalidClient
	}
	s.markSeen(c.AccountID, deviceID, s.now())
	return BrokerDevice{AccountID: dev.AccountID, DeviceID: dev.DeviceID, DeviceTypeID: dev.DeviceTypeID}, nil
}

// brokerTokenLogin is BrokerLogin with a device token: the checks of VerifyDeviceToken, with
// those that need no read (the token names this device of the key's account) before the read.
func (s *Service) brokerTokenLogin(ctx context.Context, c devreg.Caller, deviceID, token string) (BrokerDevice, error) {
	claims, err := s.tokenClaims(token)
	if err != nil || claims.AccountID != c.AccountID || claims.Subject != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	d, err := s.tokenDevice(ctx, claims)
	if errors.Is(err, ErrTokenRevoked) || err == nil && !c.Reaches(d.DeviceTypeID) {
		return BrokerDevice{}, ErrInvalidClient
	}
	if err != nil {
		return BrokerDevice{}, err
	}
	s.markSeen(c.AccountID, deviceID, s.now())
	return BrokerDevice{AccountID: c.AccountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID, Expires: time.Unix(claims.Expires, 0)}, nil
}

// looksLikeToken tells a device token (a JWT: three base64url parts, the first a JSON object)
// from a secret, which is at most 256 printable characters.
func looksLikeToken(s string) bool {
	return len(s) > 256 && strings.HasPrefix(s, "eyJ") && strings.Count(s, ".") == 2
}

// BrokerAllows decides, for a caller with a broker key, whether the device that username names
// (with MQTT client ID clientID, "" where the broker does not send it) may publish to a topic or
// subscribe to a topic filter: only within its type's filters for that action, with the
// placeholders filled in for the device, and only while the device and its batch are enabled.
func (s *Service) BrokerAllows(ctx context.Context, username, clientID, topic string, action broker.Action) (bool, error) {
	c, err := authorize(ctx, devreg.ScopeBroker)
	if err != nil {
		return false, err
	}
	deviceID, ok := brokerDeviceID(c, username)
	if !ok || clientID != "" && clientID != deviceID {
		return false, nil
	}
	switch action {
	case broker.Publish:
		ok = broker.CheckTopic(topic) == nil
	case broker.Subscribe:
		ok = broker.CheckFilter(topic) == nil
	default:
		ok = false
	}
	if !ok {
		return false, nil
	}
	d, err := s.deviceAuth(ctx, c.AccountID, deviceID)
	if err != nil {
		return false, err
	}
	if !d.Enabled || !c.Reaches(d.DeviceTypeID) { // the device, or its batch, is disabled
		return false, nil
	}
	t, err := s.store.DeviceType(ctx, c.AccountID, d.DeviceTypeID)
	if err != nil {
		return false, err
	}
	filters := t.MQTTPublish
	if action == broker.Subscribe {
		filters = t.MQTTSubscribe
	}
	vars := broker.Vars{AccountID: c.AccountID, DeviceID: deviceID, DeviceTypeID: t.ID}
	return broker.Allowed(broker.Expand(filters, vars), topic), nil
}
