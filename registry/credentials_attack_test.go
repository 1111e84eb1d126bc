package registry

// Attacks on several credentials per device and device-initiated rotation, from an outside review:
// each reproduces a problem the review found (fixed since) or pins down a property that held.

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/store"
)

// pausingStore lets a test hold a credential change open inside its transaction, after the
// registry decided what to write and before the store writes it: the widest point of the window
// in which another writer may interleave.
type pausingStore struct {
	Store
	pause   atomic.Bool
	decided chan struct{} // receives once a paused change has decided
	release chan struct{} // closed to let the paused change write and commit
}

func (p *pausingStore) ChangeCredentials(ctx context.Context, accountID, deviceID string, decide func(devreg.DeviceAuth) (devreg.CredentialChange, error)) error {
	if !p.pause.Load() {
		return p.Store.ChangeCredentials(ctx, accountID, deviceID, decide)
	}
	return p.Store.ChangeCredentials(ctx, accountID, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		ch, err := decide(d)
		p.decided <- struct{}{}
		<-p.release
		return ch, err
	})
}

// attackEnv is a credEnv whose store can pause credential changes, and which knows its
// PostgreSQL database's URL (empty for SQLite).
type attackEnv struct {
	*credEnv
	ps    *pausingStore
	pgURL string
}

func newAttackEnv(t *testing.T, url string, grace int) *attackEnv {
	t.Helper()
	pgURL := ""
	if store.IsPostgres(url) {
		pgURL = url
	}
	var ps *pausingStore
	svc, _ := OpenTestService(t, url, func(db *store.DB) Store {
		ps = &pausingStore{Store: db, decided: make(chan struct{}, 1), release: make(chan struct{})}
		return ps
	})
	e := &credEnv{svc: svc}
	t0 := time.Now().UTC().Truncate(time.Second)
	e.now.Store(&t0)
	e.svc.Now = func() time.Time { return *e.now.Load() }
	a, _, err := e.svc.NewAccount(context.Background(), "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	e.acc = a.ID
	e.admin = devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	// These tests rotate far more than a device may in an hour; TestRotationLimit tests the limit.
	rotations := devreg.MaxRotationsPerHourLimit
	if e.dt, err = e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Sensor", RotationGraceSeconds: &grace, MaxRotationsPerHour: &rotations}); err != nil {
		t.Fatal(err)
	}
	e.register(t, devreg.ConflictFail, "d1", s1)
	return &attackEnv{credEnv: e, ps: ps, pgURL: pgURL}
}

// rotateAndUse rotates d1 from secret and logs in once with the new secret, so that the new
// credential counts as used. It returns the new secret.
func (e *attackEnv) rotateAndUse(t *testing.T, secret string) devreg.Rotation {
	t.Helper()
	e.advance(time.Second) // keep creation times apart: credentials are listed oldest first
	rot, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", secret)
	if err != nil {
		t.Fatalf("rotate: %v", err)
	}
	e.wantLogin(t, rot.Secret, "the rotated secret")
	return rot
}

