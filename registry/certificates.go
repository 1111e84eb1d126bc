package registry

import (
	"bytes"
	"cmp"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/devcert"
)

// CertificateRefused is why a device's certificate did not let it in. It is for the log only:
// the device is told ErrInvalidClient (errors.Is holds), whatever the reason.
type CertificateRefused struct {
	Reason string
	Err    error // the devcert refusal behind it, if any
}

func (e *CertificateRefused) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

// Unwrap gives the devcert refusal behind e, if any.
func (e *CertificateRefused) Unwrap() error { return e.Err }

// Is makes every certificate refusal an ErrInvalidClient.
func (e *CertificateRefused) Is(target error) bool { return target == ErrInvalidClient }

// refusedCertificate is the answer to a certificate that does not let its device in: invalid_client
// to the device, the reason in the error's cause for the log.
func refusedCertificate(reason string, err error) error {
	return &devreg.Error{Code: devreg.EUNAUTHORIZED, Message: ErrInvalidClient.Message, Err: &CertificateRefused{Reason: reason, Err: err}}
}

// typeTrust is what checking a certificate against a device type needs: the type's trusted CAs and
// where its certificates carry the device ID.
type typeTrust struct {
	cas   []*x509.Certificate
	field devcert.IDField
}

// trustOf reads the trusted CAs of device type dt.
func (s *Service) trustOf(ctx context.Context, accountID string, dt devreg.DeviceType) (typeTrust, error) {
	cas, err := s.TrustedCACerts(ctx, accountID, dt.ID)
	return typeTrust{cas: cas, field: devcert.IDField(dt.IDField())}, err
}

// checkDeviceCertificate checks a certificate given for device deviceID at now, as registration
// and adding a credential do: valid now, its ID field holding the device ID, and chaining to one of
// the type's CAs (through intermediates, when given) when the type has any. It returns a message
// for the user, or "".
func (t typeTrust) checkDeviceCertificate(cert *x509.Certificate, intermediates []*x509.Certificate, deviceID string, now time.Time) string {
	if now.After(cert.NotAfter) {
		return fmt.Sprintf("certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if err := devcert.CheckClient(cert); err != nil {
		return err.Error()
	}
	if len(t.cas) > 0 {
		// A certificate that becomes valid later may be registered now (its window starts
		// then), but it must chain to the type's CAs all the same: checked as of its start.
		if err := devcert.VerifyDevice(cert, intermediates, t.cas, latest(now, cert.NotBefore)); err != nil {
			return err.Error()
		}
	}
	id, err := devcert.DeviceID(cert, t.field)
	if err != nil {
		return err.Error()
	}
	if id != deviceID {
		return fmt.Sprintf("certificate's device ID (%s, the device type's certificate_id_field) is %q, not the device ID %q", t.field, id, deviceID)
	}
	return ""
}

// certificateDetails are what is kept of a certificate given whole.
func certificateDetails(cert *x509.Certificate) devreg.CertificateDetails {
	return devreg.CertificateDetails{SHA256: devcert.Fingerprint(cert), Subject: cert.Subject.String(), Issuer: cert.Issuer.String(),
		Serial: hex.EncodeToString(cert.SerialNumber.Bytes()), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
}

// addCertificate is AddCredential for a certificate: its window is the certificate's validity,
// narrowed by the one asked for.
func (s *Service) addCertificate(ctx context.Context, c devreg.Caller, deviceID string, nc devreg.NewCredential) (devreg.Credential, error) {
	if nc.Secret != "" || nc.Generate {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "send either certificate or secret (or generate), not both")
	}
	cert, err := devcert.ParsePEM(nc.Certificate)
	if err != nil {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "certificate: %s", err.Error())
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return devreg.Credential{}, err
	}
	t, err := s.store.DeviceType(ctx, c.AccountID, d.DeviceTypeID)
	if err != nil {
		return devreg.Credential{}, err
	}
	trust, err := s.trustOf(ctx, c.AccountID, t)
	if err != nil {
		return devreg.Credential{}, err
	}
	now := s.now()
	if problem := trust.checkDeviceCertificate(cert, nil, deviceID, now); problem != "" {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "certificate: %s", problem)
	}
	notBefore, notAfter := cert.NotBefore.UTC(), cert.NotAfter.UTC()
	if nc.NotBefore != nil && nc.NotBefore.After(notBefore) {
		notBefore = *nc.NotBefore
	}
	if nc.NotAfter != nil && nc.NotAfter.Before(notAfter) {
		notAfter = *nc.NotAfter
	}
	if err := checkWindow(&notBefore, &notAfter); err != nil {
		return devreg.Credential{}, err
	}
	if !notAfter.After(now) {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "not_after (%s) has passed; a credential must be valid for some time", notAfter.Format(time.RFC3339))
	}
	details := certificateDetails(cert)
	source := devreg.CredentialFromAPI
	if c.Source == devreg.SourceConsole {
		source = devreg.CredentialFromConsole
	}
	added := devreg.StoredCredential{
		Credential: devreg.Credential{ID: credential.RandomID("cr", 16), CreatedAt: now, NotBefore: &notBefore, NotAfter: &notAfter,
			Status: devreg.StatusEnabled, Source: source},
		KeyID: devreg.CertificateKeyID, Hash: details.SHA256[:],
	}
	withDetails(&added.Credential, &details)
	fields := credFields(added.Credential)
	audit := s.auditEntry(ctx, actorOf(c), "credential.create", devreg.AuditObject{Type: "device", ID: deviceID}, fields)
	audit.DeviceTypeID = d.DeviceTypeID
	err = s.store.AddCertificateCredential(devreg.NewContextWithAudit(ctx, audit), c.AccountID, deviceID, func(d devreg.DeviceAuth) (ch devreg.CredentialChange, err error) {
		defer func() { audit.Details["expired_deleted"] = ch.Delete }()
		return addingCredential(devreg.CredentialChange{Add: &added, Certificate: &details}, d, deviceID, now,
			func(old devreg.StoredCredential) error {
				if old.KeyID == devreg.CertificateKeyID && bytes.Equal(old.Hash, added.Hash) {
					return devreg.Errorf(devreg.ECONFLICT, "device %s already has a credential with this certificate (%s)", deviceID, old.ID)
				}
				return nil
			})
	})
	if err != nil {
		return devreg.Credential{}, err
	}
	return added.Credential, nil
}

