// Package reqbody explains failures to read a streamed request body in the domain's terms, for
// the adapters that stream registrations (the Operations API and the console's bulk upload).
package reqbody

import (
	"errors"
	"io"
	"net/http"

	"devreg"
)

// TooLarge is the error for a body over the server's limit.
func TooLarge(e *http.MaxBytesError) error {
	return devreg.Errorf(devreg.ETOOLARGE, "request body is larger than this server takes (%d bytes, set by --max-body); split it into several requests", e.Limit)
}

// Entries wraps an entry source that reads a request body so that a body over the server's limit
// reads as ETOOLARGE and a broken upload as EBADREQUEST.
func Entries(src devreg.EntrySource) devreg.EntrySource { return entries{src} }

type entries struct{ src devreg.EntrySource }

func (b entries) Next() (devreg.DeviceEntry, error) {
	e, err := b.src.Next()
	if err == nil || errors.Is(err, io.EOF) {
		return e, err
	}
	var tooLarge *http.MaxBytesError // escapes to the heap: only once the body ends
	switch {
	case errors.As(err, &tooLarge):
		return e, TooLarge(tooLarge)
	case devreg.ErrorCode(err) != devreg.EINTERNAL:
		return e, err
	default:
		return e, devreg.Errorf(devreg.EBADREQUEST, "the upload broke off before its end: %v", err)
	}
}
