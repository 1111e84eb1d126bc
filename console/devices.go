package console

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/respond"
)

// countCap is how many devices the Devices page counts, at most, for a filter that no counter
// keeps (a status, a connection, a prefix): reading 10,000 index entries takes a few
// milliseconds, and past that the page says "more than 10,000".
const countCap = 10000

// sortChoices are the Devices page's orders, as its menu lists them.
var sortChoices = []struct {
	Value devreg.DeviceSort
	Label string
}{
	{devreg.SortRegistered, "Registered, oldest first"},
	{devreg.SortNewest, "Registered, newest first"},
	{devreg.SortID, "Device ID"},
	{devreg.SortLastSeen, "Last seen"},
}

type devicesData struct {
	Types     []devreg.DeviceType
	TypeNames map[string]string
	Filter    devreg.DeviceFilter
	Sorts     any
	Connected string
	Filtered  bool
	Devices   []devreg.Device
	Summary   string
	// Searched says, for a substring search whose page stopped at the end of its window, how
	// far it searched; NextURL then searches on.
	Searched  string
	SortNote  string
	NewestLot *devreg.Batch
	Cursor    string
	NextURL   string
	FirstURL  string
	ExportURL string
	Query     string // the filter and order, without the cursor
	Back      string // the filter, order and cursor: where a bulk change comes back to
	BulkMax   int
	// SearchWindow is how many devices a page of a substring search reads at most.
	SearchWindow int64

	// The register-one form: the type it offers first and its minimum secret length, and the ID
	// typed in before a refusal, so that it need not be typed again.
	RegisterType string
	RegisterMin  int
	RegisterID   string
}

// devicesFilter reads the Devices page's filter and order from its query string, as the page,
// its export and its bulk changes take them. A search lists in device ID order whatever order
// was chosen; note says so when that overrode the choice.
func devicesFilter(q url.Values) (f devreg.DeviceFilter, connected, note string) {
	f = devreg.DeviceFilter{
		DeviceTypeID: q.Get("device_type_id"), BatchID: strings.TrimSpace(q.Get("batch_id")),
		Prefix: strings.TrimSpace(q.Get("prefix")), Contains: strings.TrimSpace(q.Get("contains")),
		Status: devreg.DeviceStatus(q.Get("status")), Sort: devreg.DeviceSort(q.Get("sort")),
	}
	connected = q.Get("connected")
	switch connected {
	case "true", "false":
		b := connected == "true"
		f.Connected = &b
	default:
		connected = ""
	}
	if (f.Prefix != "" || f.Contains != "") && f.Sort != devreg.SortRegistered && f.Sort != devreg.SortID {
		f.Sort, note = devreg.SortID, "A search lists devices in device ID order."
	}
	return f, connected, note
}

// filterQuery is f (and its order) as the Devices page's query string, without a cursor.
func filterQuery(f devreg.DeviceFilter, connected string) url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"device_type_id": f.DeviceTypeID, "batch_id": f.BatchID, "prefix": f.Prefix,
		"contains": f.Contains, "status": string(f.Status), "connected": connected, "sort": string(f.Sort)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

func (h *Handler) devicesPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	f, connected, note := devicesFilter(q)
	d := devicesData{Filter: f, Sorts: sortChoices, Connected: connected, SortNote: note, Cursor: q.Get("cursor"), BulkMax: devreg.DefaultPageSize, SearchWindow: devreg.SearchWindow}
	d.Filtered = f.DeviceTypeID != "" || f.BatchID != "" || f.Prefix != "" || f.Contains != "" || f.Status != "" || connected != ""
	var err error
	if d.Types, d.TypeNames, err = h.types(ctx); err != nil {
		return err
	}
	d.RegisterType, d.RegisterMin, d.RegisterID = d.Filter.DeviceTypeID, credential.MinSecretLength, r.URL.Query().Get("register_id")
	for i, t := range d.Types {
		if i == 0 || t.ID == d.Filter.DeviceTypeID {
			d.RegisterType, d.RegisterMin = t.ID, t.MinSecretLength
		}
	}
	if f.After, err = devreg.ParseCursor(d.Cursor); err != nil {
		return err
	}
	var next devreg.Cursor
	if d.Devices, next, err = h.svc.ListDevices(ctx, f); err != nil {
		return err
	}
	if d.Summary, err = h.summary(r, d); err != nil {
		return err
	}
	base := filterQuery(f, connected)
	if !next.IsZero() {
		if f.Contains != "" && len(d.Devices) < devreg.DefaultPageSize {
			d.Searched = fmt.Sprintf("Searched %s more devices, up to %s, without filling the page; narrow by type, batch or prefix, or search on.",
				devreg.Thousands(devreg.SearchWindow), next.DeviceID)
		}
		nq := filterQuery(f, connected)
		nq.Set("cursor", next.String())
		d.NextURL = "/devices?" + nq.Encode()
	}
	d.Query = base.Encode()
	if d.Cursor != "" {
		base.Set("cursor", d.Cursor)
	}
	d.Back = base.Encode()
	d.FirstURL = "/devices?" + d.Query
	d.ExportURL = "/devices/export.csv?" + d.Query
	if f.BatchID == "" {
		lots, _, err := h.svc.ListBatches(ctx, devreg.BatchFilter{DeviceTypeID: f.DeviceTypeID, Limit: 1})
		if err != nil {
			return err
		}
		if len(lots) == 1 {
			d.NewestLot = &lots[0]
		}
	}
	return h.render(w, r, http.StatusOK, "devices", "Devices", "devices", d)
}