// waitForBlockedWriter waits until another transaction waits for a row lock (PostgreSQL) or, on
// SQLite, gives the other writer a moment to line up behind the paused one.
func (e *attackEnv) waitForBlockedWriter(t *testing.T) {
	t.Helper()
	if e.pgURL == "" {
		time.Sleep(300 * time.Millisecond)
		return
	}
	db, err := sql.Open("pgx", e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Log("no writer was seen waiting for a lock; going on")
}

// raceWithReplace runs change (a credential change of d1, which the store pauses once it has
// decided) and a registration of d1 with on_conflict=replace and secret newSecret, so that the
// registration runs while the change holds its transaction open. It returns the registration's
// result and the change's error.
func (e *attackEnv) raceWithReplace(t *testing.T, newSecret string, change func() error) (devreg.RegisterResult, error) {
	t.Helper()
	e.advance(time.Second)
	e.ps.pause.Store(true)
	e.ps.release = make(chan struct{})
	changeErr := make(chan error, 1)
	go func() { changeErr <- change() }()
	select {
	case <-e.ps.decided:
	case err := <-changeErr:
		t.Fatalf("the change ended before it decided: %v", err)
	}
	e.ps.pause.Store(false)
	regDone := make(chan devreg.RegisterResult, 1)
	regErr := make(chan error, 1)
	go func() {
		res, err := e.svc.Register(e.admin, e.dt.ID, &pairs{list: []string{"d1", newSecret}}, devreg.RegisterOptions{OnConflict: devreg.ConflictReplace})
		regErr <- err
		regDone <- res
	}()
	e.waitForBlockedWriter(t)
	close(e.ps.release)
	cerr := <-changeErr
	if err := <-regErr; err != nil {
		t.Fatalf("replace: %v", err)
	}
	return <-regDone, cerr
}

// TestAttackReplaceRacingAddExceedsFive: an admin adds a credential while a registration
// with on_conflict=replace replaces the device. On PostgreSQL the replace does not lock the
// device's row until its last statement, so the credential change (which does lock it) decides
// on the credentials from before the replace and the replace deletes from a snapshot that lacks
// the new credential: the device ends with six credentials, and the API-made one survives the
// replace that should have removed it. SQLite serializes the two and passes.
func TestAttackReplaceRacingAddExceedsFive(t *testing.T) {
	pgtest.Each(t, testAttackReplaceRacingAdd)
}

func testAttackReplaceRacingAdd(t *testing.T, url string) {
	e := newAttackEnv(t, url, devreg.DefaultRotationGraceSeconds)
	// Device-made credentials D1..D4, all used; the registration's deleted, so that D1 takes
	// the device's row.
	r1 := e.rotateAndUse(t, s1)
	r2 := e.rotateAndUse(t, r1.Secret)
	r3 := e.rotateAndUse(t, r2.Secret)
	if err := e.svc.DeleteCredential(e.admin, "d1", e.credentials(t)[0].ID); err != nil {
		t.Fatal(err)
	}
	e.rotateAndUse(t, r3.Secret)
	if n := len(e.credentials(t)); n != 4 {
		t.Fatalf("setup: %d credentials, want 4", n)
	}
	var added devreg.Credential
	res, addErr := e.raceWithReplace(t, "new-factory-secret", func() error {
		var err error
		added, err = e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "api-added-secret"})
		return err
	})
	if addErr != nil || res.Replaced != 1 {
		t.Fatalf("add: %v; replace: %+v", addErr, res)
	}
	cs := e.credentials(t)
	if len(cs) > devreg.MaxCredentials {
		t.Errorf("the device has %d credentials, more than %d: %v", len(cs), devreg.MaxCredentials, ids(cs))
	}
	for _, c := range cs {
		if c.ID == added.ID {
			t.Errorf("credential %s (source %s), decided before the replace, survived it: a replace keeps only device-made credentials", c.ID, c.Source)
		}
	}
}

// TestAttackReplaceRacingDeleteResurrects: an admin deletes a leaked device-made credential
// that sits in the device's row while a registration with on_conflict=replace replaces the
// device. On PostgreSQL the replace copies the row's credential into the credentials table from
// its snapshot, before the delete commits, and then overwrites the row that the delete had
// handed to the next credential: the deleted secret works again, and the device's other
// device-made secret is gone (a device that rotated is locked out of it).
func TestAttackReplaceRacingDeleteResurrects(t *testing.T) {
	pgtest.Each(t, testAttackReplaceRacingDelete)
}

func testAttackReplaceRacingDelete(t *testing.T, url string) {
	e := newAttackEnv(t, url, devreg.DefaultRotationGraceSeconds)
	r1 := e.rotateAndUse(t, s1)
	r2 := e.rotateAndUse(t, r1.Secret)
	if err := e.svc.DeleteCredential(e.admin, "d1", e.credentials(t)[0].ID); err != nil { // D1 takes the row
		t.Fatal(err)
	}
	res, delErr := e.raceWithReplace(t, "new-factory-secret", func() error {
		return e.svc.DeleteCredential(e.admin, "d1", r1.CredentialID)
	})
	if delErr != nil || res.Replaced != 1 {
		t.Fatalf("delete: %v; replace: %+v", delErr, res)
	}
	if id, code := e.login(r1.Secret); code == "" {
		t.Errorf("the deleted credential %s authenticates again (as %s) after a replace that ran alongside its delete", r1.CredentialID, id)
	}
	if _, code := e.login(r2.Secret); code != "" {
		t.Errorf("the device-made credential %s, which a replace must keep, no longer authenticates: %s", r2.CredentialID, code)
	}
	e.wantLogin(t, "new-factory-secret", "the registered secret")
}

