package devreg

import "time"

// BatchStatus says whether a batch's devices may authenticate.
type BatchStatus = DeviceStatus

// Batch is a manufacturing lot: the devices one registration request created or replaced.
type Batch struct {
	ID             string      `json:"id"`
	DeviceTypeID   string      `json:"device_type_id"`
	CreatedAt      time.Time   `json:"created_at"`
	CreatedBy      string      `json:"created_by"`
	Source         Source      `json:"source"`
	Filename       string      `json:"filename"`
	Name           string      `json:"name"` // optional, given with ?batch_name= at registration
	DeviceCount    int64       `json:"device_count"`
	ConnectedCount int64       `json:"connected_count"`
	Status         BatchStatus `json:"status"`

	// CreatorType and CreatorID name who created the batch as the audit log names actors
	// (ActorAPIKey or ActorUser, and the key's or user's ID): a console user of the operations
	// role may disable or delete the lots it created. Empty for batches made before they were
	// recorded, and for those that devices made (just-in-time registration, enrollment).
	CreatorType string `json:"-"`
	CreatorID   string `json:"-"`
}

// BatchFilter selects batches of one account, newest first.
type BatchFilter struct {
	DeviceTypeID string
	Limit        int
	After        Cursor // where the page starts: the cursor handed out with the page before

	// DeviceTypeIDs, when not nil, are the only device types whose batches match, as in
	// DeviceFilter.
	DeviceTypeIDs []string
}
