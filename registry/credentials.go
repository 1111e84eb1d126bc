package registry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"devreg"
	"devreg/credential"
)

// GeneratedSecretLength is the length of a secret the server generates (letters and digits, about
// 190 bits), unless the device type demands more.
const GeneratedSecretLength = 32

// ListCredentials returns one of the caller's devices' credentials, oldest first.
func (s *Service) ListCredentials(ctx context.Context, deviceID string) ([]devreg.Credential, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, err
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return nil, err
	}
	list := make([]devreg.Credential, len(d.Credentials))
	for i, sc := range d.Credentials {
		list[i] = sc.Credential
	}
	return list, s.addCertificateDetails(ctx, c.AccountID, list, d.Credentials)
}

// deviceCredentials reads a device of the caller's account with its credentials: not found unless
// the caller's key reaches its type.
func (s *Service) deviceCredentials(ctx context.Context, c devreg.Caller, deviceID string) (devreg.DeviceAuth, error) {
	if credential.CheckDeviceID(deviceID) != "" {
		return devreg.DeviceAuth{}, notFound("device", deviceID)
	}
	d, err := s.store.DeviceAuth(ctx, c.AccountID, deviceID)
	if err == nil && !c.Reaches(d.DeviceTypeID) {
		return devreg.DeviceAuth{}, notFound("device", deviceID)
	}
	return d, err
}

// AddCredential gives one of the caller's devices another credential: the secret given, which
// must meet the device type's policy, or one the server generates (returned this once, in
// Secret). The device's expired credentials are deleted first; a sixth is refused.
func (s *Service) AddCredential(ctx context.Context, deviceID string, nc devreg.NewCredential) (devreg.Credential, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Credential{}, err
	}
	if nc.Certificate != "" {
		return s.addCertificate(ctx, c, deviceID, nc)
	}
	switch {
	case nc.Generate && nc.Secret != "":
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "send either secret or generate, not both")
	case !nc.Generate && nc.Secret == "":
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "secret is required (or send \"generate\": true to have the server make one)")
	}
	if err := checkWindow(nc.NotBefore, nc.NotAfter); err != nil {
		return devreg.Credential{}, err
	}
	if nc.NotAfter != nil && !nc.NotAfter.After(s.now()) {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "not_after (%s) has passed; a credential must be valid for some time", nc.NotAfter.Format(time.RFC3339))
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return devreg.Credential{}, err
	}
	t, err := s.store.DeviceType(ctx, c.AccountID, d.DeviceTypeID)
	if err != nil {
		return devreg.Credential{}, err
	}
	secret := nc.Secret
	if nc.Generate {
		secret = credential.RandomString(max(GeneratedSecretLength, t.MinSecretLength))
	} else if problem := credential.CheckSecret(secret, t.MinSecretLength); problem != "" {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "%s", problem)
	}
	source := devreg.CredentialFromAPI
	if c.Source == devreg.SourceConsole {
		source = devreg.CredentialFromConsole
	}
	now := s.now()
	current := s.keys.Current()
	added := devreg.StoredCredential{
		Credential: devreg.Credential{ID: credential.RandomID("cr", 16), CreatedAt: now, NotBefore: nc.NotBefore, NotAfter: nc.NotAfter,
			Status: devreg.StatusEnabled, Source: source, Kind: devreg.CredentialSecret},
		KeyID: current.ID, Hash: credential.Hash(current, c.AccountID, deviceID, secret),
	}
	audit := s.auditEntry(ctx, actorOf(c), "credential.create", devreg.AuditObject{Type: "device", ID: deviceID}, credFields(added.Credential))
	audit.DeviceTypeID = d.DeviceTypeID
	err = s.store.ChangeCredentials(devreg.NewContextWithAudit(ctx, audit), c.AccountID, deviceID, func(d devreg.DeviceAuth) (ch devreg.CredentialChange, err error) {
		defer func() { audit.Details["expired_deleted"] = ch.Delete }()
		return addingCredential(devreg.CredentialChange{Add: &added}, d, deviceID, now, func(old devreg.StoredCredential) error {
			if s.keys.Verify(old.KeyID, old.Hash, c.AccountID, deviceID, secret) {
				return devreg.Errorf(devreg.ECONFLICT, "device %s already has a credential with this secret (%s); choose another secret, or let the server generate one", deviceID, old.ID)
			}
			return nil
		})
	})
	if err != nil {
		return devreg.Credential{}, err
	}
	out := added.Credential
	if nc.Generate {
		out.Secret = secret
	}
	return out, nil
}

