// Package console is devreg's web console: server-rendered pages to define device types,
// register single devices, bulk-upload a CSV file of devices, browse devices by type and manage
// their credentials, batches and API keys, and read and export the audit log. Templates and static
// assets are embedded; plain forms work without JavaScript.
package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"devreg"
	"devreg/internal/authn"
	"devreg/internal/respond"
	"devreg/registry"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Handler serves the console.
type Handler struct {
	svc          *registry.Service
	log          *slog.Logger
	auth         *authn.Authenticator // console users are never rate-limited: no limiter
	pages        map[string]*template.Template
	secureCookie bool
	once         *onceStore // secrets made by a post, waiting for the page it redirects to
}

// Config configures the console.
type Config struct {
	// SecureCookies marks cookies Secure; set it when clients reach the server over HTTPS.
	SecureCookies bool
}

// New returns the console over svc, with every template parsed once.
func New(svc *registry.Service, log *slog.Logger, cfg Config) (*Handler, error) {
	funcs := template.FuncMap{
		"date": func(t any) string {
			switch v := t.(type) {
			case time.Time:
				return v.UTC().Format("2006-01-02 15:04 UTC")
			case *time.Time:
				if v != nil {
					return v.UTC().Format("2006-01-02 15:04 UTC")
				}
			}
			return ""
		},
		"seconds": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
		"ago":     func(t any) template.HTML { return relativeTime(svc.Now(), t) },
		"count": func(n any) string {
			switch v := n.(type) {
			case int:
				return devreg.Thousands(int64(v))
			case int64:
				return devreg.Thousands(v)
			}
			return fmt.Sprint(n)
		},
		// ordinal counts an entry from 1, as lines are counted; the API's index counts from 0.
		"ordinal": func(i int) int { return i + 1 },
		"grace":   graceText,
		"lines":   func(l []string) string { return strings.Join(l, "\n") },
		"typeName": func(names map[string]string, id string) string {
			if n, ok := names[id]; ok {
				return n
			}
			return id
		},
	}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	h := &Handler{svc: svc, log: log, pages: map[string]*template.Template{}, secureCookie: cfg.SecureCookies, auth: authn.New(svc, nil),
		once: newOnceStore(time.Now)}
	for _, name := range names {
		page := strings.TrimSuffix(strings.TrimPrefix(name, "templates/"), ".html")
		if page == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, name)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		h.pages[page] = t
	}
	return h, nil
}

// Pages lists the names of the console's page templates, for tests that render each of them.
func (h *Handler) Pages() []string {
	var names []string
	for n := range h.pages {
		names = append(names, n)
	}
	return names
}

