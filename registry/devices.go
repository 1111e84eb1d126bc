package registry

import (
	"context"
	"strconv"
	"strings"

	"devreg"
	"devreg/credential"
)

// ListDevices returns a page of the caller's devices that match f, and the cursor of the next
// page ("" on the last page). f.After is taken as a cursor from an earlier page.
func (s *Service) ListDevices(ctx context.Context, f devreg.DeviceFilter) ([]devreg.Device, string, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, "", err
	}
	if f.Status != "" && !f.Status.Valid() {
		return nil, "", devreg.Errorf(devreg.EBADREQUEST, "status must be enabled or disabled; it is %q", f.Status)
	}
	limit, err := pageSize(f.Limit)
	if err != nil {
		return nil, "", err
	}
	if f.After != "" {
		if err := readDeviceCursor(&f); err != nil {
			return nil, "", err
		}
	}
	// Filters no device can match need no query (and the database need not see odd bytes).
	if f.DeviceTypeID != "" && !opaqueID(f.DeviceTypeID) || f.BatchID != "" && !opaqueID(f.BatchID) ||
		f.Prefix != "" && credential.CheckDeviceID(f.Prefix) != "" {
		return []devreg.Device{}, "", nil
	}
	f.Limit = limit + 1 // one more tells whether there is a next page
	devices, err := s.store.ListDevices(ctx, c.AccountID, f)
	if err != nil || len(devices) <= limit {
		return devices, "", err
	}
	devices = devices[:limit]
	last := devices[limit-1]
	if f.Prefix != "" {
		return devices, encodeCursor("d" + last.DeviceID), nil
	}
	return devices, encodeCursor("s" + strconv.FormatInt(last.Seq, 10)), nil
}

// readDeviceCursor sets the keyset position of f from its cursor: "s" and a registration
// sequence number, or "d" and a device ID for prefix searches.
func readDeviceCursor(f *devreg.DeviceFilter) error {
	bad := devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one this listing handed out; use next_cursor from the previous page with the same filters", f.After)
	pos, err := decodeCursor(f.After)
	if err != nil {
		return err
	}
	switch {
	case f.Prefix != "" && strings.HasPrefix(pos, "d") && credential.CheckDeviceID(pos[1:]) == "":
		f.AfterID = pos[1:]
	case f.Prefix == "" && strings.HasPrefix(pos, "s"):
		if f.AfterSeq, err = strconv.ParseInt(pos[1:], 10, 64); err != nil || f.AfterSeq < 1 {
			return bad
		}
	default:
		return bad
	}
	return nil
}

// Device returns one of the caller's devices.
func (s *Service) Device(ctx context.Context, deviceID string) (devreg.Device, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return devreg.Device{}, err
	}
	if credential.CheckDeviceID(deviceID) != "" {
		return devreg.Device{}, notFound("device", deviceID)
	}
	return s.store.Device(ctx, c.AccountID, deviceID)
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
	if credential.CheckDeviceID(deviceID) != "" {
		return devreg.Device{}, notFound("device", deviceID)
	}
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
	if credential.CheckDeviceID(deviceID) != "" {
		return notFound("device", deviceID)
	}
	return s.store.DeleteDevice(ctx, c.AccountID, deviceID)
}

// ListBatches returns a page of the caller's batches, newest first, and the next page's cursor.
func (s *Service) ListBatches(ctx context.Context, deviceTypeID string, limit int, cursor string) ([]devreg.Batch, string, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return nil, "", err
	}
	if deviceTypeID != "" && !opaqueID(deviceTypeID) {
		return []devreg.Batch{}, "", nil
	}
	f := devreg.BatchFilter{DeviceTypeID: deviceTypeID}
	if f.Limit, err = pageSize(limit); err != nil {
		return nil, "", err
	}
	if cursor != "" {
		pos, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		if f.Before, err = strconv.ParseInt(pos, 10, 64); err != nil {
			return nil, "", devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one this service handed out", cursor)
		}
	}
	limit = f.Limit
	f.Limit++
	batches, seqs, err := s.store.ListBatches(ctx, c.AccountID, f)
	if err != nil || len(batches) <= limit {
		return batches, "", err
	}
	return batches[:limit], encodeCursor(strconv.FormatInt(seqs[limit-1], 10)), nil
}

// Batch returns one of the caller's batches.
func (s *Service) Batch(ctx context.Context, id string) (devreg.Batch, error) {
	c, err := authorize(ctx, devreg.ScopeRead)
	if err != nil {
		return devreg.Batch{}, err
	}
	if !opaqueID(id) {
		return devreg.Batch{}, notFound("batch", id)
	}
	return s.store.Batch(ctx, c.AccountID, id)
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
	if !opaqueID(id) {
		return devreg.Batch{}, notFound("batch", id)
	}
	if err := s.store.SetBatchStatus(ctx, c.AccountID, id, status); err != nil {
		return devreg.Batch{}, err
	}
	return s.store.Batch(ctx, c.AccountID, id)
}
