package devreg

import "time"

// DeviceExportColumns are the columns of a devices CSV export (never a secret), the same from
// `devreg devices export` and the console's export: DeviceExportRecord writes a row of them.
var DeviceExportColumns = []string{"device_id", "device_type_id", "status", "batch_id", "created_at", "last_seen_at"}

// DeviceExportRecord is d as a row of DeviceExportColumns: times in RFC 3339 UTC, a device never
// seen with an empty last_seen_at.
func DeviceExportRecord(d Device) []string {
	seen := ""
	if d.LastSeenAt != nil {
		seen = d.LastSeenAt.UTC().Format(time.RFC3339)
	}
	return []string{d.DeviceID, d.DeviceTypeID, string(d.Status), d.BatchID, d.CreatedAt.UTC().Format(time.RFC3339), seen}
}
