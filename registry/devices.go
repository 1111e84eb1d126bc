package registry

import (
	"context"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
)

// ListDevices returns a page of the caller's devices that match f, from f.After on, and the
// cursor of the next page (zero on the last page).
func (s *Service) ListDevices(ctx context.Context, f devreg.DeviceFilter) ([]devreg.Device, devreg.Cursor, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, devreg.Cursor{}, err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EBADREQUEST, "status must be enabled or disabled; it is %q", f.Status)
	}
	limit, err := pageSize(f.Limit)
	if err != nil {
		return nil, devreg.Cursor{}, err
	}
	if !f.Sort.Valid() {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EBADREQUEST, "sort must be id, newest, last_seen or left out (registration order); it is %q", f.Sort)
	}
	if (f.Prefix != "" || f.Contains != "") && f.Sort != devreg.SortRegistered && f.Sort != devreg.SortID {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EBADREQUEST, "a search by prefix or substring lists in device ID order; leave sort out or set it to id, not %q", f.Sort)
	}
	// Each order has its own kind of cursor; a cursor of another order is not one this listing
	// handed out.
	a := f.After
	var fits bool
	switch {
	case f.ByID():
		fits = a.Seq == 0 && a.SeenAt == 0 && (a.DeviceID == "" || credential.CheckDeviceID(a.DeviceID) == "")
	case f.Sort == devreg.SortLastSeen:
		fits = a.DeviceID == "" && (a.SeenAt != 0 || a.Seq == 0)
	default:
		fits = a.DeviceID == "" && a.SeenAt == 0
	}
	if !fits {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one this listing handed out; use next_cursor from the previous page with the same filters", f.After)
	}
	// Filters no device can match need no query (and the database need not see odd bytes).
	if f.DeviceTypeID != "" && !opaqueID(f.DeviceTypeID) || f.BatchID != "" && !opaqueID(f.BatchID) ||
		f.Prefix != "" && credential.CheckDeviceID(f.Prefix) != "" || f.Contains != "" && !idPart(f.Contains) {
		return []devreg.Device{}, devreg.Cursor{}, nil
	}
	f.Limit = limit + 1 // one more tells whether there is a next page
	devices, resume, err := s.listDevices(ctx, c, f)
	if err != nil {
		return nil, devreg.Cursor{}, err
	}
	if len(devices) <= limit {
		// A substring search that read its window without filling the page goes on from there.
		if resume != "" {
			return devices, devreg.Cursor{DeviceID: resume}, nil
		}
		return devices, devreg.Cursor{}, nil
	}
	devices = devices[:limit]
	last := devices[limit-1]
	switch {
	case f.ByID():
		return devices, devreg.Cursor{DeviceID: last.DeviceID}, nil
	case f.Sort == devreg.SortLastSeen:
		seen := int64(-1)
		if last.LastSeenAt != nil {
			seen = last.LastSeenAt.UnixMicro()
		}
		return devices, devreg.Cursor{SeenAt: seen, Seq: last.Seq}, nil
	}
	return devices, devreg.Cursor{Seq: last.Seq}, nil
}

// idPart reports whether s could be part of a device ID: 1 to 128 of its characters.
func idPart(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._:-", r)) {
			return false
		}
	}
	return s != ""
}

// CountDevices counts the caller's devices that match f, up to most: it answers most+1 when
// there are more, having read no more than that many. A substring search is not counted (its
// pages read a window of the devices each).
func (s *Service) CountDevices(ctx context.Context, f devreg.DeviceFilter, most int) (int, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return 0, err
	}
	if f.Status != "" && !f.Status.Valid() || f.Contains != "" {
		return 0, devreg.Errorf(devreg.EBADREQUEST, "this filter is not counted")
	}
	if f.DeviceTypeID != "" && !opaqueID(f.DeviceTypeID) || f.BatchID != "" && !opaqueID(f.BatchID) ||
		f.Prefix != "" && credential.CheckDeviceID(f.Prefix) != "" {
		return 0, nil
	}
	f, ok, err := s.scope(ctx, c, f)
	if err != nil || !ok {
		return 0, err
	}
	return s.store.CountDevices(ctx, c.AccountID, f, most)
}

// listDevices reads a page of devices for the caller (see scope), and for a substring search
// where its window ended (see the store's SearchDevices).
func (s *Service) listDevices(ctx context.Context, c devreg.Caller, f devreg.DeviceFilter) ([]devreg.Device, string, error) {
	f, ok, err := s.scope(ctx, c, f)
	if err != nil || !ok {
		return []devreg.Device{}, "", err
	}
	if f.Contains != "" {
		return s.store.SearchDevices(ctx, c.AccountID, f)
	}
	devices, err := s.store.ListDevices(ctx, c.AccountID, f)
	return devices, "", err
}