// withDetails sets what a certificate credential shows of its certificate.
func withDetails(c *devreg.Credential, d *devreg.CertificateDetails) {
	c.Kind, c.SHA256 = devreg.CredentialCertificate, hex.EncodeToString(d.SHA256[:])
	c.Subject, c.Issuer, c.Serial = d.Subject, d.Issuer, d.Serial
}

// addCertificateDetails fills in what is kept of the certificates of a device's certificate
// credentials; a credential registered by fingerprint alone shows only its fingerprint. A
// certificate's validity narrows the window shown, as it narrows the one honoured.
func (s *Service) addCertificateDetails(ctx context.Context, accountID string, list []devreg.Credential, stored []devreg.StoredCredential) error {
	var fps [][]byte
	for _, sc := range stored {
		if sc.KeyID == devreg.CertificateKeyID {
			fps = append(fps, sc.Hash)
		}
	}
	if len(fps) == 0 {
		return nil
	}
	details, err := s.store.CertificateDetails(ctx, accountID, fps)
	if err != nil {
		return err
	}
	for i, sc := range stored {
		var fp [32]byte
		if sc.KeyID != devreg.CertificateKeyID || copy(fp[:], sc.Hash) != len(fp) {
			continue
		}
		d, ok := details[fp]
		if !ok {
			continue
		}
		withDetails(&list[i], &d)
		if list[i].NotBefore == nil || list[i].NotBefore.Before(d.NotBefore) {
			list[i].NotBefore = &d.NotBefore
		}
		if list[i].NotAfter == nil || list[i].NotAfter.After(d.NotAfter) {
			list[i].NotAfter = &d.NotAfter
		}
	}
	return nil
}

