// Command openapijson writes the Operations API's OpenAPI document to stdout exactly as the server
// serves it at /api/v1/openapi.json, so that make lint checks the served JSON, not the YAML source.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"

	"devreg/httpapi"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "openapijson:", err)
		os.Exit(1)
	}
}

func run(out io.Writer) error {
	// The document route needs no service: it answers before any call reaches the registry.
	h, err := httpapi.New(nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	h.Register(mux)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	if rec.Code != http.StatusOK {
		return fmt.Errorf("GET /api/v1/openapi.json answered %d: %s", rec.Code, rec.Body)
	}
	_, err = out.Write(rec.Body.Bytes())
	return err
}
