package registry

import (
	"context"
	"fmt"
	"net/mail"
	"net/url"
	"time"

	"devreg"
	"devreg/credential"
)

// minPasswordLength is the shortest console password, as for an account's owner.
const minPasswordLength = 8

// Link throttle: guesses of one-time links from one client address. A link holds 256 random
// bits, so guessing cannot succeed; the throttle bounds what guessing costs the server.
const (
	linkMaxFailures = 10
	linkWindow      = 15 * time.Minute
)

// NewUser is what CreateUser needs. Password, when set (the command line), is the user's
// password at once, and no link is made.
type NewUser struct {
	Email    string
	Role     devreg.Role
	Password string
}

// UserUpdate is a change of a user: a new role, and/or a forced reset of its password.
type UserUpdate struct {
	Role          *devreg.Role
	ResetPassword bool
}

// checkEmail normalises and checks a user's email.
func checkEmail(email string) (string, error) {
	email = devreg.NormalizeEmail(email)
	if err := checkName("email", email, 1, 320); err != nil { // the console shows it as a name
		return "", err
	}
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email {
		return "", devreg.Errorf(devreg.EINVALID, "email %q is not an email address", email)
	}
	return email, nil
}

func checkPassword(password string) error {
	if len(password) < minPasswordLength {
		return devreg.Errorf(devreg.EINVALID, "password must be at least %d characters long", minPasswordLength)
	}
	if len(password) > 1024 {
		return devreg.Errorf(devreg.EINVALID, "password must be at most 1024 bytes long")
	}
	return nil
}

func checkRole(r devreg.Role) error {
	if !r.Valid() {
		return devreg.Errorf(devreg.EINVALID, "role %q is not one of %s", r, devreg.RoleNames())
	}
	return nil
}

// newLink makes a one-time link: the token, which only the link holds, its hash, which the
// store keeps, and the link itself.
func (s *Service) newLink() (hash []byte, link string) {
	token := credential.RandomString(43)
	return hashToken(token), s.PublicURL + "/invitation?token=" + url.QueryEscape(token)
}

// CreateUser adds a user with a role to the caller's account (admin only) and returns it with
// its one-time invitation link, valid for devreg.InvitationLifetime, which sets its password;
// the link is shown this once. With nu.Password (the command line) there is no link.
func (s *Service) CreateUser(ctx context.Context, nu NewUser) (devreg.User, string, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.User{}, "", err
	}
	email, err := checkEmail(nu.Email)
	if err != nil {
		return devreg.User{}, "", err
	}
	if err := checkRole(nu.Role); err != nil {
		return devreg.User{}, "", err
	}
	now := s.now()
	u := devreg.User{ID: credential.RandomID("usr", 16), AccountID: c.AccountID, Email: email, Role: nu.Role, CreatedAt: now}
	var hash []byte
	var link string
	if nu.Password != "" {
		if err := checkPassword(nu.Password); err != nil {
			return devreg.User{}, "", err
		}
		u.PasswordHash = s.HashPassword(nu.Password)
	} else {
		hash, link = s.newLink()
	}
	e := s.auditEntry(ctx, actorOf(c), "user.create", devreg.AuditObject{Type: "user", ID: u.ID},
		map[string]any{"email": email, "role": string(u.Role), "invited": link != ""})
	if err := s.store.CreateUser(ctx, u, hash, now.Add(devreg.InvitationLifetime), e); err != nil {
		return devreg.User{}, "", err
	}
	return u, link, nil
}

// ListUsers returns the users of the caller's account (admin only), oldest first.
func (s *Service) ListUsers(ctx context.Context) ([]devreg.User, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return nil, err
	}
	return s.store.ListUsers(ctx, c.AccountID)
}

// lastAdmin refuses a change that would leave the account without an admin: decided on the
// account's users as the store holds them locked, so two admins demoting or removing each other
// at once cannot both succeed.
func lastAdmin(u devreg.User, admins int, what string) error {
	if u.Role == devreg.RoleAdmin && admins <= 1 {
		return devreg.Errorf(devreg.ECONFLICT, "%s is the account's last admin and cannot be %s; make another user admin first", u.Email, what)
	}
	return nil
}

