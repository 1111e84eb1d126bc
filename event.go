package devreg

import (
	"encoding/json"
	"maps"
	"strings"
	"time"
)

// Event tells the systems around the registry (an MES, an ERP, a cloud backend) that something
// happened in an account. Every audited change makes one, in the change's transaction, with the
// audit action as its type, except that a registration is devices.registered; so an event exists
// if and only if its change committed. Seq numbers an account's events from 1 in the order they
// committed.
type Event struct {
	ID        string          `json:"id"` // evt_…: the same on every delivery of the event
	Seq       int64           `json:"seq"`
	Type      string          `json:"type"`
	Time      time.Time       `json:"time"`
	AccountID string          `json:"account_id"`
	Data      json.RawMessage `json:"data"`
	// DeviceTypeID is the device type the event is about, if any: a key restricted to device
	// types sees only the events of those.
	DeviceTypeID string `json:"-"`
}

// EventFirstConnection is the type of the event of a device's first connection: its first
// check-in, or the first time a broker let it in. Its data names the device, its type and batch,
// and how it connected ("check-in", "broker"). It is no user's change: the audit log has none.
const EventFirstConnection = "device.first_connection"

// EventTypes are the types of events: those of the audit actions, in their order, and then
// those of moments that are no user's change.
var EventTypes = func() []string {
	var types []string
	for _, a := range AuditActions {
		if t, ok := EventTypeOf(a); ok {
			types = append(types, t)
		}
	}
	return append(types, EventFirstConnection, EventCredentialFirstUse, EventLockedOut)
}()

// EventCredentialFirstUse is the type of the event of a credential's first use: data names the
// device, its type, the credential and its kind (secret or certificate).
const EventCredentialFirstUse = "credential.first_use"

// EventLockedOut is the type of the event of a device's lock-out beginning: too many wrong
// secrets in the window, so logins are refused until it ends. Data names the device, its type,
// the failures counted and when the lock-out ends.
const EventLockedOut = "device.locked_out"

// EventRegistered is the type of a registration's one event, however many devices it registered:
// its data holds the batch ID, the device type ID and the counts.
const EventRegistered = "devices.registered"

// EventTypeOf returns the type of the event an audit entry of action makes, and false for the
// actions that record no change (console logins, which strangers can cause at will).
func EventTypeOf(action string) (string, bool) {
	switch {
	case strings.HasPrefix(action, "login."):
		return "", false
	case action == "devices.register":
		return EventRegistered, true
	}
	return action, true
}

// EventOf returns the event of audit entry e (its ID, seq and time left to the store), and false
// for an entry that makes none. Its data is the entry's details with the object and the actor
// beside them, never a secret (details hold none).
func EventOf(e *AuditEntry) (Event, bool) {
	typ, ok := EventTypeOf(e.Action)
	if !ok {
		return Event{}, false
	}
	data := map[string]any{}
	maps.Copy(data, e.Details)
	data["object"] = e.Object
	data["actor"] = map[string]string{"type": e.Actor.Type, "id": e.Actor.ID}
	raw, err := json.Marshal(data)
	if err != nil {
		raw = []byte(`{}`) // details are JSON already: the audit entry's hash covers them
	}
	ev := Event{Type: typ, AccountID: e.AccountID, Time: e.Time, Data: raw}
	if id, ok := e.Details["device_type_id"].(string); ok {
		ev.DeviceTypeID = id
	} else if e.Object.Type == "devicetype" {
		ev.DeviceTypeID = e.Object.ID
	} else {
		ev.DeviceTypeID = e.DeviceTypeID
	}
	return ev, true
}

// SeesEvent reports whether caller c may see event e: an administrator every event, any other
// key only the events about the device types it reaches.
func (c Caller) SeesEvent(e Event) bool {
	if c.Scope.Allows(ScopeAdmin) {
		return true
	}
	return e.DeviceTypeID != "" && c.Reaches(e.DeviceTypeID)
}

// MaxEventWait is the longest a request for events waits for the first one.
const MaxEventWait = 60 * time.Second
