package httpapi

import (
	"bufio"
	"net/http"
	"time"

	"devreg"
	"devreg/internal/respond"
)

// queryTime reads an optional RFC 3339 time from the query string.
func queryTime(r *http.Request, name string) (*time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "query parameter %s must be an RFC 3339 time such as 2027-03-31T00:00:00Z; it is %q", name, truncate(v))
	}
	return &t, nil
}

func auditRange(r *http.Request) (since, until *time.Time, err error) {
	if since, err = queryTime(r, "since"); err != nil {
		return nil, nil, err
	}
	until, err = queryTime(r, "until")
	return since, until, err
}

// auditPage is the answer of GET /audit.
type auditPage struct {
	Entries    []devreg.AuditEntry `json:"entries"`
	NextCursor string              `json:"next_cursor"`
	Head       devreg.AuditHead    `json:"head"`
}

func (h *Handler) listAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := devreg.AuditFilter{Action: q.Get("action"), ActorID: q.Get("actor_id"), ObjectID: q.Get("object_id"),
		ActorType: q.Get("actor_type"), ObjectType: q.Get("object_type")}
	var err error
	if f.Since, f.Until, err = auditRange(r); err != nil {
		return err
	}
	if f.After, err = devreg.ParseCursor(q.Get("cursor")); err != nil {
		return err
	}
	if f.Limit, err = queryInt(r, "limit"); err != nil {
		return err
	}
	entries, next, head, err := h.svc.AuditLog(r.Context(), f)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, auditPage{Entries: entries, NextCursor: next.String(), Head: head})
}

// exportAudit streams the entries as NDJSON, oldest first: each line the entry as stored (its
// canonical JSON) with its hash added, so that another tool can recompute the chain. The head the
// export ends at goes first, in the Audit-Head header. An export that cannot finish (its key
// revoked or expired meanwhile, the database gone) ends with an error line and a broken
// connection.
func (h *Handler) exportAudit(w http.ResponseWriter, r *http.Request) error {
	since, until, err := auditRange(r)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	started := false
	err = h.svc.ExportAudit(r.Context(), since, until, func(head devreg.AuditHead) error {
		w.Header().Set("Audit-Head", head.String())
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		started = true
		return nil
	}, func(entry []byte, hash string) error {
		_, err := bw.Write(devreg.AuditLine(entry, hash))
		return err
	})
	if err != nil && started {
		return respond.BreakStream(w, bw, r, h.log, err)
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}