// TestAttackReplaceRacingRotationLosesGrace: a device rotates away from the device-made
// credential in its row while a replace runs. On PostgreSQL the replace copies the row's
// credential from before the rotation (without the grace's end) and then overwrites the row the
// rotation had just shortened: the secret the device rotated away from never expires.
func TestAttackReplaceRacingRotationLosesGrace(t *testing.T) {
	pgtest.Each(t, testAttackReplaceRacingRotation)
}

func testAttackReplaceRacingRotation(t *testing.T, url string) {
	e := newAttackEnv(t, url, 3600)
	r1 := e.rotateAndUse(t, s1)
	if err := e.svc.DeleteCredential(e.admin, "d1", e.credentials(t)[0].ID); err != nil { // D1 takes the row
		t.Fatal(err)
	}
	var rot devreg.Rotation
	res, rotErr := e.raceWithReplace(t, "new-factory-secret", func() error {
		var err error
		rot, err = e.svc.RotateCredential(context.Background(), e.acc, "d1", r1.Secret)
		return err
	})
	if rotErr != nil || res.Replaced != 1 {
		t.Fatalf("rotate: %v; replace: %+v", rotErr, res)
	}
	e.advance(2 * time.Hour)
	if _, code := e.login(r1.Secret); code == "" {
		t.Errorf("the secret rotated away from (grace 1h, previous_not_after %v) still authenticates 2h later", rot.PreviousNotAfter)
	}
	e.wantLogin(t, rot.Secret, "the rotated secret")
}

// TestAttackReplaceWithExpiredSecretIsUnchanged: a device rotated its factory secret (grace
// 0 here; 7 days by default), then was reset to factory state, and the maker registers it again
// with its factory secret and on_conflict=replace. The expired credential still stored with that
// secret makes the registration "unchanged": nothing is replaced, the answer reports success, and
// the device cannot log in with the secret it was just registered with. The same holds for a
// disabled credential's secret, and for a plain resend (on_conflict=fail) that reports
// "unchanged" for a secret that does not let the device in.
func TestAttackReplaceWithExpiredSecretIsUnchanged(t *testing.T) {
	pgtest.Each(t, testAttackReplaceWithExpiredSecret)
}

func testAttackReplaceWithExpiredSecret(t *testing.T, url string) {
	e := newAttackEnv(t, url, 0)
	if _, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", s1); err != nil {
		t.Fatal(err)
	}
	e.advance(time.Second)
	e.wantRefused(t, s1, "the factory secret after a rotation with no grace")
	res := e.register(t, devreg.ConflictReplace, "d1", s1)
	if _, code := e.login(s1); code != "" {
		t.Errorf("registered again with on_conflict=replace and its factory secret (%+v), the device cannot log in with it: %s", res, code)
	}

	// A disabled credential's secret: the admin disabled the second secret, then registers
	// the device with it on purpose.
	e.register(t, devreg.ConflictReplace, "d1", "registered-again-2")
	e.add(t, devreg.NewCredential{Secret: "api-secret-disabled"})
	cs := e.credentials(t)
	disabled := devreg.StatusDisabled
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cs[len(cs)-1].ID, devreg.CredentialUpdate{Status: &disabled}); err != nil {
		t.Fatal(err)
	}
	res = e.register(t, devreg.ConflictReplace, "d1", "api-secret-disabled")
	if _, code := e.login("api-secret-disabled"); code != "" {
		t.Errorf("registered with on_conflict=replace and the secret of a disabled credential (%+v), the device cannot log in with it: %s", res, code)
	}
}

