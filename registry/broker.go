package registry

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"devreg"
	"devreg/broker"
	"devreg/credential"
	"devreg/devcert"
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
	Username string // the device ID, or DEVICE_ID@ACCOUNT_ID; "" where the broker sends none
	ClientID string // the MQTT client ID; "" where the broker does not send it
	Password string // a secret or a device token: BrokerLogin tells them apart; "" for none
	// CertificateDER is the device's certificate where the broker sends it whole (EMQX's
	// ${cert_pem}); nil where it does not. BrokerLogin reads it for a login without a password,
	// and for a certificate-bound token, which it must match.
	CertificateDER []byte
	// CommonName is the common name of the certificate the broker verified in the TLS handshake,
	// where the broker sends that alone (RabbitMQ's ssl_cert_login, EMQX's ${cert_common_name}).
	CommonName string
}

// A BrokerMethod is how a device logs in through its broker, as the metrics count it.
type BrokerMethod string

// The ways a device logs in through its broker.
const (
	BrokerBySecret      BrokerMethod = "secret"
	BrokerByToken       BrokerMethod = "token"
	BrokerByCertificate BrokerMethod = "certificate" // a certificate sent whole, without a password
	BrokerByCommonName  BrokerMethod = "common_name" // a verified common name alone, without a password
)

