package storetest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/store"
)

func userEntry(action, id string) *devreg.AuditEntry {
	return &devreg.AuditEntry{Time: t0, Action: action, Actor: devreg.AuditActor{Type: devreg.ActorCLI, ID: "cli"},
		Object: devreg.AuditObject{Type: "user", ID: id}, Details: map[string]any{}}
}

// testUsers creates users with roles and one-time links, uses a link once, changes roles and
// removes a user, whose sessions end with it.
func testUsers(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "u")
	link := []byte("link-hash-of-dev")
	dev := devreg.User{ID: "usr_dev", AccountID: acc, Email: "dev@example.test", Role: devreg.RoleDeveloper, CreatedAt: t0.Add(time.Second)}
	noErr(t, db.CreateUser(ctx, dev, link, t0.Add(devreg.InvitationLifetime), userEntry("user.create", dev.ID)))
	if err := db.CreateUser(ctx, devreg.User{ID: "usr_x", AccountID: acc, Email: "DEV@example.test", Role: devreg.RoleAdmin, CreatedAt: t0}, nil, t0,
		userEntry("user.create", "usr_x")); err != nil {
		t.Errorf("a second user with another case of the email: %v (emails are normalised by the registry)", err)
	}
	if err := db.CreateUser(ctx, devreg.User{ID: "usr_y", AccountID: acc, Email: "dev@example.test", Role: devreg.RoleAdmin, CreatedAt: t0}, nil, t0,
		userEntry("user.create", "usr_y")); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("a second user with the same email: err = %v, want conflict", err)
	}
	users, err := db.ListUsers(ctx, acc)
	noErr(t, err)
	if len(users) != 3 || users[0].Role != devreg.RoleAdmin || users[2].ID != "usr_dev" || users[2].Role != devreg.RoleDeveloper || users[2].PasswordHash != "" {
		t.Fatalf("ListUsers = %+v", users)
	}

	// The link: not after it expires, once before.
	if _, err := db.UseLink(ctx, link, "hash1", t0.Add(devreg.InvitationLifetime), func(u devreg.User) *devreg.AuditEntry {
		return userEntry("user.password_set", u.ID)
	}); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("an expired link: err = %v, want not found", err)
	}
	if u, err := db.LinkUser(ctx, link, t0); err != nil || u.ID != "usr_dev" {
		t.Errorf("LinkUser = %+v, %v", u, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = db.UseLink(ctx, link, "hash1", t0.Add(time.Hour), func(u devreg.User) *devreg.AuditEntry {
				return userEntry("user.password_set", u.ID)
			})
		}()
	}
	wg.Wait()
	used := 0
	for _, err := range errs {
		if err == nil {
			used++
		} else if devreg.ErrorCode(err) != devreg.ENOTFOUND {
			t.Errorf("UseLink: %v", err)
		}
	}
	if used != 1 {
		t.Errorf("4 parallel uses of one link: %d succeeded, want 1", used)
	}
	if _, err := db.LinkUser(ctx, link, t0); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a used link: err = %v, want not found", err)
	}
	if u, err := db.UserByEmail(ctx, "dev@example.test"); err != nil || u.PasswordHash != "hash1" || u.Role != devreg.RoleDeveloper {
		t.Errorf("after the link: %+v, %v", u, err)
	}

	// A session reads the role as it is now; removing the user ends the session.
	session := []byte("session-of-dev")
	// A login that checked a password the user no longer has (reset or changed while it was
	// checked) gets no session.
	stale := []byte("session-of-a-stale-login")
	if err := db.CreateSession(ctx, stale, "usr_dev", "the hash before a reset", t0.Add(time.Hour), t0.Add(2*time.Hour)); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("a session for a password changed since: err = %v, want unauthorized", err)
	}
	if _, err := db.SessionUser(ctx, stale, t0.Add(time.Hour)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("the stale login's session: err = %v, want none", err)
	}
	noErr(t, db.CreateSession(ctx, session, "usr_dev", passwordOf(t, db, acc, "usr_dev"), t0.Add(time.Hour), t0.Add(2*time.Hour)))
	if u, err := db.SessionUser(ctx, session, t0.Add(time.Hour)); err != nil || u.Role != devreg.RoleDeveloper || u.LastLoginAt == nil || !u.LastLoginAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("SessionUser = %+v, %v", u, err)
	}
	_, err = db.ChangeUser(ctx, acc, "usr_dev", func(u devreg.User, admins int) (devreg.UserChange, error) {
		if admins != 2 {
			t.Errorf("admins = %d, want 2", admins)
		}
		return devreg.UserChange{Role: devreg.RoleOperations, Audit: userEntry("user.update", u.ID)}, nil
	})
	noErr(t, err)
	if u, err := db.SessionUser(ctx, session, t0.Add(time.Hour)); err != nil || u.Role != devreg.RoleOperations {
		t.Errorf("after the change of role, SessionUser = %+v, %v", u, err)
	}
	if k, found, err := db.CallerNow(ctx, acc, "", "usr_dev"); err != nil || !found || k.Scope != devreg.ScopeRegister {
		t.Errorf("CallerNow of the user = %+v, %v, %v; want its role's scope, register", k, found, err)
	}
	refused := errors.New("refused")
	if _, err := db.ChangeUser(ctx, acc, "usr_dev", func(devreg.User, int) (devreg.UserChange, error) { return devreg.UserChange{}, refused }); err != refused {
		t.Errorf("a refused change: %v", err)
	}
	if _, err := db.ChangeUser(ctx, acc, "usr_nobody", nil); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("no such user: %v", err)
	}
	other := newAccount(t, db, "other")
	if _, err := db.ChangeUser(ctx, other, "usr_dev", nil); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a user of another account: %v", err)
	}
	// A reset: a new link, the sessions end.
	_, err = db.ChangeUser(ctx, acc, "usr_dev", func(u devreg.User, _ int) (devreg.UserChange, error) {
		return devreg.UserChange{TokenHash: []byte("reset"), TokenExpires: t0.Add(3 * time.Hour), EndSessions: true, Audit: userEntry("user.password_reset", u.ID)}, nil
	})
	noErr(t, err)
	if _, err := db.SessionUser(ctx, session, t0.Add(time.Hour)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a reset user's session: err = %v, want not found", err)
	}
	if u, err := db.LinkUser(ctx, []byte("reset"), t0); err != nil || u.ID != "usr_dev" {
		t.Errorf("the reset link: %+v, %v", u, err)
	}
	noErr(t, db.CreateSession(ctx, session, "usr_dev", passwordOf(t, db, acc, "usr_dev"), t0.Add(time.Hour), t0.Add(2*time.Hour)))
	_, err = db.ChangeUser(ctx, acc, "usr_dev", func(u devreg.User, _ int) (devreg.UserChange, error) {
		return devreg.UserChange{Delete: true, Audit: userEntry("user.delete", u.ID)}, nil
	})
	noErr(t, err)
	if _, err := db.SessionUser(ctx, session, t0.Add(time.Hour)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a removed user's session: err = %v, want not found", err)
	}
	if _, err := db.User(ctx, acc, "usr_dev"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a removed user: err = %v, want not found", err)
	}
	want := []string{"user.delete", "user.password_reset", "user.update", "user.password_set", "user.create", "user.create"}
	if got := auditActions(t, db, acc); len(got) < len(want) || !equal(got[:len(want)], want) {
		t.Errorf("audit = %v, want %v first", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// testLastAdminUnderRace has two admins demote each other, and then remove each other, at once
// many times: the change decides on the admins as they are when it commits, so one admin always
// remains.
func testLastAdminUnderRace(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "race")
	second := devreg.User{ID: "usr_race2", AccountID: acc, Email: "race2@example.test", Role: devreg.RoleAdmin, PasswordHash: "x", CreatedAt: t0}
	noErr(t, db.CreateUser(ctx, second, nil, t0, userEntry("user.create", second.ID)))
	lastAdmin := errors.New("last admin")
	change := func(id string, ch devreg.UserChange) error {
		_, err := db.ChangeUser(ctx, acc, id, func(u devreg.User, admins int) (devreg.UserChange, error) {
			if u.Role == devreg.RoleAdmin && ch.Role != devreg.RoleAdmin && admins <= 1 {
				return ch, lastAdmin
			}
			ch.Audit = userEntry("user.update", id)
			return ch, nil
		})
		return err
	}
	for round := range 10 {
		ids := []string{"usr_race", "usr_race2"}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = change(id, devreg.UserChange{Role: devreg.RoleDeveloper})
			}()
		}
		wg.Wait()
		users, err := db.ListUsers(ctx, acc)
		noErr(t, err)
		admins := 0
		for _, u := range users {
			if u.Role == devreg.RoleAdmin {
				admins++
			}
		}
		if admins != 1 || (errs[0] == nil) == (errs[1] == nil) {
			t.Fatalf("round %d: two admins demoting each other at once: %d admins remain, errors %v", round, admins, errs)
		}
		// Make both admins again for the next round.
		for _, id := range ids {
			noErr(t, change(id, devreg.UserChange{Role: devreg.RoleAdmin}))
		}
	}
}

// passwordOf is the password hash user id of account acc has now, which a session is made for.
func passwordOf(t *testing.T, db *store.DB, acc, id string) string {
	t.Helper()
	u, err := db.User(context.Background(), acc, id)
	if err != nil {
		t.Fatal(err)
	}
	return u.PasswordHash
}