// Register adds the console's routes to mux, behind cross-origin protection for every form post.
func (h *Handler) Register(mux *http.ServeMux) {
	protect := http.NewCrossOriginProtection()
	protect.SetDenyHandler(h.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return devreg.Errorf(devreg.EFORBIDDEN, "this form was sent from another site, so it was refused to protect your account; open devreg yourself and send the form from there")
	}))
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") { // no listings of the assets
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	open := func(pattern string, fn handlerFunc) { mux.Handle(pattern, protect.Handler(h.wrap(smallForm(fn)))) }
	auth := func(pattern string, fn handlerFunc) {
		mux.Handle(pattern, protect.Handler(h.wrap(h.authenticated(smallForm(fn)))))
	}

	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/devices", http.StatusFound) })
	open("GET /login", h.loginPage)
	open("POST /login", h.login)
	open("POST /logout", h.logout)
	auth("GET /devicetypes", h.deviceTypesPage)
	auth("POST /devicetypes", h.createDeviceType)
	auth("GET /devicetypes/{id}/edit", h.editDeviceTypePage)
	auth("POST /devicetypes/{id}", h.updateDeviceType)
	auth("POST /devicetypes/{id}/delete", h.deleteDeviceType)
	auth("GET /devicetypes/{id}/cas", h.trustedCAsPage)
	auth("POST /devicetypes/{id}/cas", h.addTrustedCA)
	auth("POST /devicetypes/{id}/cas/{ca_id}/delete", h.deleteTrustedCA)
	auth("GET /devicetypes/{id}/enrollment_groups", h.enrollmentGroupsPage)
	auth("POST /devicetypes/{id}/enrollment_groups", h.createEnrollmentGroup)
	auth("POST /devicetypes/{id}/enrollment_groups/{group_id}/status", h.setEnrollmentGroupStatus)
	auth("POST /devicetypes/{id}/enrollment_groups/{group_id}/keys", h.rotateEnrollmentKey)
	auth("POST /devicetypes/{id}/enrollment_groups/{group_id}/delete", h.deleteEnrollmentGroup)
	auth("GET /devices", h.devicesPage)
	auth("POST /devices", h.registerOne)
	auth("GET /devices/upload", h.uploadPage)
	auth("GET /devices/export.csv", h.exportDevices)
	auth("POST /devices/bulk", h.bulkDevices)
	// The bulk upload and the download of its problems stream their own multipart bodies; they
	// are the forms that carry a file.
	mux.Handle("POST /devices/upload", protect.Handler(h.wrap(h.authenticated(h.upload))))
	mux.Handle("POST /devices/upload/problems", protect.Handler(h.wrap(h.authenticated(h.uploadProblems))))
	auth("GET /devices/{id}", h.devicePage)
	auth("POST /devices/{id}/status", h.setDeviceStatus)
	auth("POST /devices/{id}/credentials", h.addCredential)
	auth("GET /devices/{id}/credentials/new", h.newCredentialPage)
	auth("POST /devices/{id}/credentials/{cred}/status", h.setCredentialStatus)
	auth("POST /devices/{id}/credentials/{cred}/delete", h.deleteCredential)
	auth("POST /devices/{id}/credentials/revoke", h.revokeCredentials)
	auth("GET /devices/{id}/delete", h.deleteDevicePage)
	auth("POST /devices/{id}/delete", h.deleteDevice)
	auth("GET /batches", h.batchesPage)
	auth("GET /batches/{id}", h.batchPage)
	auth("POST /batches/{id}/status", h.setBatchStatus)
	auth("GET /batches/{id}/delete", h.deleteBatchPage)
	auth("POST /batches/{id}/delete", h.deleteBatch)
	auth("POST /batches/{id}/credentials/revoke", h.revokeBatchCredentials)
	auth("GET /apikeys", h.apiKeysPage)
	auth("POST /apikeys", h.createAPIKey)
	auth("GET /apikeys/{id}/edit", h.editAPIKeyPage)
	auth("POST /apikeys/{id}", h.updateAPIKey)
	auth("POST /apikeys/{id}/delete", h.deleteAPIKey)
	auth("GET /audit", h.auditPage)
	auth("GET /audit/export", h.exportAudit)
	auth("GET /webhooks", h.webhooksPage)
	auth("POST /webhooks", h.createWebhook)
	auth("GET /webhooks/{id}", h.webhookPage)
	auth("POST /webhooks/{id}/enabled", h.setWebhookEnabled)
	auth("POST /webhooks/{id}/test", h.testWebhook)
	auth("POST /webhooks/{id}/delete", h.deleteWebhook)
	auth("GET /users", h.usersPage)
	auth("POST /users", h.createUser)
	auth("POST /users/{id}/role", h.setUserRole)
	auth("POST /users/{id}/reset", h.resetUser)
	auth("POST /users/{id}/delete", h.deleteUser)
	auth("GET /account/password", h.passwordPage)
	auth("POST /account/password", h.changePassword)
	open("GET /invitation", h.invitationPage)
	open("POST /invitation", h.acceptInvitation)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// maxForm bounds the body of a console form that carries no file.
const maxForm = 64 << 10

