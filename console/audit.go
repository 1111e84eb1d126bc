package console

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"devreg"
	"devreg/internal/respond"
)

// auditPageSize is how many entries a page of the Audit Log shows.
const auditPageSize = 50

// auditActions are the actions the audit log records, offered as suggestions in the action
// filter; any other value is still taken as it is.
var auditActions = devreg.AuditActions

// auditFilterForm is the Audit Log's filter form as the user filled it in.
type auditFilterForm struct {
	Action, ActorID, ObjectID, Since, Until string
	ActorType, ObjectType                   string // set by a row's links; a typed ID needs none
}

// values returns the filters as a query string's values, without the empty ones.
func (f auditFilterForm) values() url.Values {
	q := url.Values{}
	for _, p := range [][2]string{{"action", f.Action}, {"actor_type", f.ActorType}, {"actor_id", f.ActorID}, {"object_type", f.ObjectType},
		{"object_id", f.ObjectID}, {"since", f.Since}, {"until", f.Until}} {
		if p[1] != "" {
			q.Set(p[0], p[1])
		}
	}
	return q
}

// auditRow is an audit entry as the Audit Log page shows it.
type auditRow struct {
	devreg.AuditEntry
	Details                        []detailLine
	ActionURL, ActorURL, ObjectURL string // the page filtered by this entry's action, actor or object
	ObjectName                     string // the object's name, beside its ID, where it has one
}

// detailLine is one field of an entry's details, its value in short text.
type detailLine struct{ Key, Value string }

type auditData struct {
	Filter    auditFilterForm
	Filtered  bool
	Actions   []string
	Entries   []auditRow
	Head      devreg.AuditHead
	Cursor    string
	NextURL   string
	FirstURL  string
	ExportURL string
}

// auditFilter reads the Audit Log's filters from a query string. Times are what a datetime-local
// input sends, in UTC, or RFC 3339.
func auditFilter(q url.Values) (auditFilterForm, devreg.AuditFilter, error) {
	form := auditFilterForm{
		Action: strings.TrimSpace(q.Get("action")), ActorID: strings.TrimSpace(q.Get("actor_id")), ObjectID: strings.TrimSpace(q.Get("object_id")),
		Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")),
		ActorType: strings.TrimSpace(q.Get("actor_type")), ObjectType: strings.TrimSpace(q.Get("object_type")),
	}
	f := devreg.AuditFilter{Action: form.Action, ActorID: form.ActorID, ObjectID: form.ObjectID, ActorType: form.ActorType, ObjectType: form.ObjectType,
		Limit: auditPageSize}
	for _, p := range []struct{ name, v string }{{"action", f.Action}, {"actor ID", f.ActorID}, {"object ID", f.ObjectID},
		{"actor type", f.ActorType}, {"object type", f.ObjectType}} {
		if err := checkFilterText(p.name, p.v); err != nil {
			return form, f, err
		}
	}
	var err error
	if f.Since, f.Until, err = timeRange(form.Since, form.Until); err != nil {
		return form, f, err
	}
	// As the datetime-local inputs show them, whatever form they came in.
	form.Since, form.Until = inputTime(f.Since), inputTime(f.Until)
	if f.After, err = devreg.ParseCursor(q.Get("cursor")); err != nil {
		return form, f, err
	}
	return form, f, nil
}

// maxFilterText bounds a text filter: no action or ID is longer.
const maxFilterText = 200

// checkFilterText refuses a filter value no entry can hold: too long, not UTF-8, or with control
// characters (which PostgreSQL would refuse as a parameter, turning a typo into a server error).
func checkFilterText(name, v string) error {
	if len(v) > maxFilterText || !utf8.ValidString(v) || strings.ContainsFunc(v, unicode.IsControl) {
		return devreg.Errorf(devreg.EBADREQUEST, "the %s filter must be text of at most %d characters", name, maxFilterText)
	}
	return nil
}

// timeRange reads the since and until filters: since is included, until is not.
func timeRange(since, until string) (s, u *time.Time, err error) {
	if s, err = filterTime("since", since); err != nil {
		return nil, nil, err
	}
	if u, err = filterTime("until", until); err != nil {
		return nil, nil, err
	}
	if s != nil && u != nil && !s.Before(*u) {
		return nil, nil, devreg.Errorf(devreg.EINVALID, "since (%s) must be before until (%s)", s.Format(inputTimeLayout), u.Format(inputTimeLayout))
	}
	return s, u, nil
}

func filterTime(name, v string) (*time.Time, error) {
	t, ok := parseUTC(v)
	if !ok {
		return nil, devreg.Errorf(devreg.EBADREQUEST, "%s must be a date and time in UTC such as 2027-03-31T14:30; it is %q", name, clipText(v))
	}
	return t, nil
}

// clipText shortens a value from a request that a message repeats, as every message does.
func clipText(s string) string { return devreg.ProblemList{}.Clip(s) }