// TestAttackRotationFromSupersededSecretMintsPermanentCredential: the README promises that
// rotation replaces the factory secret "by one that only the device and devreg know". But the
// factory secret keeps working for the grace (7 days by default) after the device rotated, and
// whoever holds it (the CSV file, the flashing station, a contract manufacturer) may rotate from
// it again in that time, even though the device plainly got its answer (its new credential has
// been used): that mints a credential of their own with no end, which also survives
// on_conflict=replace (source "device"). Only a lost answer (a never-used newer credential)
// needs a second rotation from the old secret.
//
// This is a weakness of the design the contract describes rather than a slip of the code; the
// test fails to show it.
func TestAttackRotationFromSupersededSecretMintsPermanentCredential(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		e := newAttackEnv(t, url, devreg.DefaultRotationGraceSeconds)
		e.rotateAndUse(t, s1) // the device's own rotation, answer received and used
		e.advance(time.Hour)
		stolen, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", s1) // the factory's copy
		if err != nil {
			return // refused: fixed
		}
		e.advance(30 * 24 * time.Hour)
		e.register(t, devreg.ConflictReplace, "d1", "re-provisioned-secret")
		if _, code := e.login(stolen.Secret); code == "" {
			t.Errorf("a holder of the factory secret rotated from it after the device's own rotation had been used, and " +
				"the credential it got still works 30 days later, after a replace")
		}
	})
}

// The unauthenticated rotation cannot pile credentials up, however it is flooded: parallel
// rotations with the factory secret leave the registration's and one new credential; and
// rotations whose new secret is used at once stop at five.
func TestAttackParallelRotationFlood(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		e := newAttackEnv(t, url, devreg.DefaultRotationGraceSeconds)
		var wg sync.WaitGroup
		var ok, conflict atomic.Int32
		for range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rot, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", s1)
				switch devreg.ErrorCode(err) {
				case "":
					ok.Add(1)
					// half of them use their secret at once
					if ok.Load()%2 == 0 {
						e.svc.AuthenticateDevice(context.Background(), e.acc, "d1", rot.Secret)
					}
				case devreg.ECONFLICT:
					conflict.Add(1)
				default:
					t.Errorf("rotation: %v", err)
				}
			}()
		}
		wg.Wait()
		if n := len(e.credentials(t)); n > devreg.MaxCredentials {
			t.Errorf("%d credentials after a flood of rotations", n)
		}
		if ok.Load() == 0 {
			t.Errorf("no rotation succeeded")
		}
		// Failed rotations each count once: nine wrong ones leave room for the right one (on a
		// device of its own: above, a login with a secret that a parallel rotation had already
		// deleted as never used may have counted as a failure).
		e.register(t, devreg.ConflictFail, "d2", "secret-of-d2")
		login2 := func(secret string) string {
			_, err := e.svc.AuthenticateDevice(context.Background(), e.acc, "d2", secret)
			return devreg.ErrorCode(err)
		}
		for range DeviceMaxFailures - 1 {
			if _, err := e.svc.RotateCredential(context.Background(), e.acc, "d2", "wrong-wrong-wrong"); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
				t.Fatalf("wrong rotation: %v", err)
			}
		}
		if code := login2("secret-of-d2"); code != "" {
			t.Errorf("login after %d wrong rotations: %s", DeviceMaxFailures-1, code)
		}
		if code := login2("wrong-wrong-wrong"); code != devreg.EUNAUTHORIZED {
			t.Errorf("the tenth failure: %s", code)
		}
		if code := login2("secret-of-d2"); code != devreg.ERATELIMITED {
			t.Errorf("after ten failures: %s, want rate limited", code)
		}
	})
}

// A device deleted while a credential change is open, then registered again: the change either
// fails or its credential goes with the device; nothing of the old device survives.
func TestAttackDeleteDeviceRacingAddNoResurrection(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) {
		e := newAttackEnv(t, url, devreg.DefaultRotationGraceSeconds)
		e.ps.pause.Store(true)
		addErr := make(chan error, 1)
		go func() {
			_, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "old-incarnation-secret"})
			addErr <- err
		}()
		<-e.ps.decided
		e.ps.pause.Store(false)
		delErr := make(chan error, 1)
		go func() { delErr <- e.svc.DeleteDevice(e.admin, "d1") }()
		e.waitForBlockedWriter(t)
		close(e.ps.release)
		if err := <-addErr; err != nil {
			t.Logf("add: %v", err)
		}
		if err := <-delErr; err != nil {
			t.Fatalf("delete: %v", err)
		}
		e.register(t, devreg.ConflictFail, "d1", "new-incarnation-secret")
		e.wantRefused(t, "old-incarnation-secret", "a secret added to the deleted device")
		e.wantRefused(t, s1, "the deleted device's secret")
		if cs := e.credentials(t); len(cs) != 1 {
			t.Errorf("registered again: %d credentials, want 1", len(cs))
		}
	})
}
