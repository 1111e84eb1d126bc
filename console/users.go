package console

import (
	"net/http"
	"net/url"
	"strconv"

	"devreg"
	"devreg/registry"
)

// usersData is what the Users page shows: the account's users, and a one-time link made by the
// post it answers (an invitation or a reset), shown this once.
type usersData struct {
	Users   []devreg.User
	Roles   []devreg.Role
	Me      string // the user's own ID
	NewLink string
	LinkFor string // the email the link is for
}

func (h *Handler) usersPage(w http.ResponseWriter, r *http.Request) error {
	return h.renderUsers(w, r, "", "")
}

func (h *Handler) renderUsers(w http.ResponseWriter, r *http.Request, link, email string) error {
	users, err := h.svc.ListUsers(r.Context())
	if err != nil {
		return err
	}
	c, _ := devreg.CallerFromContext(r.Context())
	if link != "" {
		w.Header().Set("Cache-Control", "no-store")
	}
	return h.render(w, r, http.StatusOK, "users", "Users", "users", usersData{Users: users, Roles: devreg.Roles, Me: c.UserID, NewLink: link, LinkFor: email})
}

// createUser shows the invitation link on the answer to the post itself: only its hash is
// stored, so a redirect could not show it.
func (h *Handler) createUser(w http.ResponseWriter, r *http.Request) error {
	u, link, err := h.svc.CreateUser(r.Context(), registry.NewUser{Email: r.PostFormValue("email"), Role: devreg.Role(r.PostFormValue("role"))})
	if err != nil {
		return err
	}
	return h.renderUsers(w, r, link, u.Email)
}

func (h *Handler) setUserRole(w http.ResponseWriter, r *http.Request) error {
	role := devreg.Role(r.PostFormValue("role"))
	u, _, err := h.svc.UpdateUser(r.Context(), r.PathValue("id"), registry.UserUpdate{Role: &role})
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/users", "notice", u.Email+" is now "+string(u.Role)+".")
}

func (h *Handler) resetUser(w http.ResponseWriter, r *http.Request) error {
	u, link, err := h.svc.UpdateUser(r.Context(), r.PathValue("id"), registry.UserUpdate{ResetPassword: true})
	if err != nil {
		return err
	}
	return h.renderUsers(w, r, link, u.Email)
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteUser(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	return h.redirect(w, r, "/users", "notice", "The user is removed; its sessions have ended.")
}

type invitationData struct {
	Token, Email, Error string
	Reset               bool // the link resets a password rather than inviting
}

// invitationPage shows the form that sets a password from a one-time link; a link that is not
// valid gets a page that says why and what to do.
func (h *Handler) invitationPage(w http.ResponseWriter, r *http.Request) error {
	token := r.URL.Query().Get("token")
	u, err := h.svc.LinkUser(r.Context(), token)
	if err != nil {
		return h.badLink(w, r, err)
	}
	w.Header().Set("Cache-Control", "no-store")
	return h.render(w, r, http.StatusOK, "invitation", "Set your password", "", invitationData{Token: token, Email: u.Email, Reset: u.PasswordHash != ""})
}

func (h *Handler) acceptInvitation(w http.ResponseWriter, r *http.Request) error {
	token, password := r.PostFormValue("token"), r.PostFormValue("password")
	if password != r.PostFormValue("password2") {
		return h.render(w, r, http.StatusUnprocessableEntity, "invitation", "Set your password", "",
			invitationData{Token: token, Email: r.PostFormValue("email"), Error: "The two passwords differ; type the same one twice."})
	}
	u, err := h.svc.UseLink(r.Context(), token, password)
	if devreg.ErrorCode(err) == devreg.EINVALID {
		return h.render(w, r, http.StatusUnprocessableEntity, "invitation", "Set your password", "",
			invitationData{Token: token, Email: r.PostFormValue("email"), Error: devreg.ErrorMessage(err)})
	}
	if err != nil {
		return h.badLink(w, r, err)
	}
	return h.redirect(w, r, "/login?email="+url.QueryEscape(u.Email), "notice", "Your password is set. Log in with it.")
}

// badLink answers a one-time link that is not valid with a page that says so and what to do;
// other errors go to the error page as usual.
func (h *Handler) badLink(w http.ResponseWriter, r *http.Request, err error) error {
	if devreg.ErrorCode(err) != devreg.ENOTFOUND {
		return err
	}
	data := struct{ Heading, Message, Next, NextLabel, RequestID string }{
		Heading: "This link does not work", Message: devreg.ErrorMessage(err), Next: "/login", NextLabel: "Log in",
	}
	return h.render(w, r, http.StatusNotFound, "error", data.Heading, "", data)
}

func (h *Handler) passwordPage(w http.ResponseWriter, r *http.Request) error {
	return h.render(w, r, http.StatusOK, "password", "Change password", "", struct{ Error string }{})
}

func (h *Handler) changePassword(w http.ResponseWriter, r *http.Request) error {
	fail := func(err error) error {
		return h.render(w, r, devreg.Status(devreg.ErrorCode(err)), "password", "Change password", "", struct{ Error string }{devreg.ErrorMessage(err)})
	}
	if r.PostFormValue("password") != r.PostFormValue("password2") {
		return fail(devreg.Errorf(devreg.EINVALID, "the two new passwords differ; type the same one twice"))
	}
	session, _ := r.Cookie(sessionCookie)
	err := h.svc.ChangePassword(r.Context(), session.Value, r.PostFormValue("current"), r.PostFormValue("password"))
	switch devreg.ErrorCode(err) {
	case devreg.EINVALID, devreg.ERATELIMITED, devreg.EUNAVAILABLE:
		if wait, ok := devreg.RetryAfter(err); ok {
			w.Header().Set("Retry-After", strconv.Itoa(devreg.RetryAfterSeconds(wait)))
		}
		return fail(err)
	}
	if err != nil {
		return err
	}
	return h.redirect(w, r, "/devices", "notice", "Your password is changed; your other sessions have ended.")
}