// smallForm parses the form of a post before fn sees it: only URL-encoded, and at most maxForm
// bytes. net/http would otherwise parse any multipart body that comes, spooling its files to the
// temporary folder, for forms that never take a file.
func smallForm(fn handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodPost {
			return fn(w, r)
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" && mt != "" {
			return devreg.Errorf(devreg.EUNSUPPORTED, "this form must be sent as application/x-www-form-urlencoded, as devreg's own page sends it")
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return devreg.Errorf(devreg.ETOOLARGE, "the form is larger than %d KiB; shorten what you entered", maxForm>>10)
			}
			return devreg.Errorf(devreg.EBADREQUEST, "the form could not be read: %v", err)
		}
		return fn(w, r)
	}
}

// page is what every template gets.
type page struct {
	Name  string // the template's name, on <body data-page>, so a browser test knows which page it sees
	Title string
	Nav   string
	User  string
	// Role is the user's role, so that a page shows only what the role may do (the service
	// refuses the rest regardless).
	Role  devreg.Role
	Flash *flash
	Data  any
}

type flash struct {
	Kind string // "notice", "error", or "form": an error the page shows at its form
	Text string
}

const (
	sessionCookie = authn.SessionCookie
	flashCookie   = "devreg_flash"
)

// render writes a page with the layout. It renders into a buffer first, so that a template
// error becomes an error page rather than half a page.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, data any) error {
	return h.renderFlash(w, r, status, name, title, nav, data, nil)
}

// renderFlash is render with a message of its own, fl, in place of one a redirect left.
func (h *Handler) renderFlash(w http.ResponseWriter, r *http.Request, status int, name, title, nav string, data any, fl *flash) error {
	t, ok := h.pages[name]
	if !ok {
		return fmt.Errorf("no page template %q", name)
	}
	if fl == nil {
		fl = h.takeFlash(w, r)
	}
	p := page{Name: name, Title: title, Nav: nav, Data: data, Flash: fl}
	if c, ok := devreg.CallerFromContext(r.Context()); ok {
		p.User, p.Role = c.Name, devreg.RoleOf(c.Scope)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

// redirect answers a form post by sending the browser on to path with a message to show there.
func (h *Handler) redirect(w http.ResponseWriter, r *http.Request, path, kind, text string) error {
	if text != "" {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(kind + ":" + text), Path: "/",
			HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.secureCookie, MaxAge: 60})
	}
	http.Redirect(w, r, path, http.StatusSeeOther)
	return nil
}

func (h *Handler) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	c, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.secureCookie})
	v, err := url.QueryUnescape(c.Value)
	if err != nil {
		return nil
	}
	kind, text, ok := strings.Cut(v, ":")
	if !ok || (kind != "notice" && kind != "error" && kind != "form") {
		return nil
	}
	return &flash{Kind: kind, Text: text}
}

// wrap runs fn and renders the error it returns as a page.
func (h *Handler) wrap(fn handlerFunc) http.Handler {
	return respond.Handler(h.log, respond.HandlerFunc(fn), h.renderError)
}