// scope limits f to the types the caller reaches: for a key restricted to device types, the
// types it reaches, in one query whose cost does not grow with their number (see the store's
// ListDevices). ok is false when no device of the caller can match.
func (s *Service) scope(ctx context.Context, c devreg.Caller, f devreg.DeviceFilter) (_ devreg.DeviceFilter, ok bool, _ error) {
	f.DeviceTypeIDs = c.DeviceTypeIDs
	if c.DeviceTypeIDs != nil && f.BatchID != "" {
		b, err := s.reachBatch(ctx, c, f.BatchID)
		if devreg.ErrorCode(err) == devreg.ENOTFOUND {
			return f, false, nil
		} else if err != nil {
			return f, false, err
		}
		// A batch's devices are all of its type, which the key reaches; a batch of a type it
		// does not reach is not found, without walking the batch's devices to find none.
		f.DeviceTypeIDs = []string{b.DeviceTypeID}
	}
	return f, true, nil
}

// Device returns one of the caller's devices.
func (s *Service) Device(ctx context.Context, deviceID string) (devreg.Device, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return devreg.Device{}, err
	}
	return s.reachDevice(ctx, c, deviceID)
}

// reachDevice returns one of the caller's devices, if its key reaches the device's type: any
// other is not found.
func (s *Service) reachDevice(ctx context.Context, c devreg.Caller, deviceID string) (devreg.Device, error) {
	if credential.CheckDeviceID(deviceID) != "" {
		return devreg.Device{}, notFound("device", deviceID)
	}
	d, err := s.store.Device(ctx, c.AccountID, deviceID)
	if err == nil && !c.Reaches(d.DeviceTypeID) {
		return devreg.Device{}, notFound("device", deviceID)
	}
	return d, err
}

// reachBatch returns one of the caller's batches, if its key reaches the batch's type.
func (s *Service) reachBatch(ctx context.Context, c devreg.Caller, id string) (devreg.Batch, error) {
	if !opaqueID(id) {
		return devreg.Batch{}, notFound("batch", id)
	}
	b, err := s.store.Batch(ctx, c.AccountID, id)
	if err == nil && !c.Reaches(b.DeviceTypeID) {
		return devreg.Batch{}, notFound("batch", id)
	}
	return b, err
}

// SetDeviceStatus enables or disables one device and returns it.
func (s *Service) SetDeviceStatus(ctx context.Context, deviceID string, status devreg.DeviceStatus) (devreg.Device, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Device{}, err
	}
	if !status.Valid() {
		return devreg.Device{}, devreg.Errorf(devreg.EINVALID, "status must be enabled or disabled; it is %q", status)
	}
	d, err := s.reachDevice(ctx, c, deviceID)
	if err != nil || d.Status == status {
		return d, err // nothing to change, nothing to record
	}
	audit := s.auditEntry(ctx, actorOf(c), "device.update", devreg.AuditObject{Type: "device", ID: deviceID},
		change(map[string]any{"status": string(d.Status)}, map[string]any{"status": string(status)}))
	audit.DeviceTypeID = d.DeviceTypeID
	ctx = devreg.NewContextWithAudit(ctx, audit)
	defer s.forgetDevices()
	if err := s.store.SetDeviceStatus(ctx, c.AccountID, deviceID, status); err != nil {
		return devreg.Device{}, err
	}
	return s.store.Device(ctx, c.AccountID, deviceID)
}

// DeleteDevice removes one device; its ID may then be registered anew.
func (s *Service) DeleteDevice(ctx context.Context, deviceID string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	d, err := s.reachDevice(ctx, c, deviceID)
	if err != nil {
		return err
	}
	ctx = s.audited(ctx, actorOf(c), "device.delete", devreg.AuditObject{Type: "device", ID: deviceID},
		map[string]any{"device_type_id": d.DeviceTypeID, "batch_id": d.BatchID})
	defer s.forgetDevices()
	return s.store.DeleteDevice(ctx, c.AccountID, deviceID)
}

// ListBatches returns a page of the caller's batches that match f, newest first, from f.After
// on, and the cursor of the next page (zero on the last page).
func (s *Service) ListBatches(ctx context.Context, f devreg.BatchFilter) ([]devreg.Batch, devreg.Cursor, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, devreg.Cursor{}, err
	}
	if f.After.DeviceID != "" {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one the batch listing handed out; use next_cursor from the previous page", f.After)
	}
	if f.DeviceTypeID != "" && !opaqueID(f.DeviceTypeID) {
		return []devreg.Batch{}, devreg.Cursor{}, nil
	}
	limit, err := pageSize(f.Limit)
	if err != nil {
		return nil, devreg.Cursor{}, err
	}
	f.Limit = limit + 1               // one more tells whether there is a next page
	f.DeviceTypeIDs = c.DeviceTypeIDs // only the types the key reaches
	batches, seqs, err := s.store.ListBatches(ctx, c.AccountID, f)
	if err != nil || len(batches) <= limit {
		return batches, devreg.Cursor{}, err
	}
	return batches[:limit], devreg.Cursor{Seq: seqs[limit-1]}, nil
}

