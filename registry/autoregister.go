package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/devcert"
)

// Just-in-time registration (AWS JITR, Eclipse Hono's auto-provisioning): a device type with
// auto_register on registers, at its first certificate login, a device that is not registered and
// whose certificate chains to one of the type's trusted CAs, is valid now and carries the device
// ID in the type's certificate_id_field. The device's certificate is pinned as its credential, so
// that from then on it logs in as a device registered by certificate does.

// AutoRegisterWindow is the window of a device type's auto_register_limit: the type registers at
// most that many devices within an hour of the first of the window.
const AutoRegisterWindow = time.Hour

// ErrAutoRegisterLimit is the cause of the refusal (ERATELIMITED, with RetryAfter) of a
// just-in-time registration beyond its device type's auto_register_limit.
var ErrAutoRegisterLimit = errors.New("auto_register_limit reached")

// autoRegisterCreator is what the batches of just-in-time registrations name as their creator.
const autoRegisterCreator = "just-in-time registration"

// autoRegister registers device deviceID, which the account does not have, by the certificate
// chain it presented (one checkPresented took), when exactly one of the account's device types with auto_register on
// trusts the certificate for that ID. It returns the device as it is now (also when another login
// registered it meanwhile), or a refusal for the log (the device is told invalid_client, as any
// unknown device is), or an error: ERATELIMITED with ErrAutoRegisterLimit beyond the type's
// auto_register_limit, or a failure.
//
// The limit is counted in one statement (the throttle table's, as the rotation limit is) before
// the device is written, and given back when nothing was, so that parallel first logins register
// exactly the limit's worth.
func (s *Service) autoRegister(ctx context.Context, accountID, deviceID string, chain []*x509.Certificate, now time.Time) (devreg.DeviceAuth, error, error) {
	var none devreg.DeviceAuth
	if !opaqueID(accountID) || credential.CheckDeviceID(deviceID) != "" {
		return none, refusedCertificate("no such device", nil), nil
	}
	t, refusal, err := s.autoRegisterType(ctx, accountID, deviceID, chain, now)
	if err != nil || refusal != nil {
		return none, refusal, err
	}
	key := "autoregister:" + throttleKey(accountID, t.ID)
	n, since, err := s.store.ReserveAttempt(context.WithoutCancel(ctx), key, now, AutoRegisterWindow)
	if err != nil {
		return none, nil, err
	}
	if limit := t.AutoRegisterMax(); n > limit {
		wait := min(since.Add(AutoRegisterWindow).Sub(now), AutoRegisterWindow)
		s.logAutoRegister("just-in-time registration refused: the device type's auto_register_limit is reached", accountID, deviceID, t.ID,
			"auto_register_limit", limit)
		return none, nil, s.unchecked(ctx, key, since, &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait, Err: ErrAutoRegisterLimit,
			Message: fmt.Sprintf("the device type has registered %d devices by their certificates within the hour, the most it allows (auto_register_limit); retry in %s",
				limit, max(wait.Round(time.Second), time.Second))})
	}
	leaf := chain[0]
	details := certificateDetails(leaf)
	audit := s.auditEntry(ctx, devreg.AuditActor{Type: devreg.ActorDevice, ID: deviceID, Name: deviceID}, "device.auto_register",
		devreg.AuditObject{Type: "device", ID: deviceID}, map[string]any{"device_type_id": t.ID, "sha256": devcert.FingerprintHex(leaf),
			"subject": details.Subject, "issuer": details.Issuer, "serial": details.Serial})
	res, err := s.store.AutoRegister(ctx, devreg.AutoRegistration{AccountID: accountID, DeviceTypeID: t.ID, DeviceID: deviceID, Certificate: details, Now: now,
		Batch: devreg.Batch{ID: credential.RandomID("bat", 16), CreatedBy: autoRegisterCreator}, Audit: audit})
	if errors.Is(err, devreg.ErrDeviceTypeDeleted) {
		err = devreg.Errorf(devreg.ENOTFOUND, "device type %s was deleted while device %s registered itself; nothing was registered", t.ID, deviceID)
	}
	if err != nil {
		return none, nil, s.unchecked(ctx, key, since, err)
	}
	if !res.Registered {
		if err := s.releaseAttempt(ctx, key, since); err != nil {
			return none, nil, fmt.Errorf("give back a throttle attempt: %w", err)
		}
	}
	switch {
	case res.CertificateHolder != "":
		return none, refusedCertificate(fmt.Sprintf("device is not registered, and its certificate is a credential of device %s already", res.CertificateHolder), nil), nil
	case res.TypeOff:
		return none, refusedCertificate(fmt.Sprintf("device is not registered, and device type %s no longer registers devices by their certificates", t.ID), nil), nil
	case res.BatchDisabled:
		return none, refusedCertificate(fmt.Sprintf("device is not registered, and today's batch of just-in-time registrations of device type %s (%s) is disabled", t.ID, res.BatchID), nil), nil
	}
	d, err := s.store.DeviceAuth(ctx, accountID, deviceID)
	if devreg.ErrorCode(err) == devreg.ENOTFOUND { // deleted at once
		return none, refusedCertificate("no such device", nil), nil
	}
	return d, nil, err
}

// autoRegisterType returns the one device type with auto_register on whose trusted CAs the
// certificate chain verifies to now and whose certificate_id_field holds deviceID, or the refusal.
func (s *Service) autoRegisterType(ctx context.Context, accountID, deviceID string, chain []*x509.Certificate, now time.Time) (devreg.DeviceType, error, error) {
	types, err := s.store.ListDeviceTypes(ctx, accountID)
	if err != nil {
		return devreg.DeviceType{}, nil, err
	}
	var matches []devreg.DeviceType
	var lastErr error
	for _, t := range types {
		if !t.AutoRegister {
			continue
		}
		trust, err := s.trustOf(ctx, accountID, t)
		if err != nil {
			return devreg.DeviceType{}, nil, err
		}
		if len(trust.cas) == 0 {
			continue
		}
		if err := devcert.VerifyDevice(chain[0], chain[1:], trust.cas, now); err != nil {
			lastErr = err
			continue
		}
		id, err := devcert.DeviceID(chain[0], trust.field)
		if err != nil {
			lastErr = err
			continue
		}
		if id == deviceID {
			matches = append(matches, t)
		}
	}
	switch len(matches) {
	case 0:
		return devreg.DeviceType{}, refusedCertificate("no such device, and no device type with auto_register on trusts its certificate for this device ID", lastErr), nil
	case 1:
		return matches[0], nil, nil
	}
	ids := make([]string, len(matches))
	for i, t := range matches {
		ids[i] = t.ID
	}
	// Which type the device is of cannot be guessed: an administrator must give the types' CAs
	// apart (or turn auto_register off on all but one).
	s.logAutoRegister("just-in-time registration refused: several device types with auto_register on trust the certificate", accountID, deviceID, "",
		"device_type_ids", strings.Join(ids, ","))
	return devreg.DeviceType{}, refusedCertificate(fmt.Sprintf("no such device, and the device types %s all have auto_register on and trust its certificate for this device ID: "+
		"which one it is of is ambiguous", strings.Join(ids, ", ")), nil), nil
}

// logAutoRegister logs a refused just-in-time registration an administrator should know of.
func (s *Service) logAutoRegister(msg, accountID, deviceID, typeID string, args ...any) {
	if s.Log == nil {
		return
	}
	args = append([]any{"account_id", accountID, "device_id", deviceID}, args...)
	if typeID != "" {
		args = append(args, "device_type_id", typeID)
	}
	s.Log.Warn(msg, args...)
}