// summary says how many devices match: from the counters the registry keeps for a type, a
// batch and a batch's connected devices, and otherwise counted up to countCap. A substring
// search is not counted; its pages say how far they searched.
func (h *Handler) summary(r *http.Request, d devicesData) (string, error) {
	f := d.Filter
	var total int64
	var of string
	switch {
	case f.BatchID != "":
		b, err := h.svc.Batch(r.Context(), f.BatchID)
		if devreg.ErrorCode(err) == devreg.ENOTFOUND {
			return "No batch " + f.BatchID + " in this account.", nil
		}
		if err != nil {
			return "", err
		}
		total, of = b.DeviceCount, "in batch "+b.ID
		narrowed := f.Prefix != "" || f.Contains != "" || f.Status != "" || f.DeviceTypeID != ""
		if f.Connected != nil && !narrowed {
			n, what := b.ConnectedCount, "have checked in"
			if !*f.Connected {
				n, what = b.DeviceCount-b.ConnectedCount, "have never checked in"
			}
			return fmt.Sprintf("%s of the %s devices in batch %s %s.", devreg.Thousands(n), devreg.Thousands(b.DeviceCount), b.ID, what), nil
		}
	case f.DeviceTypeID != "":
		name, ok := d.TypeNames[f.DeviceTypeID]
		if !ok {
			return "No device type " + f.DeviceTypeID + " in this account.", nil
		}
		for _, t := range d.Types {
			if t.ID == f.DeviceTypeID {
				total = t.DeviceCount
			}
		}
		of = "of type " + name
	default:
		for _, t := range d.Types {
			total += t.DeviceCount
		}
		of = fmt.Sprintf("in all %d device types", len(d.Types))
	}
	s := fmt.Sprintf("%s devices %s", devreg.Thousands(total), of)
	switch {
	case f.Contains != "":
		return s + "; showing those whose ID contains " + f.Contains + ".", nil
	case f.Prefix != "" || f.Status != "" || f.Connected != nil || f.BatchID != "" && f.DeviceTypeID != "":
		n, err := h.svc.CountDevices(r.Context(), f, countCap)
		if err != nil {
			return "", err
		}
		if n > countCap {
			return fmt.Sprintf("%s; more than %s match the filters (counted up to %s).", s, devreg.Thousands(countCap), devreg.Thousands(countCap)), nil
		}
		return fmt.Sprintf("%s; %s match the filters.", s, devreg.Thousands(int64(n))), nil
	}
	return s + ".", nil
}

