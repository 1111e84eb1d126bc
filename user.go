package devreg

import (
	"strings"
	"time"
)

// Role is what a console user may do in its account. Each role is one of the API key scopes, so
// that one check (Scope.Allows in the registry) decides for users and keys alike.
type Role string

// The roles, Cirrent's meanings: an admin does everything, operations define device types and
// register devices, a developer reads.
const (
	RoleAdmin      Role = "admin"
	RoleOperations Role = "operations"
	RoleDeveloper  Role = "developer"
)

// Roles lists the roles from most to least powerful.
var Roles = []Role{RoleAdmin, RoleOperations, RoleDeveloper}

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r.Scope() != "" }

// Scope is the scope a user of role r acts with; "" for an unknown role.
func (r Role) Scope() Scope {
	switch r {
	case RoleAdmin:
		return ScopeAdmin
	case RoleOperations:
		return ScopeRegister
	case RoleDeveloper:
		return ScopeRead
	}
	return ""
}

// RoleOf is the least powerful role whose scope allows what needs scope need; "" if none does.
func RoleOf(need Scope) Role {
	for i := len(Roles) - 1; i >= 0; i-- {
		if Roles[i].Scope().Allows(need) {
			return Roles[i]
		}
	}
	return ""
}

// RoleNames is the roles as a refusal lists them: "admin, operations or developer".
func RoleNames() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// InvitationLifetime is how long an invitation or password reset link may be used (once).
const InvitationLifetime = 72 * time.Hour

// UserChange is what a change of a user does, decided by the registry with the user and its
// account's admins read and locked by the store, and written by the store in the same
// transaction.
type UserChange struct {
	Role   Role // the new role; "" keeps it
	Delete bool // remove the user (and its sessions)
	// TokenHash, when set, replaces the user's one-time link (invitation or reset) with one that
	// expires at TokenExpires; PasswordHash, when set, is the user's new password.
	TokenHash    []byte
	TokenExpires time.Time
	PasswordHash string
	// EndSessions ends the user's console sessions, on every server: a removed user's, a demoted
	// one's (its next request would run with the new role anyway), a reset one's. KeepSession,
	// when set, is the hash of a session that stays (the one changing its own password).
	EndSessions bool
	KeepSession []byte
	Audit       *AuditEntry
}
