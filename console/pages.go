package console

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"devreg"
	"devreg/bulkfile"
	"devreg/devcert"
	"devreg/internal/reqbody"
	"devreg/registry"
)

func (h *Handler) deviceTypesPage(w http.ResponseWriter, r *http.Request) error {
	types, _, err := h.types(r.Context())
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "devicetypes", "Device Types", "devicetypes", struct{ Types []devreg.DeviceType }{types})
}

func formInt(r *http.Request, name string) (int, error) {
	v := strings.TrimSpace(r.PostFormValue(name))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, devreg.Errorf(devreg.EINVALID, "%s must be a whole number", strings.ReplaceAll(name, "_", " "))
	}
	return n, nil
}

// formOptionalInt is formInt for a field that, left blank or not sent, leaves its value as it is (nil).
func formOptionalInt(r *http.Request, name string) (*int, error) {
	if strings.TrimSpace(r.PostFormValue(name)) == "" {
		return nil, nil
	}
	n, err := formInt(r, name)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func (h *Handler) createDeviceType(w http.ResponseWriter, r *http.Request) error {
	min, err := formInt(r, "min_secret_length")
	if err == nil {
		var t devreg.DeviceType
		t, err = h.svc.CreateDeviceType(r.Context(), devreg.DeviceType{Name: r.PostFormValue("name"), Description: r.PostFormValue("description"), MinSecretLength: min})
		if err == nil {
			return h.redirect(w, r, "/devicetypes", "notice", fmt.Sprintf("Device type %q created. Its ID is %s.", t.Name, t.ID))
		}
	}
	if isUserError(err) {
		return h.redirect(w, r, "/devicetypes", "error", devreg.ErrorMessage(err))
	}
	return err
}

// isUserError reports whether err is something the user can fix in the form they sent.
func isUserError(err error) bool {
	switch devreg.ErrorCode(err) {
	case devreg.EINVALID, devreg.ECONFLICT, devreg.EINVALIDROWS, devreg.EBADREQUEST:
		return true
	}
	return false
}

func (h *Handler) editDeviceTypePage(w http.ResponseWriter, r *http.Request) error {
	t, err := h.svc.DeviceType(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "devicetype_edit", "Edit "+t.Name, "devicetypes", struct {
		Type         devreg.DeviceType
		Grace        string
		MaxGrace     int
		MaxRotations int
		IDFields     []devcert.IDField
		MaxAutoLimit int
	}{t, devreg.FormatDuration(t.RotationGrace()), devreg.MaxRotationGraceSeconds, devreg.MaxRotationsPerHourLimit, devcert.IDFields, devreg.MaxAutoRegisterLimit})
}

func (h *Handler) updateDeviceType(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	upd, err := deviceTypeUpdateForm(r)
	if err == nil {
		_, err = h.svc.UpdateDeviceType(r.Context(), id, upd)
	}
	if isUserError(err) {
		return h.redirect(w, r, "/devicetypes/"+url.PathEscape(id)+"/edit", "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/devicetypes", "notice", "Device type saved.")
}

// formGrace reads the rotation grace as the edit form has it, a duration ("7 days", "72h"), or
// in seconds as rotation_grace_seconds, the API's name for it; nil when the form has neither.
func formGrace(r *http.Request) (*int, error) {
	if _, ok := r.PostForm["rotation_grace"]; !ok {
		return formOptionalInt(r, "rotation_grace_seconds")
	}
	d, err := devreg.ParseDuration(r.PostFormValue("rotation_grace"))
	if err != nil {
		return nil, devreg.Errorf(devreg.EINVALID, "rotation grace: %s", devreg.ErrorMessage(err))
	}
	if d%time.Second != 0 || d < 0 || d > devreg.MaxRotationGraceSeconds*time.Second {
		return nil, devreg.Errorf(devreg.EINVALID, "rotation grace must be whole seconds from none to %s; %q is not", devreg.FormatDuration(devreg.MaxRotationGraceSeconds*time.Second), r.PostFormValue("rotation_grace"))
	}
	seconds := int(d / time.Second)
	return &seconds, nil
}

// deviceTypeUpdateForm reads the device type's edit form.
func deviceTypeUpdateForm(r *http.Request) (devreg.DeviceTypeUpdate, error) {
	min, err := formInt(r, "min_secret_length")
	if err != nil {
		return devreg.DeviceTypeUpdate{}, err
	}
	grace, err := formGrace(r)
	if err != nil {
		return devreg.DeviceTypeUpdate{}, err
	}
	rotations, err := formOptionalInt(r, "max_rotations_per_hour")
	if err != nil {
		return devreg.DeviceTypeUpdate{}, err
	}
	autoLimit, err := formOptionalInt(r, "auto_register_limit")
	if err != nil {
		return devreg.DeviceTypeUpdate{}, err
	}
	name, desc := r.PostFormValue("name"), r.PostFormValue("description")
	upd := devreg.DeviceTypeUpdate{Name: &name, Description: &desc, MinSecretLength: &min, MQTTPublish: formLines(r, "mqtt_publish"),
		MQTTSubscribe: formLines(r, "mqtt_subscribe"), RotationGraceSeconds: grace, MaxRotationsPerHour: rotations, AutoRegisterLimit: autoLimit}
	// The certificate settings travel together; an unticked checkbox sends nothing, so the
	// select's presence says the form had them.
	if _, ok := r.PostForm["certificate_id_field"]; ok {
		field, auto := r.PostFormValue("certificate_id_field"), r.PostFormValue("auto_register") == "on"
		upd.CertificateIDField, upd.AutoRegister = &field, &auto
	}
	return upd, nil
}

// formLines returns the non-blank lines of a textarea, trimmed; nil if the form has no such field.
func formLines(r *http.Request, name string) []string {
	if _, ok := r.PostForm[name]; !ok {
		return nil
	}
	lines := []string{}
	for l := range strings.Lines(r.PostFormValue(name)) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func (h *Handler) deleteDeviceType(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	err := h.svc.DeleteDeviceType(r.Context(), id)
	if devreg.ErrorCode(err) == devreg.ECONFLICT {
		return h.redirect(w, r, "/devicetypes/"+url.PathEscape(id)+"/edit", "error", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/devicetypes", "notice", "Device type deleted.")
}

// oneDevice is the single-device form as a registration source of one entry.
type oneDevice struct {
	entry devreg.DeviceEntry
	done  bool
}

func (o *oneDevice) Next() (devreg.DeviceEntry, error) {
	if o.done {
		return devreg.DeviceEntry{}, io.EOF
	}
	o.done = true
	return o.entry, nil
}

func (h *Handler) registerOne(w http.ResponseWriter, r *http.Request) error {
	typeID := r.PostFormValue("device_type_id")
	id := strings.TrimSpace(r.PostFormValue("device_id"))
	back := "/devices?device_type_id=" + url.QueryEscape(typeID)
	res, err := h.svc.Register(r.Context(), typeID, &oneDevice{entry: devreg.DeviceEntry{DeviceID: id, Secret: r.PostFormValue("secret")}}, devreg.RegisterOptions{})
	// A refusal goes back to the form with the ID as typed (never the secret) and says why there.
	refused := back + "&" + url.Values{"register_id": {id}}.Encode() + "#register"
	var e *devreg.Error
	if errors.As(err, &e) && len(e.Problems) > 0 {
		return h.redirect(w, r, refused, "form", fmt.Sprintf("%s was not registered: %s.", id, e.Problems[0].Message))
	}
	if isUserError(err) {
		return h.redirect(w, r, refused, "form", devreg.ErrorMessage(err))
	}
	if err != nil {
		return err
	}
	if res.Unchanged == 1 {
		return h.redirect(w, r, back, "notice", fmt.Sprintf("%s was already registered with this secret; nothing changed.", id))
	}
	return h.redirect(w, r, back, "notice", fmt.Sprintf("Device %s registered.", id))
}

func (h *Handler) uploadPage(w http.ResponseWriter, r *http.Request) error {
	types, _, err := h.types(r.Context())
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "upload", "Bulk Upload", "devices", struct {
		Types        []devreg.DeviceType
		DeviceTypeID string
	}{types, r.URL.Query().Get("device_type_id")})
}

type uploadResult struct {
	Filename     string
	DeviceTypeID string
	TypeName     string
	OnConflict   string // the form's options, for the download of all problems
	Credentials  string
	Result       devreg.RegisterResult
	Message      string
	Problems     []devreg.Problem
	ProblemCount int64
	Groups       []devreg.ProblemGroup
}

// uploadForm is the bulk upload form as the registration reads it.
type uploadForm struct {
	file *multipart.Part
	typ  devreg.DeviceType
	opts devreg.RegisterOptions
}

// readUploadForm reads the fields of a bulk upload form up to its file, which it leaves unread:
// the form's other fields come before the file, so nothing of the file is held in memory or on
// disk here.
func (h *Handler) readUploadForm(r *http.Request) (uploadForm, error) {
	var u uploadForm
	mr, err := r.MultipartReader()
	if err != nil {
		return u, devreg.Errorf(devreg.EBADREQUEST, "send the upload form as multipart/form-data")
	}
	fields := map[string]string{}
	var file *multipart.Part
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return u, reqbody.TooLarge(tooLarge)
		}
		if err != nil {
			return u, devreg.Errorf(devreg.EBADREQUEST, "the upload broke off: %v", err)
		}
		if part.FormName() == "file" {
			file = part
			break
		}
		v, err := io.ReadAll(io.LimitReader(part, 4096))
		if err != nil {
			return u, devreg.Errorf(devreg.EBADREQUEST, "the upload broke off: %v", err)
		}
		fields[part.FormName()] = string(v)
	}
	if file == nil {
		return u, devreg.Errorf(devreg.EBADREQUEST, "choose a file to upload")
	}
	typeID := fields["device_type_id"]
	if typeID == "" {
		return u, devreg.Errorf(devreg.EBADREQUEST, "the form must send device_type_id before the file; choose a device type and upload again")
	}
	if u.typ, err = h.svc.DeviceType(r.Context(), typeID); err != nil {
		return u, err
	}
	u.file = file
	u.opts = devreg.RegisterOptions{OnConflict: devreg.OnConflict(fields["on_conflict"]), Credentials: devreg.CredentialsOnReplace(fields["credentials"]),
		DryRun: fields["dry_run"] == "true", Filename: file.FileName(), BatchName: fields["batch_name"]}
	return u, nil
}

// upload streams the file part of a multipart form straight into a registration.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) error {
	u, err := h.readUploadForm(r)
	if err != nil {
		return err
	}
	out := uploadResult{Filename: registry.CleanFilename(u.file.FileName()), DeviceTypeID: u.typ.ID, TypeName: u.typ.Name,
		OnConflict: string(u.opts.OnConflict), Credentials: string(u.opts.Credentials)}
	out.Result, err = h.svc.Register(r.Context(), u.typ.ID, reqbody.Entries(bulkfile.NewReader(u.file)), u.opts)
	var e *devreg.Error
	status := http.StatusOK
	switch {
	case errors.As(err, &e) && len(e.Problems) > 0:
		out.Message, out.Problems, out.ProblemCount, out.Groups = e.Message, e.Problems, int64(e.ProblemCount), e.Groups
		status = devreg.Status(e.Code)
	case err != nil:
		return err
	}
	title := "Upload result"
	if len(out.Problems) > 0 {
		title = "Upload refused"
	}
	return h.render(w, r, status, "upload_result", title, "devices", out)
}

// uploadProblems checks a bulk upload form's file again, registering nothing, and answers every
// problem it has as a CSV file: the download on the page of a refused upload, which lists the
// first devreg.MaxProblems of them. The browser still holds the file, so it is sent again rather
// than kept here: no server keeps files between requests.
func (h *Handler) uploadProblems(w http.ResponseWriter, r *http.Request) error {
	u, err := h.readUploadForm(r)
	if err != nil {
		return err
	}
	problems, err := newProblemFile()
	if err != nil {
		return err
	}
	defer problems.Close()
	u.opts.DryRun, u.opts.Problems = true, problems.Add
	_, err = h.svc.Register(r.Context(), u.typ.ID, reqbody.Entries(bulkfile.NewReader(u.file)), u.opts)
	var e *devreg.Error
	if !errors.As(err, &e) || len(e.Problems) == 0 {
		if err != nil {
			return err
		}
		return h.redirect(w, r, "/devices/upload?device_type_id="+url.QueryEscape(u.typ.ID), "notice",
			"The file has no problems now; nothing was registered. Upload it to register its devices.")
	}
	name := strings.TrimSuffix(registry.CleanFilename(u.file.FileName()), ".csv")
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": "problems-" + cmp.Or(name, "upload") + ".csv"}))
	return problems.WriteCSV(w)
}

func (h *Handler) setDeviceStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	d, err := h.svc.SetDeviceStatus(r.Context(), id, devreg.DeviceStatus(r.PostFormValue("status")))
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/devices/"+url.PathEscape(id), "notice", fmt.Sprintf("Device %s is %s.", id, d.Status))
}