// checkWindow refuses a validity window that ends before it starts.
func checkWindow(notBefore, notAfter *time.Time) error {
	if notBefore != nil && notAfter != nil && !notBefore.Before(*notAfter) {
		return devreg.Errorf(devreg.EINVALID, "not_before (%s) must be earlier than not_after (%s)",
			notBefore.Format(time.RFC3339), notAfter.Format(time.RFC3339))
	}
	return nil
}

// UpdateCredential enables or disables a credential of one of the caller's devices, or changes its
// window. A change that would leave the device without a credential valid now is refused:
// disable the device instead.
func (s *Service) UpdateCredential(ctx context.Context, deviceID, credID string, u devreg.CredentialUpdate) (devreg.Credential, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Credential{}, err
	}
	if u.Status != nil && !u.Status.Valid() {
		return devreg.Credential{}, devreg.Errorf(devreg.EINVALID, "status must be enabled or disabled; it is %q", *u.Status)
	}
	if credential.CheckDeviceID(deviceID) != "" {
		return devreg.Credential{}, notFound("device", deviceID)
	}
	if !opaqueID(credID) {
		return devreg.Credential{}, notFound("credential", credID)
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return devreg.Credential{}, err
	}
	var updated devreg.StoredCredential
	now := s.now()
	audit := s.auditEntry(ctx, actorOf(c), "credential.update", devreg.AuditObject{Type: "device", ID: deviceID}, nil)
	audit.DeviceTypeID = d.DeviceTypeID
	err = s.store.ChangeCredentials(devreg.NewContextWithAudit(ctx, audit), c.AccountID, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		cur, ok := d.Credential(credID)
		if !ok {
			return devreg.CredentialChange{}, devreg.Errorf(devreg.ENOTFOUND, "device %s has no credential %s", deviceID, credID)
		}
		before := credFields(cur.Credential)
		if u.Status != nil {
			cur.Status = *u.Status
		}
		if u.SetNotBefore {
			cur.NotBefore = u.NotBefore
		}
		if u.SetNotAfter {
			cur.NotAfter = u.NotAfter
		}
		if err := checkWindow(cur.NotBefore, cur.NotAfter); err != nil {
			return devreg.CredentialChange{}, err
		}
		if !cur.ValidAt(now) && leavesNoValid(d, credID, now) {
			return devreg.CredentialChange{}, lastValid(credID, deviceID, "disable it or end its window")
		}
		updated = cur
		audit.Details = change(before, credFields(cur.Credential))
		audit.Details["credential_id"] = credID
		return devreg.CredentialChange{Update: []devreg.StoredCredential{cur}}, nil
	})
	return updated.Credential, err
}

// DeleteCredential deletes a credential of one of the caller's devices; tokens issued for it stop
// working. A device's last credential, or the only one valid now, cannot be deleted: disable the
// device instead.
func (s *Service) DeleteCredential(ctx context.Context, deviceID, credID string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	if credential.CheckDeviceID(deviceID) != "" {
		return notFound("device", deviceID)
	}
	if !opaqueID(credID) {
		return notFound("credential", credID)
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return err
	}
	now := s.now()
	audit := s.auditEntry(ctx, actorOf(c), "credential.delete", devreg.AuditObject{Type: "device", ID: deviceID}, map[string]any{"credential_id": credID})
	audit.DeviceTypeID = d.DeviceTypeID
	ctx = devreg.NewContextWithAudit(ctx, audit)
	return s.store.ChangeCredentials(ctx, c.AccountID, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		cur, ok := d.Credential(credID)
		if !ok {
			return devreg.CredentialChange{}, devreg.Errorf(devreg.ENOTFOUND, "device %s has no credential %s", deviceID, credID)
		}
		if len(d.Credentials) == 1 || leavesNoValid(d, credID, now) {
			return devreg.CredentialChange{}, lastValid(cur.ID, deviceID, "delete it")
		}
		return devreg.CredentialChange{Delete: []string{credID}}, nil
	})
}

// leavesNoValid reports whether the device has a credential valid at now that lets it in, and
// none but credID: changing that one so that it no longer does would lock the device out.
func leavesNoValid(d devreg.DeviceAuth, credID string, now time.Time) bool {
	valid := false
	for _, c := range d.Credentials {
		if c.ValidAt(now) {
			if c.ID != credID {
				return false
			}
			valid = true
		}
	}
	return valid
}