// AuthenticateDeviceCertificate authenticates device deviceID of an account by the certificate
// chain it presented (the leaf first; its possession of the key was proved by the TLS handshake).
// The leaf's fingerprint is looked for among the device's certificate credentials first: one
// enabled and inside its window lets the device in (one registered by its fingerprint alone must
// also chain to the type's CA and name the device, as its registration took on trust). A
// certificate the device does not hold lets it
// in only if the device holds no certificate credential at all (a pinned device cannot be
// impersonated by a sibling certificate from its CA), the chain verifies to one of the device
// type's trusted CAs now, and the certificate's ID field holds the device ID; the device then
// authenticates with no credential (CredentialID empty). The device and its batch must be enabled.
//
// A device that is not registered is registered now if exactly one device type with auto_register
// on trusts its certificate for its ID (just-in-time registration, see autoRegister), and then
// logs in with its certificate, pinned; beyond the type's auto_register_limit the answer is
// ERATELIMITED with ErrAutoRegisterLimit in its chain and RetryAfter set.
//
// Failures count toward the same throttle as wrong secrets (DeviceMaxFailures per
// DeviceFailureWindow), and are ErrInvalidClient to the device; the reason is a
// *CertificateRefused in the error's chain, for the log.
func (s *Service) AuthenticateDeviceCertificate(ctx context.Context, accountID, deviceID string, chain []*x509.Certificate) (AuthenticatedDevice, error) {
	now := s.now()
	key := "device:" + throttleKey(accountID, deviceID)
	d, cred, err := s.loginAttempt(ctx, accountID, deviceID, key, now, func(d devreg.DeviceAuth) (devreg.DeviceAuth, devreg.StoredCredential, error, error) {
		var none devreg.StoredCredential
		if refusal := checkPresented(chain); refusal != nil {
			return d, none, refusal, nil
		}
		if d.DeviceTypeID == "" {
			// Not registered: a device type with auto_register on may register it now (autoregister.go).
			var refusal error
			var err error
			if d, refusal, err = s.autoRegister(ctx, accountID, deviceID, chain, now); err != nil || refusal != nil {
				return d, none, refusal, err
			}
		}
		cred, refusal, err := s.checkCertificate(ctx, accountID, deviceID, d, chain, now)
		return d, cred, refusal, err
	})
	if err != nil {
		return AuthenticatedDevice{}, err
	}
	if cred.ID != "" {
		if cred.LastUsedAt == nil {
			err = s.store.CredentialUsed(ctx, accountID, deviceID, cred, now, "", nil)
		} else {
			s.markUsed(accountID, devreg.CredentialUse{DeviceID: deviceID, CredentialID: cred.ID, InDevice: cred.InDevice}, now)
		}
		if err != nil {
			return AuthenticatedDevice{}, err
		}
	}
	return AuthenticatedDevice{AccountID: accountID, DeviceID: deviceID, DeviceTypeID: d.DeviceTypeID, CredentialID: cred.ID}, nil
}

// checkPresented refuses a presented certificate that devreg takes from no one, before anything
// is read or written for it (a just-in-time registration included). The handshake's certificate
// was parsed by crypto/tls, or from a proxy's header, not by devcert.ParsePEM: it must pass the
// checks every certificate given to devreg passes, and be fit for TLS client authentication.
func checkPresented(chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return refusedCertificate("no certificate presented", nil)
	}
	// Whoever would vouch for it (a pinned fingerprint or the type's CA), a certificate that no
	// device may log in with is refused: a pinned fingerprint proves only that this is the certificate.
	if err := devcert.CheckClient(chain[0]); err != nil {
		return refusedCertificate("certificate cannot authenticate a device", err)
	}
	return nil
}

// checkCertificate decides a certificate login: the credential that lets the device in (none when
// its type's CA does), or the refusal.
func (s *Service) checkCertificate(ctx context.Context, accountID, deviceID string, d devreg.DeviceAuth, chain []*x509.Certificate, now time.Time) (devreg.StoredCredential, error, error) {
	var none devreg.StoredCredential
	switch {
	case d.DeviceTypeID == "":
		return none, refusedCertificate("no such device", nil), nil
	case !d.Enabled:
		return none, refusedCertificate("device or its batch is disabled", nil), nil
	}
	leaf := chain[0]
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		code := devcert.CodeExpired
		if now.Before(leaf.NotBefore) {
			code = devcert.CodeNotYetValid
		}
		return none, refusedCertificate("certificate is not valid now", &devcert.Error{Code: code,
			Message: fmt.Sprintf("valid from %s to %s", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))}), nil
	}
	fp := devcert.Fingerprint(leaf)
	pinned := false
	for _, c := range d.Credentials {
		if c.KeyID != devreg.CertificateKeyID {
			continue
		}
		pinned = true
		if bytes.Equal(c.Hash, fp[:]) {
			if !c.ValidAt(now) {
				return none, refusedCertificate("the device's credential for this certificate is disabled or outside its window", nil), nil
			}
			// A certificate registered by its fingerprint alone was taken on the word that it
			// chains to the type's CA and names the device; it is held to that word now.
			details, err := s.store.CertificateDetails(ctx, accountID, [][]byte{fp[:]})
			if err != nil {
				return none, nil, err
			}
			if _, whole := details[fp]; !whole {
				if refusal, err := s.checkTypeChain(ctx, accountID, deviceID, d, chain, now); refusal != nil || err != nil {
					return none, refusal, err
				}
			}
			return c, nil, nil
		}
	}
	if pinned {
		return none, refusedCertificate("device holds certificate credentials, and this certificate is none of them", nil), nil
	}
	refusal, err := s.checkTypeChain(ctx, accountID, deviceID, d, chain, now)
	return none, refusal, err
}