// UpdateUser changes a user's role and/or forces a reset of its password (admin only): a reset
// ends the user's sessions and its password, and returns a new one-time link, shown this once.
// The account's last admin cannot be demoted.
func (s *Service) UpdateUser(ctx context.Context, id string, up UserUpdate) (devreg.User, string, error) {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return devreg.User{}, "", err
	}
	if !opaqueID(id) {
		return devreg.User{}, "", notFound("user", id)
	}
	if up.Role == nil && !up.ResetPassword {
		return devreg.User{}, "", devreg.Errorf(devreg.EINVALID, "nothing to change: send role and/or reset_password")
	}
	if up.Role != nil {
		if err := checkRole(*up.Role); err != nil {
			return devreg.User{}, "", err
		}
	}
	var link string
	u, err := s.store.ChangeUser(ctx, c.AccountID, id, func(u devreg.User, admins int) (devreg.UserChange, error) {
		var ch devreg.UserChange
		details := map[string]any{}
		action := "user.update"
		if up.Role != nil && *up.Role != u.Role {
			if *up.Role != devreg.RoleAdmin {
				if err := lastAdmin(u, admins, "made "+string(*up.Role)); err != nil {
					return ch, err
				}
			}
			ch.Role = *up.Role
			details["role"] = map[string]any{"old": string(u.Role), "new": string(ch.Role)}
			// A demoted user's sessions end at once (every server reads them from the database):
			// it logs in again to work with what it may now do. A promotion keeps them.
			ch.EndSessions = !ch.Role.Scope().Allows(u.Role.Scope())
		}
		if up.ResetPassword {
			var hash []byte
			hash, link = s.newLink()
			// The old password must not work while the link waits: "" matches no password.
			ch.TokenHash, ch.TokenExpires, ch.EndSessions, ch.PasswordHash = hash, s.now().Add(devreg.InvitationLifetime), true, noPassword
			details["reset_password"] = true
			if ch.Role == "" {
				action = "user.password_reset"
			}
		}
		if ch.Role == "" && !up.ResetPassword {
			return ch, errNoUserChange
		}
		details["email"] = u.Email
		ch.Audit = s.auditEntry(ctx, actorOf(c), action, devreg.AuditObject{Type: "user", ID: u.ID}, details)
		return ch, nil
	})
	if err == errNoUserChange {
		u, err = s.store.User(ctx, c.AccountID, id)
	}
	return u, link, err
}

// noPassword is the hash of a user whose password a reset ended: no password matches it (as for
// an invited user, whose hash is ""), and unlike "" it tells the store to write it.
const noPassword = "-"

// errNoUserChange tells UpdateUser that a change changed nothing, which is not recorded.
var errNoUserChange = devreg.Errorf(devreg.ECONFLICT, "nothing changed")

// DeleteUser removes a user of the caller's account (admin only); its sessions end at once, on
// every server. The account's last admin cannot be removed.
func (s *Service) DeleteUser(ctx context.Context, id string) error {
	c, err := authorize(ctx, devreg.ScopeAdmin)
	if err != nil {
		return err
	}
	if !opaqueID(id) {
		return notFound("user", id)
	}
	_, err = s.store.ChangeUser(ctx, c.AccountID, id, func(u devreg.User, admins int) (devreg.UserChange, error) {
		if err := lastAdmin(u, admins, "removed"); err != nil {
			return devreg.UserChange{}, err
		}
		return devreg.UserChange{Delete: true, Audit: s.auditEntry(ctx, actorOf(c), "user.delete", devreg.AuditObject{Type: "user", ID: u.ID},
			map[string]any{"email": u.Email, "role": string(u.Role)})}, nil
	})
	return err
}

// CLICaller is the caller the command line acts as on an account, offline on the server's data.
func CLICaller(accountID string) devreg.Caller {
	return devreg.Caller{AccountID: accountID, Scope: devreg.ScopeAdmin, Name: cliActor.Name, Source: devreg.SourceCLI}
}

// ResetPassword sets the password of the user with email (the command line, for an owner locked
// out of the console), ending its sessions and any link it had.
func (s *Service) ResetPassword(ctx context.Context, email, password string) (devreg.User, error) {
	if err := checkPassword(password); err != nil {
		return devreg.User{}, err
	}
	u, err := s.store.UserByEmail(ctx, devreg.NormalizeEmail(email))
	if err != nil {
		return u, err
	}
	hash := s.HashPassword(password)
	return s.store.ChangeUser(ctx, u.AccountID, u.ID, func(u devreg.User, _ int) (devreg.UserChange, error) {
		return devreg.UserChange{PasswordHash: hash, EndSessions: true,
			Audit: s.auditEntry(ctx, cliActor, "user.password_reset", devreg.AuditObject{Type: "user", ID: u.ID}, map[string]any{"email": u.Email})}, nil
	})
}