// exportDevices streams the devices of the Devices page's filter, in its order, as CSV with the
// columns of `devreg devices export`: a page of devreg.MaxPageSize at a time, each an index walk
// from where the last one ended, so memory stays constant and time grows with the devices
// exported (and, for a substring search, with the devices searched) only.
func (h *Handler) exportDevices(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	f, _, _ := devicesFilter(r.URL.Query())
	f.Limit = devreg.MaxPageSize
	bw := bufio.NewWriterSize(w, 32<<10)
	cw := csv.NewWriter(bw)
	started := false
	for {
		page, next, err := h.svc.ListDevices(ctx, f)
		if err != nil && !started {
			return err // an error page, not a download
		}
		if err != nil {
			if respond.ClientGone(r, err) {
				return err
			}
			// The download breaks off, and browsers report it as failed, rather than end as if
			// it were whole.
			h.log.Error("device export broken off", "request_id", devreg.RequestIDFromContext(ctx), "err", err)
			cw.Flush()
			bw.Flush()
			panic(http.ErrAbortHandler)
		}
		if !started {
			hd := w.Header()
			hd.Set("Content-Type", "text/csv; charset=utf-8")
			hd.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="devreg-devices-%s.csv"`, h.svc.Now().UTC().Format("20060102T150405Z")))
			hd.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			cw.Write(devreg.DeviceExportColumns)
			started = true
		}
		for _, d := range page {
			cw.Write(devreg.DeviceExportRecord(d))
		}
		if cw.Flush(); cw.Error() != nil {
			return cw.Error()
		}
		if next.IsZero() {
			return bw.Flush()
		}
		f.After = next
		// A user removed or demoted while the download runs gets no more of it.
		if err := h.svc.StillAuthorized(ctx, "the export was broken off"); err != nil {
			h.log.Warn("device export broken off", "request_id", devreg.RequestIDFromContext(ctx), "err", err)
			bw.Flush()
			panic(http.ErrAbortHandler)
		}
	}
}

// relativeTime shows t as how long ago it was ("3 min ago"), with the exact UTC time in the
// element's datetime and on hover.
func relativeTime(now time.Time, t any) template.HTML {
	var at time.Time
	switch v := t.(type) {
	case time.Time:
		at = v
	case *time.Time:
		if v == nil {
			return ""
		}
		at = *v
	default:
		return ""
	}
	exact := at.UTC().Format("2006-01-02 15:04:05 UTC")
	return template.HTML(fmt.Sprintf(`<time datetime="%s" title="%s">%s</time>`,
		at.UTC().Format(time.RFC3339), exact, template.HTMLEscapeString(ago(now.Sub(at), at))))
}

// ago is how long d is, said the way a person would: "just now", "3 min ago", "5 h ago",
// "2 days ago"; from 30 days on, the date (at).
func ago(d time.Duration, at time.Time) string {
	switch {
	case d < 0:
		return at.UTC().Format("2006-01-02 15:04 UTC")
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	case d < 30*24*time.Hour:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
	return at.UTC().Format("2006-01-02")
}

// bulkData is what the bulk change's confirmation and result pages show.
type bulkData struct {
	Action  string
	IDs     []string
	Back    string // the Devices page the selection was made on
	Changed int
	Refused []bulkRefusal
}

type bulkRefusal struct{ DeviceID, Reason string }

// bulkDevices disables, enables or deletes the devices selected on the Devices page: at most a
// page of them (devreg.DefaultPageSize), each changed (and audited) as the device's own page
// changes it, so that one a user may not change or that is gone is refused by name and the rest
// are changed. A deletion first shows a confirmation naming the count.
func (h *Handler) bulkDevices(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	back, err := url.ParseQuery(r.PostFormValue("back"))
	if err != nil {
		back = url.Values{}
	}
	f, connected, _ := devicesFilter(back)
	d := bulkData{Action: r.PostFormValue("action"), IDs: r.PostForm["device_id"], Back: "/devices?" + filterQuery(f, connected).Encode()}
	if cursor := back.Get("cursor"); cursor != "" {
		d.Back += "&cursor=" + url.QueryEscape(cursor)
	}
	switch {
	case d.Action != "disable" && d.Action != "enable" && d.Action != "delete":
		return devreg.Errorf(devreg.EBADREQUEST, "action must be disable, enable or delete; it is %q", d.Action)
	case len(d.IDs) == 0:
		return h.redirect(w, r, d.Back, "error", "Select at least one device first.")
	case len(d.IDs) > devreg.DefaultPageSize:
		return devreg.Errorf(devreg.EBADREQUEST, "%d devices were selected; a bulk change takes at most %d, a page of the list", len(d.IDs), devreg.DefaultPageSize)
	}
	if d.Action == "delete" && r.PostFormValue("confirm") != "yes" {
		return h.render(w, r, http.StatusOK, "devices_bulk_delete", fmt.Sprintf("Delete %d devices", len(d.IDs)), "devices", d)
	}
	for _, id := range d.IDs {
		var err error
		switch d.Action {
		case "delete":
			err = h.svc.DeleteDevice(ctx, id)
		case "disable":
			_, err = h.svc.SetDeviceStatus(ctx, id, devreg.StatusDisabled)
		case "enable":
			_, err = h.svc.SetDeviceStatus(ctx, id, devreg.StatusEnabled)
		}
		switch code := devreg.ErrorCode(err); {
		case err == nil:
			d.Changed++
		case code == devreg.EINTERNAL:
			return err
		default:
			d.Refused = append(d.Refused, bulkRefusal{id, devreg.ErrorMessage(err)})
		}
	}
	if len(d.Refused) == 0 {
		return h.redirect(w, r, d.Back, "notice", fmt.Sprintf("%s %d devices.", bulkDone[d.Action], d.Changed))
	}
	return h.render(w, r, http.StatusOK, "devices_bulk_result", "Bulk change", "devices", d)
}

// bulkDone says what a bulk action did.
var bulkDone = map[string]string{"disable": "Disabled", "enable": "Enabled", "delete": "Deleted"}
