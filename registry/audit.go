package registry

import (
	"context"
	"slices"
	"strings"
	"time"

	"devreg"
)

// The audit log: every change made through the Operations API, the console or the server's
// command line is recorded in the transaction of the change (the store appends the entry that the
// context of its write carries). Entries name the actor, the client address and the request.

// actorOf is who a caller is, as the audit log names it.
func actorOf(c devreg.Caller) devreg.AuditActor {
	if c.Source == devreg.SourceCLI {
		return cliActor
	}
	if c.Source == devreg.SourceConsole {
		return devreg.AuditActor{Type: devreg.ActorUser, ID: c.UserID, Name: c.Name}
	}
	return devreg.AuditActor{Type: devreg.ActorAPIKey, ID: c.KeyID, Name: c.Name}
}

// cliActor is the server's command line.
var cliActor = devreg.AuditActor{Type: devreg.ActorCLI, ID: "cli", Name: "devreg command line"}

// audited returns ctx carrying the audit entry of a change: what a store write made with it
// appends in its transaction.
func (s *Service) audited(ctx context.Context, actor devreg.AuditActor, action string, object devreg.AuditObject, details map[string]any) context.Context {
	return devreg.NewContextWithAudit(ctx, s.auditEntry(ctx, actor, action, object, details))
}

func (s *Service) auditEntry(ctx context.Context, actor devreg.AuditActor, action string, object devreg.AuditObject, details map[string]any) *devreg.AuditEntry {
	if details == nil {
		details = map[string]any{}
	}
	e := &devreg.AuditEntry{
		Time: s.now(), Actor: actor, IP: devreg.ClientIPFromContext(ctx), RequestID: devreg.RequestIDFromContext(ctx),
		Action: action, Object: object, Details: details,
	}
	return e
}

// change is the details of an update: the fields that changed, before and after.
func change(old, new map[string]any) map[string]any {
	o, n := map[string]any{}, map[string]any{}
	for k, v := range new {
		if !equalValue(old[k], v) {
			o[k], n[k] = old[k], v
		}
	}
	return map[string]any{"old": o, "new": n}
}

// actorTypeOf is the kind of actor an ID names, for a filter that does not say: a device ID may
// look like any other ID, so a device is found by its ID only with the type device.
func actorTypeOf(id string) string {
	switch {
	case strings.HasPrefix(id, "key_"):
		return devreg.ActorAPIKey
	case strings.HasPrefix(id, "usr_"):
		return devreg.ActorUser
	case id == cliActor.ID:
		return devreg.ActorCLI
	}
	return devreg.ActorDevice
}

// objectTypeOf is the kind of object an ID names, for a filter that does not say.
func objectTypeOf(id string) string {
	for prefix, kind := range map[string]string{"dt_": "devicetype", "bat_": "batch", "key_": "apikey", "usr_": "user", "acc_": "account", "whk_": "webhook"} {
		if strings.HasPrefix(id, prefix) {
			return kind
		}
	}
	return "device"
}

// unchanged reports whether the details change made say nothing changed.
func unchanged(diff map[string]any) bool { return len(diff["new"].(map[string]any)) == 0 }

// equalValue compares two values of audit details: strings (times are formatted), numbers and
// lists of strings.
func equalValue(a, b any) bool {
	if a, ok := a.([]string); ok {
		b, ok := b.([]string)
		return ok && slices.Equal(a, b)
	}
	return a == b
}

// AuditLog returns a page of the caller's account's audit entries that match f, newest first,
// the cursor of the next page (zero on the last), and the chain's current head.
func (s *Service) AuditLog(ctx context.Context, f devreg.AuditFilter) ([]devreg.AuditEntry, devreg.Cursor, devreg.AuditHead, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, devreg.Cursor{}, devreg.AuditHead{}, err
	}
	if f.After.DeviceID != "" {
		return nil, devreg.Cursor{}, devreg.AuditHead{}, devreg.Errorf(devreg.EINVALIDCURSOR, "cursor %q is not one the audit listing handed out", f.After)
	}
	for _, filter := range []struct{ name, value string }{{"action", f.Action}, {"actor_id", f.ActorID}, {"object_id", f.ObjectID},
		{"actor_type", f.ActorType}, {"object_type", f.ObjectType}} {
		if err := checkLength(filter.name, filter.value, 0, 128); err != nil {
			return nil, devreg.Cursor{}, devreg.AuditHead{}, devreg.Errorf(devreg.EBADREQUEST, "%s", devreg.ErrorMessage(err))
		}
	}
	limit, err := pageSize(f.Limit)
	if err != nil {
		return nil, devreg.Cursor{}, devreg.AuditHead{}, err
	}
	if f.ActorID != "" && f.ActorType == "" {
		f.ActorType = actorTypeOf(f.ActorID)
	}
	if f.ObjectID != "" && f.ObjectType == "" {
		f.ObjectType = objectTypeOf(f.ObjectID)
	}
	head, err := s.store.AuditHead(ctx, c.AccountID)
	if err != nil {
		return nil, devreg.Cursor{}, head, err
	}
	f.Limit = limit + 1
	entries, err := s.store.ListAudit(ctx, c.AccountID, f)
	if err != nil || len(entries) <= limit {
		return entries, devreg.Cursor{}, head, err
	}
	return entries[:limit], devreg.Cursor{Seq: entries[limit-1].Seq}, head, nil
}

// ExportAudit streams the caller's account's audit entries in the time range (either end may be
// nil), oldest first, as stored: begin gets the chain's head first (the export ends there, even
// if entries are appended meanwhile), then fn each entry's canonical JSON and hash. Memory does
// not grow with the log. The caller's key is read again every 1000 entries or second: once it is
// revoked or expired, the export ends there with EUNAUTHORIZED or EKEYEXPIRED.
func (s *Service) ExportAudit(ctx context.Context, since, until *time.Time, begin func(devreg.AuditHead) error, fn func(entry []byte, hash string) error) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	head, err := s.store.AuditHead(ctx, c.AccountID)
	if err != nil {
		return err
	}
	if err := begin(head); err != nil {
		return err
	}
	check := s.newStreamCheck(c, "the export ends here, incomplete")
	err = s.store.WalkAudit(ctx, c.AccountID, since, until, func(e devreg.StoredAuditEntry) error {
		if e.Seq > head.Seq {
			return errStop
		}
		if err := check.next(ctx); err != nil {
			return err
		}
		return fn(e.Entry, e.Hash)
	})
	if err == errStop {
		err = nil
	}
	return err
}

var errStop = devreg.Errorf(devreg.EINTERNAL, "stop")