func (h *Handler) deleteDevicePage(w http.ResponseWriter, r *http.Request) error {
	d, err := h.svc.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "device_delete", "Delete "+d.DeviceID, "devices", struct{ DeviceID string }{d.DeviceID})
}

func (h *Handler) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := h.svc.DeleteDevice(r.Context(), id); err != nil {
		return err
	}
	return h.redirect(w, r, "/devices", "notice", fmt.Sprintf("Device %s deleted.", id))
}

// deleteBatchPage asks before a lot is deleted, naming how many devices go with it.
func (h *Handler) deleteBatchPage(w http.ResponseWriter, r *http.Request) error {
	b, err := h.svc.Batch(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	_, names, err := h.types(r.Context())
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "batch_delete", "Delete batch "+b.ID, "batches", batchData{Batch: b, TypeNames: names})
}

func (h *Handler) deleteBatch(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	n, err := h.svc.DeleteBatch(r.Context(), id)
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/batches", "notice", fmt.Sprintf("Batch %s deleted, with its %s devices.", id, devreg.Thousands(n)))
}

func (h *Handler) batchesPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	after, err := devreg.ParseCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	batches, next, err := h.svc.ListBatches(ctx, devreg.BatchFilter{DeviceTypeID: q.Get("device_type_id"), Limit: 50, After: after})
	if err != nil {
		return err
	}
	_, names, err := h.types(ctx)
	if err != nil {
		return err
	}
	nextURL := ""
	if !next.IsZero() {
		q.Set("cursor", next.String())
		nextURL = "/batches?" + q.Encode()
	}
	return h.render(w, r, http.StatusOK, "batches", "Batches", "batches", struct {
		Batches   []devreg.Batch
		TypeNames map[string]string
		NextURL   string
	}{batches, names, nextURL})
}

// batchData is what the batch page shows: the batch, and after a revocation of its devices'
// own credentials that left some devices as they were, what it did.
type batchData struct {
	Batch     devreg.Batch
	TypeNames map[string]string
	Revoked   *devreg.BatchRevocation
	MayChange bool // the user may disable, enable or delete the batch
}

func (h *Handler) batchPage(w http.ResponseWriter, r *http.Request) error {
	return h.renderBatch(w, r, r.PathValue("id"), nil)
}

func (h *Handler) renderBatch(w http.ResponseWriter, r *http.Request, id string, revoked *devreg.BatchRevocation) error {
	b, err := h.svc.Batch(r.Context(), id)
	if err != nil {
		return err
	}
	_, names, err := h.types(r.Context())
	if err != nil {
		return err
	}
	return h.render(w, r, http.StatusOK, "batch", "Batch "+b.ID, "batches", batchData{b, names, revoked, registry.MayChangeBatch(r.Context(), b)})
}

func (h *Handler) setBatchStatus(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	b, err := h.svc.SetBatchStatus(r.Context(), id, devreg.DeviceStatus(r.PostFormValue("status")))
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/batches/"+url.PathEscape(id), "notice", fmt.Sprintf("Batch %s is %s.", b.ID, b.Status))
}
