package devreg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gowebpki/jcs"
)

// The kinds of actor an audit entry names.
const (
	ActorAPIKey = "api_key"
	ActorUser   = "user"
	ActorCLI    = "cli"
	ActorDevice = "device"
)

// AuditActor is who made a change: an API key (ID and name), a console user (ID and email), the
// server's command line, or a device.
type AuditActor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// AuditObject is what a change was made to.
type AuditObject struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// AuditEntry records one change, in the same transaction as the change. The entries of an
// account form a hash chain: Seq counts from 1 without gaps, and Hash is the hex SHA-256 of the
// previous entry's hash (64 zeros for the first), a line feed, and the entry without its hash in
// RFC 8785 canonical JSON.
type AuditEntry struct {
	ID        string         `json:"id"`
	AccountID string         `json:"account_id"` // the chain it belongs to, so that no chain can pass for another's
	Seq       int64          `json:"seq"`
	Time      time.Time      `json:"time"`
	Actor     AuditActor     `json:"actor"`
	IP        string         `json:"ip"`
	RequestID string         `json:"request_id"`
	Action    string         `json:"action"`
	Object    AuditObject    `json:"object"`
	Details   map[string]any `json:"details"` // what changed: old and new values, counts; never a secret
	Hash      string         `json:"hash,omitempty"`
	// DeviceTypeID is the device type the change is about, when it is about a device or a batch
	// and the details do not say: the entry's event is then one a key of that type sees. It is no
	// part of the entry (not hashed, not listed).
	DeviceTypeID string `json:"-"`
}

// AuditActions are the actions the audit log records.
var AuditActions = []string{
	"account.create", "apikey.create", "apikey.delete", "apikey.update", "batch.delete", "batch.update",
	"ca.create", "ca.delete", "credential.create", "credential.delete", "credential.rotate", "credential.update",
	"credentials.revoke", "device.auto_register", "device.delete", "device.enroll", "device.update", "devices.register",
	"devicetype.create", "devicetype.delete", "devicetype.update", "enrollment_group.allowed_ids", "enrollment_group.create",
	"enrollment_group.delete", "enrollment_group.key_create", "enrollment_group.reenroll", "enrollment_group.update",
	"login.failure", "login.success", "user.create", "user.delete", "user.password_change", "user.password_reset",
	"user.password_set", "user.update", "webhook.create", "webhook.delete", "webhook.update",
}

// GenesisHash is the previous hash of an account's first audit entry.
var GenesisHash = strings.Repeat("0", 64)

// AuditHead is the newest entry of an account's chain: keep it somewhere else, and verify the
// chain against it later.
type AuditHead struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// Canonical returns the entry without its hash in RFC 8785 canonical JSON: what its hash covers.
func (e AuditEntry) Canonical() ([]byte, error) {
	e.Hash = ""
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return jcs.Transform(raw)
}

// ChainHash returns the hash of an entry whose canonical form is canonical, following prev.
func ChainHash(prev string, canonical []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write([]byte{'\n'})
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// AuditLine is an entry as the export writes it: the stored canonical JSON with its hash added
// as the last field, and a line feed.
func AuditLine(entry []byte, hash string) []byte {
	entry = bytes.TrimSuffix(bytes.TrimSpace(entry), []byte("}"))
	line := make([]byte, 0, len(entry)+len(hash)+12)
	line = append(line, entry...)
	return append(line, `,"hash":"`+hash+"\"}\n"...)
}

// String returns the head as SEQ:HASH, as ParseAuditHead reads it.
func (h AuditHead) String() string { return fmt.Sprintf("%d:%s", h.Seq, h.Hash) }

// ParseAuditHead reads a head given as SEQ:HASH.
func ParseAuditHead(s string) (AuditHead, error) {
	seq, hash, ok := strings.Cut(s, ":")
	var h AuditHead
	if _, err := fmt.Sscanf(seq, "%d", &h.Seq); !ok || err != nil || h.Seq < 1 || len(hash) != 64 {
		return h, fmt.Errorf("a head is SEQ:HASH, the sequence number of an entry and its 64 hex digit hash; %q is not", s)
	}
	if _, err := hex.DecodeString(hash); err != nil {
		return h, fmt.Errorf("a head is SEQ:HASH, the sequence number of an entry and its 64 hex digit hash; %q is not", s)
	}
	h.Hash = strings.ToLower(hash)
	return h, nil
}

// StoredAuditEntry is an audit entry as the store keeps it: the canonical JSON its hash covers,
// the hash, and the columns the listing filters on, which repeat parts of the entry.
type StoredAuditEntry struct {
	Seq    int64
	Time   time.Time
	Action string
	Actor  AuditActor  // type and ID; the name is only in the entry
	Object AuditObject // type and ID
	Entry  []byte
	Hash   string
}

// AuditFilter selects audit entries of one account, newest first.
type AuditFilter struct {
	Action   string
	ActorID  string
	ObjectID string
	// ActorType and ObjectType say what kind of actor or object the IDs name (a device ID may look
	// like any other ID); the registry infers them from the IDs when they are empty.
	ActorType  string
	ObjectType string
	Since      *time.Time
	Until      *time.Time
	Limit      int
	After      Cursor // Seq: entries before it (newest first)
}

type auditKey struct{}

// NewContextWithAudit returns a copy of ctx that carries the audit entry of the change a store
// write is about to make; the store appends it in the write's transaction, or not at all.
func NewContextWithAudit(ctx context.Context, e *AuditEntry) context.Context {
	return context.WithValue(ctx, auditKey{}, e)
}

// AuditFromContext returns the audit entry carried by ctx, or nil.
func AuditFromContext(ctx context.Context) *AuditEntry {
	e, _ := ctx.Value(auditKey{}).(*AuditEntry)
	return e
}
