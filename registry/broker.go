package registry

import (
	"context"
	"strings"

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
}

// BrokerToken is the identity in a device token that the caller has verified (signature,
// issuer and expiry), for a device that presents its token as its MQTT password.
type BrokerToken struct {
	AccountID string
	DeviceID  string
	Cred      string // the credential the token was issued for
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

// BrokerLogin decides, for a caller with a broker key, whether a device may connect: its
// username names a device of the key's account, its MQTT client ID is its device ID (clientID ""
// where the broker does not send it), and its password is one of its secrets (checked as at the
// token endpoint, the throttle included) or an unexpired token issued for a credential that is
// still valid. A token is accepted even while the device is throttled: tokens cannot be guessed,
// so devices that use them ride out someone spending the device's failures. The device and its
// batch must be enabled. Every refusal is ErrInvalidClient, or ERATELIMITED for a throttled secret.
func (s *Service) BrokerLogin(ctx context.Context, username, clientID, secret string, token *BrokerToken) (BrokerDevice, error) {
	c, err := authorize(ctx, devreg.ScopeBroker)
	if err != nil {
		return BrokerDevice{}, err
	}
	deviceID, ok := brokerDeviceID(c, username)
	if !ok || clientID != "" && clientID != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	if token != nil {
		if token.AccountID != c.AccountID || token.DeviceID != deviceID {
			return BrokerDevice{}, ErrInvalidClient
		}
		d, err := s.deviceAuth(ctx, c.AccountID, deviceID)
		if err != nil {
			return BrokerDevice{}, err
		}
		if !c.Reaches(d.DeviceTypeID) || !tokenHonoured(d, token.Cred, s.now()) {
			return BrokerDevice{}, ErrInvalidClient
		}
		s.markSeen(c.AccountID, deviceID, s.now())
		return BrokerDevice{AccountID: c.AccountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID}, nil
	}
	dev, err := s.AuthenticateDevice(ctx, c.AccountID, deviceID, secret)
	if err != nil {
		return BrokerDevice{}, err
	}
	if !c.Reaches(dev.DeviceTypeID) {
		return BrokerDevice{}, ErrInvalidClient
	}
	s.markSeen(c.AccountID, deviceID, s.now())
	return BrokerDevice{AccountID: dev.AccountID, DeviceID: dev.DeviceID, DeviceTypeID: dev.DeviceTypeID}, nil
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
