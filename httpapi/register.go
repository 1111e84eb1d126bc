package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"devreg"
	"devreg/bulkfile"
	"devreg/internal/reqbody"
)

func (h *Handler) registerDevices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := devreg.RegisterOptions{OnConflict: devreg.OnConflict(q.Get("on_conflict"))}
	dryRun, err := queryBool(r, "dry_run")
	if err != nil {
		return err
	}
	opts.DryRun = dryRun != nil && *dryRun
	var src devreg.EntrySource
	switch mt := mediaType(r); mt {
	case "application/json":
		src = newJSONEntries(r.Body)
	case "text/csv":
		src = reqbody.Entries(bulkfile.NewReader(r.Body))
	default:
		return devreg.Errorf(devreg.EUNSUPPORTED, "send the devices as 'Content-Type: application/json' or as the bulk upload file with 'Content-Type: text/csv'; the body was %q", mt)
	}
	res, err := h.svc.Register(r.Context(), r.PathValue("id"), src, opts)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}

// jsonEntries streams the devices of a JSON registration body, {"devices": [...]}, one at a time.
type jsonEntries struct {
	dec     *json.Decoder
	index   int
	inArray bool
	started bool
}

func newJSONEntries(body io.Reader) devreg.EntrySource {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	return reqbody.Entries(&jsonEntries{dec: dec})
}

type jsonDevice struct {
	DeviceID *string `json:"device_id"`
	Secret   *string `json:"secret"`
}

func (j *jsonEntries) Next() (devreg.DeviceEntry, error) {
	if !j.started {
		j.started = true
		if err := j.expectDelim('{', "a JSON object such as {\"devices\": [...]}"); err != nil {
			return devreg.DeviceEntry{}, err
		}
	}
	for !j.inArray {
		tok, err := j.dec.Token()
		if err != nil {
			return devreg.DeviceEntry{}, j.syntax(err)
		}
		if tok == json.Delim('}') {
			if _, err := j.dec.Token(); !errors.Is(err, io.EOF) {
				return devreg.DeviceEntry{}, devreg.Errorf(devreg.EBADREQUEST, "body is not valid JSON: unexpected data after the object at byte offset %d", j.dec.InputOffset())
			}
			return devreg.DeviceEntry{}, io.EOF
		}
		if tok != "devices" {
			return devreg.DeviceEntry{}, devreg.Errorf(devreg.EBADREQUEST, "body is not valid: unknown field %v at byte offset %d; the body is {\"devices\": [...]}", tok, j.dec.InputOffset())
		}
		if err := j.expectDelim('[', "\"devices\" to be an array"); err != nil {
			return devreg.DeviceEntry{}, err
		}
		j.inArray = true
	}
	if !j.dec.More() {
		if _, err := j.dec.Token(); err != nil { // the closing ']'
			return devreg.DeviceEntry{}, j.syntax(err)
		}
		j.inArray = false
		return j.Next()
	}
	var d jsonDevice
	e := devreg.DeviceEntry{Index: j.index}
	j.index++
	err := j.dec.Decode(&d)
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typ):
		e.Problem = fmt.Sprintf("entry must be an object with string fields device_id and secret (%s is %s)", orEntry(typ.Field), typ.Value)
	case err != nil && isUnknownField(err):
		e.Problem = fmt.Sprintf("entry has an %s; only device_id and secret are allowed", err.Error()[len("json: "):])
	case err != nil:
		return e, j.syntax(err)
	case d.DeviceID == nil:
		e.Problem = "entry has no device_id"
	case d.Secret == nil:
		e.Problem = "entry has no secret"
	}
	if d.DeviceID != nil {
		e.DeviceID = *d.DeviceID
	}
	if e.Problem == "" {
		e.Secret = *d.Secret
	}
	return e, nil
}

func orEntry(field string) string {
	if field == "" {
		return "the entry"
	}
	return field
}

// isUnknownField reports whether err is encoding/json's refusal of a field it does not know
// (it has no error type of its own).
func isUnknownField(err error) bool {
	return strings.HasPrefix(err.Error(), "json: unknown field")
}

func (j *jsonEntries) expectDelim(d json.Delim, want string) error {
	tok, err := j.dec.Token()
	if err != nil {
		return j.syntax(err)
	}
	if tok != d {
		return devreg.Errorf(devreg.EBADREQUEST, "body is not valid: expected %s at byte offset %d", want, j.dec.InputOffset())
	}
	return nil
}

func (j *jsonEntries) syntax(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return jsonError(err, j.dec.InputOffset())
}