func (h *Handler) auditPage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	form, f, err := auditFilter(q)
	if err != nil {
		return err
	}
	entries, next, head, err := h.svc.AuditLog(r.Context(), f)
	if err != nil {
		return err
	}
	d := auditData{Filter: form, Actions: auditActions, Head: head, Cursor: q.Get("cursor")}
	d.Filtered = form != auditFilterForm{}
	base := form.values()
	link := func(nameValues ...string) string {
		q := form.values()
		for i := 0; i+1 < len(nameValues); i += 2 {
			q.Set(nameValues[i], nameValues[i+1])
		}
		return "/audit?" + q.Encode()
	}
	_, typeNames, err := h.types(r.Context())
	if err != nil {
		return err
	}
	for _, e := range entries {
		row := auditRow{AuditEntry: e, Details: detailLines(e.Details),
			ActionURL: link("action", e.Action), ActorURL: link("actor_type", e.Actor.Type, "actor_id", e.Actor.ID),
			ObjectURL: link("object_type", e.Object.Type, "object_id", e.Object.ID)}
		// A device type by its name now; anything else by the name its entry recorded.
		if n, ok := typeNames[e.Object.ID]; ok && e.Object.Type == "devicetype" {
			row.ObjectName = n
		} else if n, ok := e.Details["name"].(string); ok && n != e.Object.ID {
			row.ObjectName = n
		}
		d.Entries = append(d.Entries, row)
	}
	if !next.IsZero() {
		q := form.values()
		q.Set("cursor", next.String())
		d.NextURL = "/audit?" + q.Encode()
	}
	d.FirstURL = "/audit"
	if len(base) > 0 {
		d.FirstURL += "?" + base.Encode()
	}
	export := url.Values{}
	if form.Since != "" {
		export.Set("since", form.Since)
	}
	if form.Until != "" {
		export.Set("until", form.Until)
	}
	d.ExportURL = "/audit/export"
	if len(export) > 0 {
		d.ExportURL += "?" + export.Encode()
	}
	return h.render(w, r, http.StatusOK, "audit", "Audit Log", "audit", d)
}

// maxDetail bounds how much of one detail the page shows; the export holds all of it.
const maxDetail = 300

// detailLines renders an entry's details as short lines of text, one for each field, sorted. The
// details of an update ({"old": {...}, "new": {...}}) become one line per changed field,
// "old → new". Values that are not strings are shown as compact JSON. The page escapes every line:
// details are whatever the server recorded, which includes names that users typed.
func detailLines(details map[string]any) []detailLine {
	var lines []detailLine
	old, oldOK := details["old"].(map[string]any)
	nw, newOK := details["new"].(map[string]any)
	if oldOK && newOK {
		keys := map[string]bool{}
		for k := range old {
			keys[k] = true
		}
		for k := range nw {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			lines = append(lines, detailLine{k, clipDetail(detailText(old[k]) + " → " + detailText(nw[k]))})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(details)) {
		if oldOK && newOK && (k == "old" || k == "new") {
			continue
		}
		lines = append(lines, detailLine{k, clipDetail(detailText(details[k]))})
	}
	return lines
}

func detailText(v any) string {
	if s, ok := v.(string); ok && s != "" {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func clipDetail(s string) string {
	if utf8.RuneCountInString(s) <= maxDetail {
		return s
	}
	return string([]rune(s)[:maxDetail]) + "…"
}

// exportAudit streams the audit entries in the time range as NDJSON, oldest first: each line the
// entry as stored (the canonical JSON its hash covers) with its "hash" added, so that any tool can
// recompute the chain. The chain's head goes in the Audit-Head header; the export ends at it even
// if entries are appended meanwhile.
func (h *Handler) exportAudit(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	since, until, err := timeRange(strings.TrimSpace(q.Get("since")), strings.TrimSpace(q.Get("until")))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	started := false
	err = h.svc.ExportAudit(ctx, since, until, func(head devreg.AuditHead) error {
		// Headers are set only once the export has got this far, so that an error before is an
		// error page, not a download.
		hd := w.Header()
		hd.Set("Content-Type", "application/x-ndjson")
		hd.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="devreg-audit-%s.ndjson"`, h.svc.Now().UTC().Format("20060102T150405Z")))
		hd.Set("Cache-Control", "no-store")
		hd.Set("Audit-Head", head.String())
		w.WriteHeader(http.StatusOK)
		started = true
		return nil
	}, func(entry []byte, hash string) error {
		_, err := bw.Write(devreg.AuditLine(entry, hash))
		return err
	})
	if err != nil && started {
		// The download ends with an error line and a broken connection, which browsers
		// report as a failed download.
		return respond.BreakStream(w, bw, r, h.log, err)
	}
	if err != nil {
		return err // before the head, an error page
	}

	return bw.Flush()
}
