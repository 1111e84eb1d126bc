// Package apitest checks HTTP traffic against the Operations API's OpenAPI document, for tests:
// a transport that validates every request and response it carries, so that handlers and the
// document cannot drift apart unnoticed.
package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"devreg/httpapi"
)

func init() {
	// The bulk upload format is not a rectangular table, which kin-openapi's default text/csv
	// decoder expects, and the audit export's NDJSON is no single JSON value; the document
	// describes both as strings.
	asString := func(r io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(r)
		return string(b), err
	}
	openapi3filter.RegisterBodyDecoder("text/csv", asString)
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", asString)
}

type invalidKey struct{}

// Invalid marks a request as deliberately breaking the document (to test refusals): its request
// is not validated, its response still is.
func Invalid(ctx context.Context) context.Context { return context.WithValue(ctx, invalidKey{}, true) }

// Transport validates the API traffic it carries against the OpenAPI document and records every
// response body, so tests can also check what never appears in one (such as a secret).
type Transport struct {
	Base   http.RoundTripper
	router routers.Router

	mu        sync.Mutex
	failures  []string
	Responses [][]byte
}

// NewTransport returns a transport over base (http.DefaultTransport when nil) that validates the
// traffic to the server at serverURL (such as http://127.0.0.1:8080).
func NewTransport(base http.RoundTripper, serverURL string) (*Transport, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	doc, err := httpapi.Spec()
	if err != nil {
		return nil, err
	}
	doc.Servers = openapi3.Servers{{URL: strings.TrimRight(serverURL, "/") + "/api/v1"}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &Transport{Base: base, router: router}, nil
}

// Failures returns what did not match the document.
func (t *Transport) Failures() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.failures...)
}

func (t *Transport) fail(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures = append(t.failures, fmt.Sprintf(format, args...))
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") || req.URL.Path == "/api/v1/openapi.json" {
		return t.Base.RoundTrip(req)
	}
	name := req.Method + " " + req.URL.Path
	route, params, err := t.router.FindRoute(req)
	if err != nil {
		if req.Context().Value(invalidKey{}) == nil {
			t.fail("%s: not in the OpenAPI document: %v", name, err)
		}
		return t.Base.RoundTrip(req)
	}
	opts := &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if req.Context().Value(invalidKey{}) == nil {
		var body []byte
		if req.Body != nil && req.ContentLength >= 0 && req.ContentLength < 8<<20 {
			body, _ = io.ReadAll(req.Body)
			req.Body.Close()
			req.Body = io.NopCloser(bytes.NewReader(body))
			clone := req.Clone(req.Context())
			clone.Body = io.NopCloser(bytes.NewReader(body))
			in.Request = clone
		} else {
			opts.ExcludeRequestBody = true
		}
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			t.fail("%s: request does not match the document: %v", name, err)
		}
		in.Request = req
	}
	resp, err := t.Base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	t.mu.Lock()
	t.Responses = append(t.Responses, body)
	t.mu.Unlock()
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	rin.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), rin); err != nil {
		t.fail("%s → %d: response does not match the document: %v", name, resp.StatusCode, err)
	}
	return resp, nil
}