// Method says how the device logs in with bc: a password, when there is one, is a token or a
// secret (a device that sends one on a TLS listener logs in by it, as the brokers themselves do);
// without one, by the certificate the broker sent or else by its common name.
func (bc BrokerCredentials) Method() BrokerMethod {
	switch {
	case bc.Password != "" && looksLikeToken(bc.Password):
		return BrokerByToken
	case bc.Password != "":
		return BrokerBySecret
	case len(bc.CertificateDER) > 0:
		return BrokerByCertificate
	case bc.CommonName != "":
		return BrokerByCommonName
	default:
		return BrokerBySecret // an empty one, refused as any wrong secret
	}
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
// that is still valid, and, if bound to a certificate, sent with it by a broker whose key trusts
// its TLS) or one of its secrets (checked as at the token endpoint, the throttle
// included). A token is accepted even while the device is throttled: tokens cannot be guessed,
// so devices that use them ride out someone spending the device's failures. The device and its
// batch must be enabled. Every refusal is ErrInvalidClient, or ERATELIMITED for a throttled secret.
//
// A login without a password, by a certificate or a common name, is taken only from a key made
// with trusts_broker_tls; see brokerCertificateLogin.
func (s *Service) BrokerLogin(ctx context.Context, bc BrokerCredentials) (BrokerDevice, error) {
	c, err := authorize(ctx, devreg.ScopeBroker)
	if err != nil {
		return BrokerDevice{}, err
	}
	method := bc.Method()
	if method == BrokerByCertificate || method == BrokerByCommonName {
		return s.brokerCertificateLogin(ctx, c, bc, method)
	}
	deviceID, ok := brokerDeviceID(c, bc.Username)
	if !ok || bc.ClientID != "" && bc.ClientID != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	if method == BrokerByToken {
		return s.brokerTokenLogin(ctx, c, deviceID, bc)
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

// brokerCertificateLogin is BrokerLogin without a password. A certificate is public, so a broker
// that sends one attests that the device proved it holds its key in the TLS handshake: only a
// key made with trusts_broker_tls is believed. The device is the one the username names (the
// common name where there is no username). A certificate sent whole must then pass devreg's own
// check as well (AuthenticateDeviceCertificate: a pinned fingerprint, or a chain to the type's
// CAs for a device that pins none; its failures count toward the device's throttle). A common
// name alone must name the same device, which must be one that may log in by certificate at all
// (certificateDevice): the chain was the broker's to verify.
func (s *Service) brokerCertificateLogin(ctx context.Context, c devreg.Caller, bc BrokerCredentials, method BrokerMethod) (BrokerDevice, error) {
	if !c.TrustsBrokerTLS {
		return BrokerDevice{}, refusedCertificate("a login without a password, from a broker key made without trusts_broker_tls", nil)
	}
	name := bc.Username
	if name == "" {
		name = bc.CommonName
	}
	deviceID, ok := brokerDeviceID(c, name)
	if !ok || bc.ClientID != "" && bc.ClientID != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	if method == BrokerByCertificate {
		cert, err := x509.ParseCertificate(bc.CertificateDER)
		if err == nil {
			err = devcert.Check(cert)
		}
		if err != nil {
			return BrokerDevice{}, refusedCertificate("the broker sent a certificate devreg does not take", err)
		}
		dev, err := s.AuthenticateDeviceCertificate(ctx, c.AccountID, deviceID, []*x509.Certificate{cert})
		if err != nil {
			return BrokerDevice{}, err
		}
		if !c.Reaches(dev.DeviceTypeID) {
			return BrokerDevice{}, ErrInvalidClient
		}
		s.markSeen(c.AccountID, deviceID, s.now())
		return BrokerDevice{AccountID: c.AccountID, DeviceID: deviceID, DeviceTypeID: dev.DeviceTypeID}, nil
	}
	if cn, ok := brokerDeviceID(c, bc.CommonName); !ok || cn != deviceID {
		return BrokerDevice{}, refusedCertificate(fmt.Sprintf("the username names device %q, the certificate's common name another", deviceID), nil)
	}
	now := s.now()
	d, err := s.certificateDevice(ctx, c, deviceID, now)
	if err != nil {
		return BrokerDevice{}, err
	}
	s.markSeen(c.AccountID, deviceID, now)
	return BrokerDevice{AccountID: c.AccountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID}, nil
}

// certificateDevice reads device deviceID for a broker that vouches for its certificate without
// sending it (a common name, or an MQTT username it took from the certificate), and refuses it
// unless it is registered, reached by the key, enabled with its batch, and may log in by a
// certificate at all: it holds a certificate credential, one of which is enabled and inside its
// window (disabling a device's certificates stops such logins), or it holds none and its type
// trusts a CA. A device that logs in with secrets only is never let in by a name. The throttle
// does not apply: a broker that verified the certificate leaves nothing to guess.
func (s *Service) certificateDevice(ctx context.Context, c devreg.Caller, deviceID string, now time.Time) (devreg.DeviceAuth, error) {
	d, err := s.deviceAuth(ctx, c.AccountID, deviceID)
	switch {
	case err != nil:
		return d, err
	case d.DeviceTypeID == "" || !c.Reaches(d.DeviceTypeID):
		return d, refusedCertificate("no such device", nil)
	case !d.Enabled:
		return d, refusedCertificate("device or its batch is disabled", nil)
	}
	pinned := false
	for _, cr := range d.Credentials {
		if cr.KeyID == devreg.CertificateKeyID {
			if cr.ValidAt(now) {
				return d, nil
			}
			pinned = true
		}
	}
	if pinned {
		return d, refusedCertificate("every certificate credential of the device is disabled or outside its window", nil)
	}
	cas, err := s.store.TrustedCAs(ctx, c.AccountID, d.DeviceTypeID)
	if err != nil {
		return d, err
	}
	if len(cas) == 0 {
		return d, refusedCertificate("device holds no certificate credential and its type trusts no CA: a device with secrets only is not let in by a certificate's name", nil)
	}
	return d, nil
}

// brokerTokenLogin is BrokerLogin with a device token (bc.Password): the checks of
// VerifyDeviceToken, with those that need no read (the token names this device of the key's
// account) before the read. A token bound to a certificate (cnf, RFC 8705 §3) is taken only from
// a key made with trusts_broker_tls whose broker sent that very certificate: devreg believes no
// other broker that the device presented it.
func (s *Service) brokerTokenLogin(ctx context.Context, c devreg.Caller, deviceID string, bc BrokerCredentials) (BrokerDevice, error) {
	claims, err := s.tokenClaims(bc.Password)
	if err != nil || claims.AccountID != c.AccountID || claims.Subject != deviceID {
		return BrokerDevice{}, ErrInvalidClient
	}
	if claims.Cnf != nil {
		if !c.TrustsBrokerTLS {
			return BrokerDevice{}, refusedCertificate("a certificate-bound token, from a broker key made without trusts_broker_tls", nil)
		}
		cert, err := x509.ParseCertificate(bc.CertificateDER)
		if err != nil || subtle.ConstantTimeCompare([]byte(devcert.X5tS256(cert)), []byte(claims.Cnf.X5tS256)) != 1 {
			return BrokerDevice{}, refusedCertificate("a certificate-bound token, without the certificate it is bound to", err)
		}
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
	return s.brokerAllows(ctx, username, clientID, topic, action, false)
}

// BrokerAllowsUnannounced is BrokerAllows for a broker that may let devices in by their
// certificate without asking devreg first (Mosquitto with use_identity_as_username: its ACL
// check is the first devreg hears of the device, and cannot tell such a login from one by
// password). From a key made with trusts_broker_tls, the device must also be one that may log in
// by a certificate (as for a common name at BrokerLogin), so that a device with secrets only is
// never let in by a certificate's name; from any other key it is BrokerAllows.
func (s *Service) BrokerAllowsUnannounced(ctx context.Context, username, clientID, topic string, action broker.Action) (bool, error) {
	return s.brokerAllows(ctx, username, clientID, topic, action, true)
}

func (s *Service) brokerAllows(ctx context.Context, username, clientID, topic string, action broker.Action, unannounced bool) (bool, error) {
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
	var d devreg.DeviceAuth
	if unannounced && c.TrustsBrokerTLS {
		d, err = s.certificateDevice(ctx, c, deviceID, s.now())
		if errors.Is(err, ErrInvalidClient) {
			return false, nil
		}
	} else {
		d, err = s.topicDevice(ctx, c.AccountID, deviceID)
	}
	if err != nil {
		return false, err
	}
	if !d.Enabled || !c.Reaches(d.DeviceTypeID) { // the device, or its batch, is disabled
		return false, nil
	}
	t, err := s.topicType(ctx, c.AccountID, d.DeviceTypeID)
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

// typeRef names a device type of an account.
type typeRef struct{ accountID, id string }

// topicType is the device type whose topic filters a topic check applies, kept for hotTTL.
func (s *Service) topicType(ctx context.Context, accountID, id string) (devreg.DeviceType, error) {
	return s.types.load(typeRef{accountID, id}, func() (devreg.DeviceType, error) { return s.store.DeviceType(ctx, accountID, id) }, nil)
}

// forgetType drops the kept copy of a device type this server changes.
func (s *Service) forgetType(accountID, id string) {
	s.types.forget(func(t devreg.DeviceType) bool { return t.AccountID == accountID && t.ID == id })
}

// deviceRef names a device of an account.
type deviceRef struct{ accountID, id string }

// topicDevice is the device whose topic check this is, as deviceAuth reads it but without its
// credentials (a topic check needs its type and whether it and its batch are enabled), kept for
// hotTTL: brokers ask about every message a device publishes. A device that does not exist is
// not kept, so that one registered (or enrolled) a moment later is let in at once.
func (s *Service) topicDevice(ctx context.Context, accountID, deviceID string) (devreg.DeviceAuth, error) {
	read := func() (devreg.DeviceAuth, error) {
		d, err := s.deviceAuth(ctx, accountID, deviceID)
		d.Credentials = nil
		return d, err
	}
	return s.devices.load(deviceRef{accountID, deviceID}, read, func(d devreg.DeviceAuth) bool { return d.DeviceTypeID != "" })
}

// forgetDevices drops the devices kept for topic checks: after a change of devices or batches
// made through this server, which holds here at once.
func (s *Service) forgetDevices() { s.devices.forget(func(devreg.DeviceAuth) bool { return true }) }
