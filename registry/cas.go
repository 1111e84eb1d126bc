package registry

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/devcert"
)

// caType returns the caller's device type id for managing its trusted CAs (admin only), or
// ENOTFOUND as if it did not exist.
func (s *Service) caType(ctx context.Context, id string) (devreg.Caller, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return c, err
	}
	if !opaqueID(id) || !c.Reaches(id) {
		return c, notFound("device type", id)
	}
	_, err = s.store.DeviceType(ctx, c.AccountID, id)
	return c, err
}

// ListTrustedCAs returns the CA certificates a device type trusts, oldest first.
func (s *Service) ListTrustedCAs(ctx context.Context, deviceTypeID string) ([]devreg.TrustedCA, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return nil, err
	}
	return s.store.TrustedCAs(ctx, c.AccountID, deviceTypeID)
}

// AddTrustedCA makes a device type trust the CA certificate given in PEM: one certificate, a CA,
// valid now, with a key devcert accepts. A refusal is EINVALID naming the certificate field; a
// certificate the type trusts already is ECONFLICT; the type holds at most devreg.MaxTrustedCAs.
func (s *Service) AddTrustedCA(ctx context.Context, deviceTypeID, certPEM string) (devreg.TrustedCA, error) {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return devreg.TrustedCA{}, err
	}
	now := s.now()
	cert, err := devcert.ParsePEM(certPEM)
	if err == nil {
		err = devcert.ValidateCA(cert, now)
	}
	if err != nil {
		return devreg.TrustedCA{}, &devreg.Error{Code: devreg.EINVALID, Message: "certificate: " + err.Error(), Err: err}
	}
	ca := devreg.TrustedCA{ID: credential.RandomID("ca", 16), DeviceTypeID: deviceTypeID, SHA256: devcert.FingerprintHex(cert),
		Subject: cert.Subject.String(), NotAfter: cert.NotAfter.UTC(), CreatedAt: now, DER: cert.Raw}
	ctx = s.audited(ctx, actorOf(c), "ca.create", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID}, caFields(ca))
	if err := s.store.AddTrustedCA(ctx, c.AccountID, ca); err != nil {
		return devreg.TrustedCA{}, err
	}
	return ca, nil
}

// DeleteTrustedCA makes a device type stop trusting one of its CA certificates. Devices whose
// certificates chain only to it can no longer log in with them.
func (s *Service) DeleteTrustedCA(ctx context.Context, deviceTypeID, caID string) error {
	c, err := s.caType(ctx, deviceTypeID)
	if err != nil {
		return err
	}
	cas, err := s.store.TrustedCAs(ctx, c.AccountID, deviceTypeID)
	if err != nil {
		return err
	}
	for _, ca := range cas {
		if ca.ID == caID {
			ctx = s.audited(ctx, actorOf(c), "ca.delete", devreg.AuditObject{Type: "devicetype", ID: deviceTypeID}, caFields(ca))
			return s.store.DeleteTrustedCA(ctx, c.AccountID, deviceTypeID, caID)
		}
	}
	return devreg.Errorf(devreg.ENOTFOUND, "device type %s has no trusted CA %s", deviceTypeID, caID)
}

// TrustedCACerts returns the CA certificates a device type of the account trusts, parsed, for
// verifying a device's certificate (devcert.VerifyDevice). It asks no caller: a device logging
// in has none yet. It is one indexed read per call; a type the account lacks trusts none.
func (s *Service) TrustedCACerts(ctx context.Context, accountID, deviceTypeID string) ([]*x509.Certificate, error) {
	cas, err := s.store.TrustedCAs(ctx, accountID, deviceTypeID)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(cas))
	for _, ca := range cas {
		cert, err := x509.ParseCertificate(ca.DER)
		if err != nil {
			return nil, fmt.Errorf("trusted CA %s of device type %s: %w", ca.ID, deviceTypeID, err)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}

// caFields are a trusted CA's fields as its audit entries show them.
func caFields(ca devreg.TrustedCA) map[string]any {
	return map[string]any{"ca_id": ca.ID, "sha256": ca.SHA256, "subject": ca.Subject, "not_after": ca.NotAfter.Format(time.RFC3339)}
}
