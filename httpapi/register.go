package httpapi

import (
	"net/http"

	"devreg"
	"devreg/bulkfile"
	"devreg/devcert"
	"devreg/internal/reqbody"
	"devreg/semanifest"
)

func (h *Handler) registerDevices(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	opts := devreg.RegisterOptions{OnConflict: devreg.OnConflict(q.Get("on_conflict")), Credentials: devreg.CredentialsOnReplace(q.Get("credentials")),
		BatchName: q.Get("batch_name")}
	dryRun, err := queryBool(r, "dry_run")
	if err != nil {
		return err
	}
	opts.DryRun = dryRun != nil && *dryRun
	var src devreg.EntrySource
	switch mt := mediaType(r); mt {
	case "application/json":
		src = bulkfile.NewJSONReader(r.Body)
	case "text/csv":
		src = reqbody.Entries(bulkfile.NewReader(r.Body))
	case semanifest.ContentType:
		signer, err := manifestSigner(r)
		if err != nil {
			return err
		}
		dt, err := h.svc.DeviceType(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		if src, err = newManifestEntries(r.Body, signer, devcert.IDField(dt.IDField())); err != nil {
			return err
		}
		opts.Filename = signerNote(signer)
	default:
		return devreg.Errorf(devreg.EUNSUPPORTED, "send the devices as 'Content-Type: application/json', as the bulk upload file with 'Content-Type: text/csv', "+
			"or as a Microchip Trust&GO manifest with 'Content-Type: %s'; the body was %q", semanifest.ContentType, mt)
	}
	// Server-Timing tells where a big request's time went: read (receive, parse, check, hash),
	// wait (for the store), then lock, insert or lookup or stage, check, write and commit.
	ctx, timings := devreg.NewContextWithTimings(r.Context())
	res, err := h.svc.Register(ctx, r.PathValue("id"), src, opts)
	if t := timings.Header(); t != "" {
		w.Header().Set("Server-Timing", t)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, res)
}