// throttleLink counts a use of a one-time link from the client's address before the link is
// looked up, as Login counts a login; it returns the throttle key and window, for the attempt
// to be given back when the link was good.
func (s *Service) throttleLink(ctx context.Context) (string, time.Time, error) {
	now := s.now()
	key := "link:" + throttleKey(devreg.ClientIPFromContext(ctx))
	attempts, since, err := s.store.ReserveAttempt(ctx, key, now, linkWindow)
	if err != nil {
		return "", since, err
	}
	if attempts > linkMaxFailures {
		wait := min(since.Add(linkWindow).Sub(now), linkWindow)
		return "", since, &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait,
			Message: fmt.Sprintf("too many links that were not valid from your address; try again in %s", max(wait.Round(time.Minute), time.Minute))}
	}
	return key, since, nil
}

// errBadLink answers a link that is not (or no longer) valid.
func errBadLink() error {
	return devreg.Errorf(devreg.ENOTFOUND, "this link is not valid: it was used already, it has expired (links last %s), or it was mistyped; ask an admin of your account for a new one",
		devreg.InvitationLifetime)
}

// LinkUser returns the user a one-time link (its token) is for, while it is valid. Failures are
// throttled per client address.
func (s *Service) LinkUser(ctx context.Context, token string) (devreg.User, error) {
	key, since, err := s.throttleLink(ctx)
	if err != nil {
		return devreg.User{}, err
	}
	u, err := s.store.LinkUser(ctx, hashToken(token), s.now())
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return u, errBadLink()
	}
	if err != nil {
		return u, s.unchecked(ctx, key, since, err)
	}
	return u, s.releaseAttempt(ctx, key, since)
}

// UseLink sets the password of the user a one-time link is for and ends the link (and the
// user's sessions): a link works once. Failures are throttled per client address.
func (s *Service) UseLink(ctx context.Context, token, password string) (devreg.User, error) {
	if err := checkPassword(password); err != nil {
		return devreg.User{}, err
	}
	key, since, err := s.throttleLink(ctx)
	if err != nil {
		return devreg.User{}, err
	}
	hash := s.HashPassword(password)
	u, err := s.store.UseLink(ctx, hashToken(token), hash, s.now(), func(u devreg.User) *devreg.AuditEntry {
		return s.auditEntry(ctx, devreg.AuditActor{Type: devreg.ActorUser, ID: u.ID, Name: u.Email}, "user.password_set",
			devreg.AuditObject{Type: "user", ID: u.ID}, nil)
	})
	if devreg.ErrorCode(err) == devreg.ENOTFOUND {
		return u, errBadLink()
	}
	if err != nil {
		return u, s.unchecked(ctx, key, since, err)
	}
	return u, s.releaseAttempt(ctx, key, since)
}

// ChangePassword changes the password of the console user of ctx, who must give its current
// one; its other sessions end, the one of sessionToken stays. Wrong current passwords count
// against the user's login throttle.
func (s *Service) ChangePassword(ctx context.Context, sessionToken, current, password string) error {
	c, ok := devreg.CallerFromContext(ctx)
	if !ok || c.Source != devreg.SourceConsole {
		return devreg.Errorf(devreg.EFORBIDDEN, "only a console user changes its password; an admin can force a reset of another user's")
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	u, err := s.store.User(ctx, c.AccountID, c.UserID)
	if err != nil {
		return err
	}
	now := s.now()
	key := "login:" + throttleKey(u.Email)
	attempts, since, err := s.store.ReserveAttempt(ctx, key, now, loginWindow)
	if err != nil {
		return err
	}
	if attempts > loginMaxFailures {
		wait := min(since.Add(loginWindow).Sub(now), loginWindow)
		return &devreg.Error{Code: devreg.ERATELIMITED, RetryAfter: wait,
			Message: fmt.Sprintf("too many wrong passwords for %s; try again in %s", u.Email, max(wait.Round(time.Minute), time.Minute))}
	}
	ok, err = s.checkPasswordInSlot(ctx, func() string { return u.PasswordHash }, current)
	if err != nil {
		return s.unchecked(ctx, key, since, err)
	}
	if !ok {
		return devreg.Errorf(devreg.EINVALID, "the current password is wrong")
	}
	if err := s.releaseAttempt(ctx, key, since); err != nil {
		return err
	}
	hash := s.HashPassword(password)
	_, err = s.store.ChangeUser(ctx, c.AccountID, c.UserID, func(u devreg.User, _ int) (devreg.UserChange, error) {
		return devreg.UserChange{PasswordHash: hash, EndSessions: true, KeepSession: hashToken(sessionToken),
			Audit: s.auditEntry(ctx, actorOf(c), "user.password_change", devreg.AuditObject{Type: "user", ID: u.ID}, nil)}, nil
	})
	return err
}