// lastValid is the refusal of a change that would leave a device without a valid credential.
func lastValid(credID, deviceID, change string) error {
	return devreg.Errorf(devreg.ECONFLICT, "%s is the only credential that lets device %s in now, so you cannot %s; "+
		"add another first, or disable the device to stop it from authenticating", credID, deviceID, change)
}

// RotationWindow is the window of the rotation limit: a device may rotate its secret itself its
// type's MaxRotationsPerHour times within an hour of the first rotation of the window.
const RotationWindow = time.Hour

// ErrTooManyRotations is the cause of the refusal of a rotation beyond the device type's limit.
var ErrTooManyRotations = errors.New("too many rotations")

// RotateCredential replaces a device's secret at the device's request. The device authenticates
// exactly as at the token endpoint (its failures count toward the same throttle), with its
// current secret: never with a token, which other services see. The server generates the new
// secret and keeps only its hash. The credential the device authenticated with works for the
// device type's rotation grace more (never longer than it would have), so that a device that lost
// the answer can log in with it and rotate again; the credentials earlier rotations made and the
// device never used are then deleted, as are expired ones, so repeated calls cannot stack them.
//
// A device may rotate its type's MaxRotationsPerHour times in RotationWindow; beyond that the
// answer is ERATELIMITED (its cause ErrTooManyRotations) with the time left in the window. Each
// rotation is counted in the database, in one statement, before it is made, and only once the
// device has authenticated, so that strangers cannot spend a device's rotations; a rotation that
// is refused or fails gives its count back.
func (s *Service) RotateCredential(ctx context.Context, accountID, deviceID, secret string) (devreg.Rotation, error) {
	dev, err := s.AuthenticateDevice(ctx, accountID, deviceID, secret)
	if err != nil {
		return devreg.Rotation{}, err
	}
	return s.RotateOwnCredential(ctx, dev)
}

// RotateOwnCredential is RotateCredential for a device that has authenticated with its secret
// already (AuthenticateDevice): it rotates away from the credential dev used. A device that
// presented a token is refused with ErrInvalidClient.
func (s *Service) RotateOwnCredential(ctx context.Context, dev AuthenticatedDevice) (devreg.Rotation, error) {
	if dev.Token != nil || dev.CredentialID == "" {
		return devreg.Rotation{}, ErrInvalidClient
	}
	accountID, deviceID := dev.AccountID, dev.DeviceID
	t, err := s.store.DeviceType(ctx, accountID, dev.DeviceTypeID)
	if err != nil {
		return devreg.Rotation{}, err
	}
	now := s.now()
	key := "rotate:" + throttleKey(accountID, deviceID)
	// Counted even if the client hangs up now, and given back the same way, so that the count
	// is exactly the rotations made and those in flight.
	rotations, since, err := s.store.ReserveAttempt(context.WithoutCancel(ctx), key, now, RotationWindow)
	if err != nil {
		return devreg.Rotation{}, err
	}
	if limit := t.RotationLimit(); rotations > limit {
		wait := min(since.Add(RotationWindow).Sub(now), RotationWindow)
		return devreg.Rotation{}, s.unchecked(ctx, key, since, &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait, Err: ErrTooManyRotations,
			Message: fmt.Sprintf("device %s has rotated its secret %d times within the hour, the most its device type allows (max_rotations_per_hour); retry in %s",
				deviceID, limit, max(wait.Round(time.Second), time.Second))})
	}
	rot, err := s.rotate(ctx, accountID, deviceID, t, dev.CredentialID, now)
	if err != nil {
		return devreg.Rotation{}, s.unchecked(ctx, key, since, err)
	}
	return rot, nil
}