// Batch returns one of the caller's batches.
func (s *Service) Batch(ctx context.Context, id string) (devreg.Batch, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return devreg.Batch{}, err
	}
	return s.reachBatch(ctx, c, id)
}

// SetBatchStatus enables or disables a whole batch: while it is disabled none of its devices can
// authenticate, whatever their own status.
//
// An administrator may change any batch; a console user who may register (the operations role)
// only the batches they created.
func (s *Service) SetBatchStatus(ctx context.Context, id string, status devreg.BatchStatus) (devreg.Batch, error) {
	c, err := authorizeBatchChange(ctx)
	if err != nil {
		return devreg.Batch{}, err
	}
	if !status.Valid() {
		return devreg.Batch{}, devreg.Errorf(devreg.EINVALID, "status must be enabled or disabled; it is %q", status)
	}
	b, err := s.reachBatch(ctx, c, id)
	if err != nil {
		return b, err
	}
	if err := mayChangeBatch(c, b, "disable or enable"); err != nil {
		return devreg.Batch{}, err
	}
	if b.Status == status {
		return b, nil // nothing to change, nothing to record
	}
	audit := s.auditEntry(ctx, actorOf(c), "batch.update", devreg.AuditObject{Type: "batch", ID: id},
		change(map[string]any{"status": string(b.Status)}, map[string]any{"status": string(status)}))
	audit.DeviceTypeID = b.DeviceTypeID
	ctx = devreg.NewContextWithAudit(ctx, audit)
	defer s.forgetDevices()
	if err := s.store.SetBatchStatus(ctx, c.AccountID, id, status); err != nil {
		return devreg.Batch{}, err
	}
	return s.store.Batch(ctx, c.AccountID, id)
}

// DeleteBatch deletes one of the caller's batches and all of its devices, in one transaction, and
// returns how many devices went: the undo of a mistaken lot. A disabled batch may be deleted.
// Who may do it is who may disable it (authorizeBatchChange, mayChangeBatch).
func (s *Service) DeleteBatch(ctx context.Context, id string) (int64, error) {
	c, err := authorizeBatchChange(ctx)
	if err != nil {
		return 0, err
	}
	b, err := s.reachBatch(ctx, c, id)
	if err != nil {
		return 0, err
	}
	if err := mayChangeBatch(c, b, "delete"); err != nil {
		return 0, err
	}
	entry := s.auditEntry(ctx, actorOf(c), "batch.delete", devreg.AuditObject{Type: "batch", ID: b.ID}, nil)
	defer s.forgetDevices()
	return s.store.DeleteBatch(ctx, c.AccountID, b.ID, s.now(), func(deleted int64) *devreg.AuditEntry {
		entry.Details = map[string]any{"device_type_id": b.DeviceTypeID, "deleted": deleted, "name": b.Name, "filename": b.Filename,
			"created_by": b.CreatedBy, "created_at": b.CreatedAt.Format(time.RFC3339Nano), "status": string(b.Status)}
		return entry
	})
}

// authorizeBatchChange returns the caller if it may disable, enable or delete some batches: an API
// key needs the admin scope, as it always has (a factory station's register key must not undo
// lots, its own included); a console user who may register (the operations role) may change the
// lots they created (mayChangeBatch says which).
func authorizeBatchChange(ctx context.Context) (devreg.Caller, error) {
	if c, ok := devreg.CallerFromContext(ctx); ok && c.UserID != "" {
		return authorize(ctx, devreg.ScopeRegister)
	}
	return authorize(ctx, devreg.ScopeAdmin)
}

// MayChangeBatch says whether the caller may disable, enable or delete batch b, for a page that
// offers only what its user may do (the service refuses the rest regardless).
func MayChangeBatch(ctx context.Context, b devreg.Batch) bool {
	c, err := authorizeBatchChange(ctx)
	return err == nil && mayChangeBatch(c, b, "change") == nil
}

// mayChangeBatch refuses a console user who may not disable, enable or delete batch b (what says
// which): an administrator may change any lot, a user of the operations role only those they
// created themselves. Batches made before creators were recorded, or by devices, are an
// administrator's alone.
func mayChangeBatch(c devreg.Caller, b devreg.Batch, what string) error {
	if c.Scope.Allows(devreg.ScopeAdmin) || b.CreatorType == devreg.ActorUser && b.CreatorID == c.UserID && c.UserID != "" {
		return nil
	}
	return devreg.Errorf(devreg.EFORBIDDEN, "you may %s only the batches you registered yourself; batch %s was registered by %s: ask an administrator",
		what, b.ID, b.CreatedBy)
}
