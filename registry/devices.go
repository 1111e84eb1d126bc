package registry

import (
	"context"

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
	// A prefix search pages in device ID order, any other listing in registration order; a
	// cursor of the other order is not one this listing handed out.
	if f.Prefix != "" && (f.After.Seq != 0 || f.After.DeviceID != "" && credential.CheckDeviceID(f.After.DeviceID) != "") ||
		f.Prefix == "" && f.After.DeviceID != "" {
		return nil, devreg.Cursor{}, devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one this listing handed out; use next_cursor from the previous page with the same filters", f.After)
	}
	// Filters no device can match need no query (and the database need not see odd bytes).
	if f.DeviceTypeID != "" && !opaqueID(f.DeviceTypeID) || f.BatchID != "" && !opaqueID(f.BatchID) ||
		f.Prefix != "" && credential.CheckDeviceID(f.Prefix) != "" {
		return []devreg.Device{}, devreg.Cursor{}, nil
	}
	f.Limit = limit + 1 // one more tells whether there is a next page
	devices, err := s.listDevices(ctx, c, f)
	if err != nil || len(devices) <= limit {
		return devices, devreg.Cursor{}, err
	}
	devices = devices[:limit]
	last := devices[limit-1]
	if f.Prefix != "" {
		return devices, devreg.Cursor{DeviceID: last.DeviceID}, nil
	}
	return devices, devreg.Cursor{Seq: last.Seq}, nil
}

// listDevices reads a page of devices for the caller: for a key restricted to device types, of
// the types it reaches, in one query whose cost does not grow with their number (see the store's
// ListDevices).
func (s *Service) listDevices(ctx context.Context, c devreg.Caller, f devreg.DeviceFilter) ([]devreg.Device, error) {
	f.DeviceTypeIDs = c.DeviceTypeIDs
	if c.DeviceTypeIDs != nil && f.BatchID != "" {
		b, err := s.reachBatch(ctx, c, f.BatchID)
		if devreg.ErrorCode(err) == devreg.ENOTFOUND {
			return []devreg.Device{}, nil
		} else if err != nil {
			return nil, err
		}
		// A batch's devices are all of its type, which the key reaches; a batch of a type it
		// does not reach is not found, without walking the batch's devices to find none.
		f.DeviceTypeIDs = []string{b.DeviceTypeID}
	}
	return s.store.ListDevices(ctx, c.AccountID, f)
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
	ctx = s.audited(ctx, actorOf(c), "device.update", devreg.AuditObject{Type: "device", ID: deviceID},
		change(map[string]any{"status": string(d.Status)}, map[string]any{"status": string(status)}))
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
func (s *Service) SetBatchStatus(ctx context.Context, id string, status devreg.BatchStatus) (devreg.Batch, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.Batch{}, err
	}
	if !status.Valid() {
		return devreg.Batch{}, devreg.Errorf(devreg.EINVALID, "status must be enabled or disabled; it is %q", status)
	}
	b, err := s.reachBatch(ctx, c, id)
	if err != nil || b.Status == status {
		return b, err // nothing to change, nothing to record
	}
	ctx = s.audited(ctx, actorOf(c), "batch.update", devreg.AuditObject{Type: "batch", ID: id},
		change(map[string]any{"status": string(b.Status)}, map[string]any{"status": string(status)}))
	if err := s.store.SetBatchStatus(ctx, c.AccountID, id, status); err != nil {
		return devreg.Batch{}, err
	}
	return s.store.Batch(ctx, c.AccountID, id)
}