// rotate makes a device's rotation away from its credential usedID, once it has been counted.
func (s *Service) rotate(ctx context.Context, accountID, deviceID string, t devreg.DeviceType, usedID string, now time.Time) (devreg.Rotation, error) {
	newSecret := credential.RandomString(max(GeneratedSecretLength, t.MinSecretLength))
	current := s.keys.Current()
	added := devreg.StoredCredential{
		Credential: devreg.Credential{ID: credential.RandomID("cr", 16), CreatedAt: now, Status: devreg.StatusEnabled, Source: devreg.CredentialFromDevice,
			Kind: devreg.CredentialSecret},
		KeyID: current.ID, Hash: credential.Hash(current, accountID, deviceID, newSecret),
	}
	rot := devreg.Rotation{CredentialID: added.ID, Secret: newSecret, PreviousCredentialID: usedID}
	audit := s.auditEntry(ctx, devreg.AuditActor{Type: devreg.ActorDevice, ID: deviceID, Name: deviceID}, "credential.rotate",
		devreg.AuditObject{Type: "device", ID: deviceID}, nil)
	audit.DeviceTypeID = t.ID
	err := s.store.ChangeCredentials(devreg.NewContextWithAudit(ctx, audit), accountID, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		cur, ok := d.Credential(usedID)
		if !ok || !cur.ValidAt(now) || !d.Enabled { // changed since it was checked
			return devreg.CredentialChange{}, ErrInvalidClient
		}
		for _, c := range d.Credentials {
			// The device has rotated away from this secret already and uses the secret it got:
			// whoever rotates from the old one now is not the device (the factory secret leaked),
			// and must not get a credential of the device's own, which a replace would keep. From
			// a secret derived from a group key any used secret of the device's own will do,
			// whenever it was made: a first connection that enrols and rotates at once makes it
			// in the same instant, and a server whose clock is behind the one that enrolled the
			// device makes it "before".
			derived := cur.Source == devreg.CredentialFromEnrollment
			if c.ID != cur.ID && c.Source == devreg.CredentialFromDevice && c.LastUsedAt != nil && (derived || c.CreatedAt.After(cur.CreatedAt)) {
				return devreg.CredentialChange{}, ErrInvalidClient
			}
		}
		ch := devreg.CredentialChange{Add: &added}
		for _, c := range d.Credentials {
			if c.ID != cur.ID && (c.ExpiredAt(now) || c.Source == devreg.CredentialFromDevice && c.LastUsedAt == nil) {
				ch.Delete = append(ch.Delete, c.ID)
			}
		}
		if n := len(d.Credentials) - len(ch.Delete); n >= devreg.MaxCredentials {
			return ch, devreg.Errorf(devreg.ECONFLICT, "the device has %d credentials, the most a device may have; an administrator must delete one first", n)
		}
		end := now.Add(t.RotationGrace())
		if cur.NotAfter != nil && cur.NotAfter.Before(end) {
			end = *cur.NotAfter
		}
		cur.NotAfter, rot.PreviousNotAfter = &end, end
		ch.Update = []devreg.StoredCredential{cur}
		// previous_source "registration" marks a factory secret's rotation: an administrator who
		// did not expect one (the device was still in the warehouse) knows the secret leaked.
		audit.Details = map[string]any{"credential_id": added.ID, "previous_credential_id": cur.ID,
			"previous_source": string(cur.Source), "previous_not_after": end.Format(time.RFC3339Nano), "deleted": ch.Delete}
		return ch, nil
	})
	if err != nil {
		return devreg.Rotation{}, err
	}
	return rot, nil
}

// credFields are a credential's fields as its audit entries show them (never the secret).
func credFields(c devreg.Credential) map[string]any {
	at := func(t *time.Time) any {
		if t == nil {
			return nil
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	f := map[string]any{"credential_id": c.ID, "status": string(c.Status), "not_before": at(c.NotBefore), "not_after": at(c.NotAfter),
		"source": string(c.Source)}
	if c.Kind != "" {
		f["kind"] = string(c.Kind)
	}
	if c.SHA256 != "" {
		f["sha256"] = c.SHA256
	}
	return f
}

// checkRevokeSource refuses to revoke credentials of any source but the device's own: those a
// leaked factory secret lets a stranger make, and the only ones revoked together.
func checkRevokeSource(source devreg.CredentialSource) error {
	switch source {
	case devreg.CredentialFromDevice:
		return nil
	case "":
		return devreg.Errorf(devreg.EBADREQUEST, "say which credentials to revoke: source=device (the credentials devices made themselves by rotating)")
	}
	return devreg.Errorf(devreg.EBADREQUEST, "source must be device (the credentials devices made themselves); it is %q. Delete other credentials one at a time", source)
}

// errNoneToRevoke ends a revocation that finds nothing to revoke, which writes nothing.
var errNoneToRevoke = errors.New("no credentials of that source")

// lockedOutAdvice says what an administrator can do about a device that only credentials it made
// itself let in.
const lockedOutAdvice = "register its factory secret again with on_conflict=replace&credentials=reset, " +
	"or add a credential first, or disable the device"

// RevokeCredentials deletes the credentials one of the caller's devices made itself (source
// device), such as one that a holder of its leaked factory secret rotated to, and returns how
// many. Tokens issued for them stop working. If no other credential would let the device in now,
// nothing is deleted and the answer is a conflict that says what to do.
func (s *Service) RevokeCredentials(ctx context.Context, deviceID string, source devreg.CredentialSource) (int, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return 0, err
	}
	if err := checkRevokeSource(source); err != nil {
		return 0, err
	}
	d, err := s.deviceCredentials(ctx, c, deviceID)
	if err != nil {
		return 0, err
	}
	now := s.now()
	var deleted []string
	audit := s.auditEntry(ctx, actorOf(c), "credentials.revoke", devreg.AuditObject{Type: "device", ID: deviceID}, nil)
	audit.DeviceTypeID = d.DeviceTypeID
	err = s.store.ChangeCredentials(devreg.NewContextWithAudit(ctx, audit), c.AccountID, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		deleted = nil
		valid := false
		for _, cr := range d.Credentials {
			if cr.Source == source {
				deleted = append(deleted, cr.ID)
			} else if cr.ValidAt(now) {
				valid = true
			}
		}
		switch {
		case len(deleted) == 0:
			return devreg.CredentialChange{}, errNoneToRevoke
		case !valid:
			return devreg.CredentialChange{}, devreg.Errorf(devreg.ECONFLICT, "device %s has no credential but those it made itself that lets it in now, "+
				"so revoking them would lock it out; %s", deviceID, lockedOutAdvice)
		}
		audit.Details = map[string]any{"source": string(source), "deleted": len(deleted), "credential_ids": deleted}
		return devreg.CredentialChange{Delete: deleted}, nil
	})
	if errors.Is(err, errNoneToRevoke) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return len(deleted), nil
}