// renderError renders err as a friendly page: what went wrong and where to go next, with the
// status of its code, never a Go error string (internal errors are logged with the request ID
// instead). A page that needs a login sends the browser to the login form.
func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, err error) {
	code := devreg.ErrorCode(err)
	if code == devreg.EUNAUTHORIZED && r.Method == http.MethodGet {
		http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	id := devreg.RequestIDFromContext(r.Context())
	data := struct{ Heading, Message, Next, NextLabel, RequestID string }{
		Heading: "That did not work", Message: devreg.ErrorMessage(err), Next: "/devices", NextLabel: "Back to devices",
	}
	if ref := r.Referer(); ref != "" && sameOrigin(ref, r) {
		data.Next, data.NextLabel = ref, "Go back and try again"
	}
	switch code {
	case devreg.ENOTFOUND:
		data.Heading, data.Next, data.NextLabel = "Not found", "/devices", "Back to devices"
		data.Message += ". It may have been deleted, or it belongs to another account."
	case devreg.EUNAUTHORIZED:
		data.Heading, data.Next, data.NextLabel = "Please log in", "/login", "Log in"
	case devreg.EFORBIDDEN:
		data.Heading = "Not allowed"
	case devreg.ETOOLARGE:
		data.Heading = "Too large"
	case devreg.ERATELIMITED, devreg.EUNAVAILABLE:
		data.Heading = "Please wait a moment"
	}
	if wait, ok := devreg.RetryAfter(err); ok {
		w.Header().Set("Retry-After", strconv.Itoa(devreg.RetryAfterSeconds(wait)))
	}
	status := devreg.Status(code)
	if status == http.StatusInternalServerError {
		respond.LogInternal(h.log, r, err)
		data.Heading, data.Next, data.NextLabel = "Something went wrong", "/devices", "Back to devices"
		data.Message, data.RequestID = "The server ran into a problem and logged it. Try again in a moment; if it keeps happening, tell your devreg operator the request ID below.", id
	}
	if rerr := h.render(w, r, status, "error", data.Heading, "", data); rerr != nil {
		h.log.ErrorContext(r.Context(), "render error page", "request_id", id, "err", rerr)
		http.Error(w, "internal error", http.StatusInternalServerError)
	}
}

func sameOrigin(ref string, r *http.Request) bool {
	u, err := url.Parse(ref)
	return err == nil && u.Host == r.Host
}

// authenticated runs fn for the user whose session cookie the request carries.
func (h *Handler) authenticated(fn handlerFunc) handlerFunc {
	return handlerFunc(h.auth.Wrap(sessionDoor, respond.HandlerFunc(fn)))
}

// sessionDoor lets in console users, by their session cookie.
var sessionDoor = authn.Door{Methods: authn.Session, Missing: "please log in"}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request) error {
	return h.render(w, r, http.StatusOK, "login", "Log in", "", loginData{Next: safeNext(r.URL.Query().Get("next")), Email: r.URL.Query().Get("email")})
}

type loginData struct{ Email, Next, Error string }

func (h *Handler) login(w http.ResponseWriter, r *http.Request) error {
	email, next := r.PostFormValue("email"), safeNext(r.PostFormValue("next"))
	token, err := h.svc.Login(r.Context(), email, r.PostFormValue("password"))
	// A refused login shows the form again, with why, so the person can simply try again.
	switch code := devreg.ErrorCode(err); code {
	case devreg.EUNAUTHORIZED, devreg.ERATELIMITED, devreg.EUNAVAILABLE:
		if wait, ok := devreg.RetryAfter(err); ok {
			w.Header().Set("Retry-After", strconv.Itoa(devreg.RetryAfterSeconds(wait)))
		}
		return h.render(w, r, devreg.Status(code), "login", "Log in", "", loginData{Email: email, Next: next, Error: devreg.ErrorMessage(err)})
	}
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: h.secureCookie || r.TLS != nil, MaxAge: int(registry.SessionLifetime / time.Second)})
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// safeNext keeps a post-login destination on this site: a clean local path (one leading slash,
// no backslash, no control or non-ASCII characters, nothing that path cleaning or a browser would
// turn into another host), else the devices page.
func safeNext(next string) string {
	const fallback = "/devices"
	for _, c := range next {
		if c < 0x21 || c > 0x7e || c == '\\' {
			return fallback
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || u.Fragment != "" {
		return fallback
	}
	p := u.Path // decoded: %5C and %09 are a backslash and a tab here
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") {
		return fallback
	}
	for _, c := range p {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return fallback
		}
	}
	clean := path.Clean(p)
	if strings.HasPrefix(clean, "//") {
		return fallback
	}
	return (&url.URL{Path: clean, RawQuery: u.RawQuery}).String()
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) error {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := h.svc.Logout(r.Context(), c.Value); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: h.secureCookie})
	return h.redirect(w, r, "/login", "notice", "You are logged out.")
}

// types returns the account's device types, and a map from their IDs to their names.
func (h *Handler) types(ctx context.Context) ([]devreg.DeviceType, map[string]string, error) {
	types, err := h.svc.ListDeviceTypes(ctx)
	names := map[string]string{}
	for _, t := range types {
		names[t.ID] = t.Name
	}
	return types, names, err
}
