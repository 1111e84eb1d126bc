package httpapi

import (
	"net/http"

	"devreg"
	"devreg/registry"
)

// userCreated is the answer of POST /users: the user, and its invitation link, shown this once.
type userCreated struct {
	devreg.User
	InvitationURL string `json:"invitation_url"`
}

// userUpdated is the answer of PATCH /users/{id}: the user, and after a reset its new one-time
// link, shown this once.
type userUpdated struct {
	devreg.User
	InvitationURL string `json:"invitation_url,omitempty"`
}

func (h *Handler) createUser(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Email string      `json:"email"`
		Role  devreg.Role `json:"role"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	u, link, err := h.svc.CreateUser(r.Context(), registry.NewUser{Email: in.Email, Role: in.Role})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store") // the only copy of the link
	return writeJSON(w, http.StatusCreated, userCreated{u, link})
}

func (h *Handler) listUsers(w http.ResponseWriter, r *http.Request) error {
	users, err := h.svc.ListUsers(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Users []devreg.User `json:"users"`
	}{users})
}

func (h *Handler) updateUser(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Role          *devreg.Role `json:"role"`
		ResetPassword bool         `json:"reset_password"`
	}
	if err := decodeJSON(r, &in); err != nil {
		return err
	}
	u, link, err := h.svc.UpdateUser(r.Context(), r.PathValue("id"), registry.UserUpdate{Role: in.Role, ResetPassword: in.ResetPassword})
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, userUpdated{u, link})
}

func (h *Handler) deleteUser(w http.ResponseWriter, r *http.Request) error {
	if err := h.svc.DeleteUser(r.Context(), r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