// RevokeBatchCredentials deletes the credentials the devices of one of the caller's batches made
// themselves (source device), in one transaction: what to do when a lot's factory secrets leaked
// and strangers rotated them first. A device that no other credential would let in now is left as
// it was, counted and listed with the reason (the first MaxProblems).
func (s *Service) RevokeBatchCredentials(ctx context.Context, batchID string, source devreg.CredentialSource) (devreg.BatchRevocation, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.BatchRevocation{}, err
	}
	if err := checkRevokeSource(source); err != nil {
		return devreg.BatchRevocation{}, err
	}
	b, err := s.reachBatch(ctx, c, batchID)
	if err != nil {
		return devreg.BatchRevocation{}, err
	}
	entry := s.auditEntry(ctx, actorOf(c), "credentials.revoke", devreg.AuditObject{Type: "batch", ID: b.ID}, nil)
	entry.DeviceTypeID = b.DeviceTypeID
	r, left, err := s.store.RevokeBatchCredentials(ctx, c.AccountID, b.DeviceTypeID, b.ID, s.now(), func(r devreg.BatchRevocation) *devreg.AuditEntry {
		entry.Details = map[string]any{"source": string(source), "devices": r.Devices, "deleted": r.Deleted,
			"devices_changed": r.DevicesChanged, "devices_left": r.DevicesLeft}
		return entry
	})
	if err != nil {
		return devreg.BatchRevocation{}, err
	}
	for _, l := range left {
		why := "it holds no credential but those it made itself"
		if l.Others > 0 {
			why = "none of its other credentials lets it in now (disabled, expired or not yet valid)"
		}
		r.Problems = append(r.Problems, devreg.Problem{Index: int(l.Index), DeviceID: l.DeviceID,
			Message: fmt.Sprintf("left as it was: %s, so revoking them would lock it out; %s", why, lockedOutAdvice)})
	}
	if r.DevicesLeft > 0 {
		r.ProblemCount = r.DevicesLeft
	}
	return r, nil
}

// addingCredential completes ch, which adds a credential to device d: the device's expired
// credentials go, a credential that duplicate refuses (the same secret or certificate again) is a
// conflict, and so is a device that would still hold MaxCredentials.
func addingCredential(ch devreg.CredentialChange, d devreg.DeviceAuth, deviceID string, now time.Time, duplicate func(devreg.StoredCredential) error) (devreg.CredentialChange, error) {
	for _, old := range d.Credentials {
		if old.ExpiredAt(now) {
			ch.Delete = append(ch.Delete, old.ID)
		} else if err := duplicate(old); err != nil {
			return ch, err
		}
	}
	if n := len(d.Credentials) - len(ch.Delete); n >= devreg.MaxCredentials {
		return ch, devreg.Errorf(devreg.ECONFLICT, "device %s has %d credentials, the most a device may have; delete one first", deviceID, n)
	}
	return ch, nil
}