// checkTypeChain checks that chain verifies to one of the device type's trusted CAs now and that
// its leaf's ID field names deviceID: the refusal, if not.
func (s *Service) checkTypeChain(ctx context.Context, accountID, deviceID string, d devreg.DeviceAuth, chain []*x509.Certificate, now time.Time) (error, error) {
	leaf := chain[0]
	t, err := s.store.DeviceType(ctx, accountID, d.DeviceTypeID)
	if err != nil {
		return nil, err
	}
	trust, err := s.trustOf(ctx, accountID, t)
	if err != nil {
		return nil, err
	}
	if err := devcert.VerifyDevice(leaf, chain[1:], trust.cas, now); err != nil {
		return refusedCertificate("certificate does not verify against the device type's trusted CAs", err), nil
	}
	id, err := devcert.DeviceID(leaf, trust.field)
	if err != nil {
		return refusedCertificate("certificate carries no device ID", err), nil
	}
	if id != deviceID {
		return refusedCertificate(fmt.Sprintf("certificate's device ID is %q, not %q", id, deviceID), nil), nil
	}
	return nil, nil
}

// checkEntry checks an entry that registers a device by its certificate (PEM) or by its
// certificate's fingerprint alone, and returns the fingerprint, what the certificate said (for a
// PEM), or what is wrong.
func (t typeTrust) checkEntry(e devreg.DeviceEntry, now time.Time) (fp [32]byte, details *devreg.CertificateDetails, problem string) {
	if e.CertificateSHA256 != "" {
		if len(t.cas) == 0 {
			return fp, nil, "certificate_sha256 alone is accepted only for a device type with trusted CAs: a fingerprint alone is " +
				"only for certificates that chain to the type's CA; send the certificate (PEM) instead, or add the CA to the device type"
		}
		fp, err := devcert.ParseFingerprint(e.CertificateSHA256)
		if err != nil {
			return fp, nil, "certificate_sha256: " + err.Error()
		}
		return fp, nil, ""
	}
	cert, err := devcert.ParsePEM(e.Certificate)
	if err != nil {
		return fp, nil, "certificate: " + err.Error()
	}
	if problem := t.checkDeviceCertificate(cert, e.Intermediates, e.DeviceID, now); problem != "" {
		return fp, nil, "certificate: " + problem
	}
	d := certificateDetails(cert)
	return d.SHA256, &d, ""
}

// credentialKinds follows the kinds of credential a registration's entries carry, in order: all
// secrets or all certificates, each certificate on one entry only.
type credentialKinds struct {
	seen, certificates bool
	first              devreg.StagedEntry
	fingerprints       []certificateAt
}

// certificateAt is where a request lists a certificate.
type certificateAt struct {
	fp          [32]byte
	index, line int
	deviceID    string
}

// check records entry e, which registers a certificate if cert, and refuses it if the request's
// first entry registers the other kind.
func (k *credentialKinds) check(e devreg.StagedEntry, cert bool) (devreg.Problem, bool) {
	if !k.seen {
		k.seen, k.certificates, k.first = true, cert, e
	} else if cert != k.certificates {
		kind, firstKind := "a secret", "a certificate"
		if cert {
			kind, firstKind = firstKind, kind
		}
		return devreg.Problem{Index: e.Index, Line: e.Line, DeviceID: e.DeviceID, Message: fmt.Sprintf(
			"entry has %s, but the first entry (index %d) has %s: one request registers devices either by secret or by certificate; send two requests",
			kind, k.first.Index, firstKind)}, false
	}
	if cert {
		k.fingerprints = append(k.fingerprints, certificateAt{fp: [32]byte(e.Hashes), index: e.Index, line: e.Line, deviceID: e.DeviceID})
	}
	return devreg.Problem{}, true
}

// repeats lists the entries whose certificate an earlier entry had, in index order.
func (k *credentialKinds) repeats(sink func(devreg.Problem)) devreg.ProblemList {
	fps := k.fingerprints
	slices.SortFunc(fps, func(a, b certificateAt) int {
		return cmp.Or(bytes.Compare(a.fp[:], b.fp[:]), cmp.Compare(a.index, b.index))
	})
	var found []devreg.Problem
	for i := 1; i < len(fps); i++ {
		if fps[i].fp != fps[i-1].fp {
			continue
		}
		first := i - 1
		for first > 0 && fps[first-1].fp == fps[i].fp {
			first--
		}
		f := fps[first]
		msg := fmt.Sprintf("certificate is listed more than once; first at index %d", f.index)
		if f.line > 0 {
			msg += fmt.Sprintf(" (line %d)", f.line)
		}
		found = append(found, devreg.Problem{Index: fps[i].index, Line: fps[i].line, DeviceID: fps[i].deviceID,
			Message: msg + "; a certificate may belong to one device only", Kind: "certificate is listed more than once; a certificate may belong to one device only"})
	}
	slices.SortFunc(found, func(a, b devreg.Problem) int { return cmp.Compare(a.Index, b.Index) })
	l := devreg.ProblemList{Sink: sink}
	for _, p := range found {
		l.Add(p)
	}
	return l
}

// latest returns the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
