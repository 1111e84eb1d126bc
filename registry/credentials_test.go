package registry

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
)

// credEnv is a service with an injected clock, an account, a device type and one device, d1,
// registered with secret s1.
type credEnv struct {
	svc   *Service
	admin context.Context
	acc   string
	dt    devreg.DeviceType
	now   atomic.Pointer[time.Time]
}

const s1 = "first-secret-1"

func newCredEnv(t *testing.T, url string, grace int) *credEnv {
	t.Helper()
	svc, _ := OpenTestService(t, url)
	e := &credEnv{svc: svc}
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
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
	return e
}

func (e *credEnv) advance(d time.Duration) {
	t := e.now.Load().Add(d)
	e.now.Store(&t)
}

type pairs struct {
	list []string
	i    int
}

func (p *pairs) Next() (devreg.DeviceEntry, error) {
	if p.i >= len(p.list) {
		return devreg.DeviceEntry{}, io.EOF
	}
	e := devreg.DeviceEntry{Index: p.i / 2, DeviceID: p.list[p.i], Secret: p.list[p.i+1]}
	p.i += 2
	return e, nil
}

func (e *credEnv) register(t *testing.T, onConflict devreg.OnConflict, idsAndSecrets ...string) devreg.RegisterResult {
	t.Helper()
	res, err := e.svc.Register(e.admin, e.dt.ID, &pairs{list: idsAndSecrets}, devreg.RegisterOptions{OnConflict: onConflict})
	if err != nil {
		t.Fatalf("register %v: %v", idsAndSecrets, err)
	}
	return res
}

// login authenticates d1 with secret and returns the credential used, or the error code.
func (e *credEnv) login(secret string) (string, string) {
	dev, err := e.svc.AuthenticateDevice(context.Background(), e.acc, "d1", secret)
	return dev.CredentialID, devreg.ErrorCode(err)
}

func (e *credEnv) wantLogin(t *testing.T, secret, what string) string {
	t.Helper()
	id, code := e.login(secret)
	if code != "" {
		t.Fatalf("%s: login refused (%s)", what, code)
	}
	return id
}

func (e *credEnv) wantRefused(t *testing.T, secret, what string) {
	t.Helper()
	if id, code := e.login(secret); code != devreg.EUNAUTHORIZED {
		t.Fatalf("%s: login = %q, %q; want refused", what, id, code)
	}
}

func (e *credEnv) credentials(t *testing.T) []devreg.Credential {
	t.Helper()
	c, err := e.svc.ListCredentials(e.admin, "d1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *credEnv) add(t *testing.T, nc devreg.NewCredential) devreg.Credential {
	t.Helper()
	c, err := e.svc.AddCredential(e.admin, "d1", nc)
	if err != nil {
		t.Fatalf("add credential: %v", err)
	}
	return c
}

func ids(cs []devreg.Credential) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// Two credentials both let the device in, each named in what the login returns, and the one
// used shows when it was used.
func TestTwoCredentials(t *testing.T) { pgtest.Each(t, testTwoCredentials) }

func testTwoCredentials(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	first := e.credentials(t)
	if len(first) != 1 || first[0].Source != devreg.CredentialFromRegistration || first[0].LastUsedAt != nil || first[0].Secret != "" {
		t.Fatalf("a registered device's credentials: %+v", first)
	}
	second := e.add(t, devreg.NewCredential{Secret: "second-secret-2"})
	if second.Secret != "" || second.Source != devreg.CredentialFromAPI {
		t.Errorf("added credential %+v: no secret expected back, source api", second)
	}
	if id := e.wantLogin(t, s1, "first secret"); id != first[0].ID {
		t.Errorf("first secret logged in with %s, want %s", id, first[0].ID)
	}
	e.advance(time.Minute)
	if id := e.wantLogin(t, "second-secret-2", "second secret"); id != second.ID {
		t.Errorf("second secret logged in with %s, want %s", id, second.ID)
	}
	e.wantRefused(t, "third-secret-3", "a secret of no credential")
	got := e.credentials(t)
	if len(got) != 2 || got[0].LastUsedAt == nil || got[1].LastUsedAt == nil || !got[1].LastUsedAt.Equal(*e.now.Load()) {
		t.Errorf("credentials after both were used: %+v", got)
	}
	// Later uses are written in batches.
	e.advance(time.Minute)
	e.wantLogin(t, "second-secret-2", "second secret again")
	e.svc.flushSeen()
	if got := e.credentials(t); got[1].LastUsedAt == nil || !got[1].LastUsedAt.Equal(*e.now.Load()) {
		t.Errorf("last use after a second login: %v, want %v", got[1].LastUsedAt, *e.now.Load())
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "second-secret-2"}); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("adding a secret the device has already: %v, want conflict", err)
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "short"}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("adding a secret that breaks the policy: %v, want invalid", err)
	}
	if _, err := e.svc.AddCredential(e.admin, "nope", devreg.NewCredential{Secret: "long-enough-secret"}); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("adding to an unknown device: %v, want not found", err)
	}
}

// A credential works only inside its window.
func TestCredentialWindows(t *testing.T) { pgtest.Each(t, testCredentialWindows) }

func testCredentialWindows(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	now := *e.now.Load()
	later, soon := now.Add(time.Hour), now.Add(10*time.Minute)
	e.add(t, devreg.NewCredential{Secret: "future-secret-1", NotBefore: &later})
	e.add(t, devreg.NewCredential{Secret: "ending-secret-2", NotAfter: &soon})
	e.wantRefused(t, "future-secret-1", "not_before in the future")
	e.wantLogin(t, "ending-secret-2", "inside the window")
	e.advance(10 * time.Minute)
	e.wantRefused(t, "ending-secret-2", "not_after passed")
	e.advance(50 * time.Minute)
	e.wantLogin(t, "future-secret-1", "not_before reached")
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "backwards-secret", NotBefore: &later, NotAfter: &now}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("a window that ends before it starts: %v, want invalid", err)
	}
	// Expired credentials go when one is added, and do not count toward the five.
	if got := len(e.credentials(t)); got != 3 {
		t.Fatalf("%d credentials before adding, want 3", got)
	}
	e.add(t, devreg.NewCredential{Generate: true})
	for _, c := range e.credentials(t) {
		if c.NotAfter != nil && c.NotAfter.Equal(soon) {
			t.Errorf("expired credential %s is still there after one was added", c.ID)
		}
	}
	// A window can be changed, and removed.
	cs := e.credentials(t)
	past := e.now.Load().Add(-time.Second)
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cs[0].ID, devreg.CredentialUpdate{SetNotAfter: true, NotAfter: &past}); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, s1, "not_after moved into the past")
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cs[0].ID, devreg.CredentialUpdate{SetNotAfter: true}); err != nil {
		t.Fatal(err)
	}
	e.wantLogin(t, s1, "not_after removed")
}

// A new secret rolled out: once it is in use, the old one is disabled and stops working.
func TestDisableOldCredential(t *testing.T) { pgtest.Each(t, testDisableOldCredential) }

func testDisableOldCredential(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	old := e.credentials(t)[0]
	e.add(t, devreg.NewCredential{Secret: "new-secret-of-d1"})
	tokenCred := e.wantLogin(t, "new-secret-of-d1", "new secret")
	oldTokenCred := e.wantLogin(t, s1, "old secret")
	disabled, enabled := devreg.StatusDisabled, devreg.StatusEnabled
	got, err := e.svc.UpdateCredential(e.admin, "d1", old.ID, devreg.CredentialUpdate{Status: &disabled})
	if err != nil || got.Status != disabled {
		t.Fatalf("disable the old credential: %+v, %v", got, err)
	}
	e.wantRefused(t, s1, "disabled credential")
	e.wantLogin(t, "new-secret-of-d1", "new secret after the old one was disabled")
	if ok, _ := tokenActive(t, e.svc, e.admin, e.acc, "d1", oldTokenCred); ok {
		t.Errorf("a token of the disabled credential is still active")
	}
	if _, err := e.svc.VerifyDeviceToken(context.Background(), issueToken(t, e.svc, e.acc, "d1", oldTokenCred)); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("check-in with a token of the disabled credential: %v", err)
	}
	if ok, _ := tokenActive(t, e.svc, e.admin, e.acc, "d1", tokenCred); !ok {
		t.Errorf("a token of the new credential is not active")
	}
	// The new one is now the only enabled one: it can be neither disabled nor deleted.
	cs := e.credentials(t)
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cs[1].ID, devreg.CredentialUpdate{Status: &disabled}); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("disabling the last enabled credential: %v, want conflict", err)
	}
	if err := e.svc.DeleteCredential(e.admin, "d1", cs[1].ID); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("deleting the last enabled credential: %v, want conflict", err)
	}
	past, future := e.now.Load().Add(-time.Second), e.now.Load().Add(time.Hour)
	for name, u := range map[string]devreg.CredentialUpdate{
		"ending the window of":    {SetNotAfter: true, NotAfter: &past},
		"postponing the start of": {SetNotBefore: true, NotBefore: &future},
	} {
		if _, err := e.svc.UpdateCredential(e.admin, "d1", cs[1].ID, u); devreg.ErrorCode(err) != devreg.ECONFLICT {
			t.Errorf("%s the only valid credential: %v, want conflict", name, err)
		}
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "already-ended-secret", NotAfter: &past}); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("adding a credential whose window has ended: %v, want invalid", err)
	}
	if _, err := e.svc.UpdateCredential(e.admin, "d1", old.ID, devreg.CredentialUpdate{Status: &enabled}); err != nil {
		t.Fatal(err)
	}
	e.wantLogin(t, s1, "old secret enabled again")
}

// At most five credentials; the last one stays; deleting the registered one leaves the others
// working, and a token of a deleted credential ends.
func TestCredentialLimits(t *testing.T) { pgtest.Each(t, testCredentialLimits) }

func testCredentialLimits(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	secrets := []string{s1, "secret-number-2", "secret-number-3", "secret-number-4", "secret-number-5"}
	for _, s := range secrets[1:] {
		e.advance(time.Second) // listed oldest first
		e.add(t, devreg.NewCredential{Secret: s})
	}
	if _, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Secret: "secret-number-6"}); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Fatalf("a sixth credential: %v, want conflict", err)
	}
	e.wantRefused(t, "secret-number-6", "the refused sixth secret")
	tokenCred := e.wantLogin(t, s1, "registered secret")
	cs := e.credentials(t)
	if len(cs) != 5 || cs[0].ID != tokenCred {
		t.Fatalf("credentials: %v, first should be %s", ids(cs), tokenCred)
	}
	for i, c := range cs[:4] {
		if err := e.svc.DeleteCredential(e.admin, "d1", c.ID); err != nil {
			t.Fatalf("delete credential %d: %v", i, err)
		}
		e.wantRefused(t, secrets[i], "a deleted credential")
		for _, s := range secrets[i+1:] {
			e.wantLogin(t, s, "a credential left after deleting another")
		}
	}
	if ok, _ := tokenActive(t, e.svc, e.admin, e.acc, "d1", tokenCred); ok {
		t.Errorf("a token of the deleted credential is still active")
	}
	last := e.credentials(t)
	if len(last) != 1 || last[0].ID != cs[4].ID {
		t.Fatalf("left: %v, want %s", ids(last), cs[4].ID)
	}
	if err := e.svc.DeleteCredential(e.admin, "d1", last[0].ID); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("deleting the last credential: %v, want conflict", err)
	}
	if err := e.svc.DeleteCredential(e.admin, "d1", "cr_nosuch"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("deleting an unknown credential: %v, want not found", err)
	}
	// The one left (now in the device's row) keeps its ID, and the device may be registered
	// again with it.
	if res := e.register(t, devreg.ConflictFail, "d1", secrets[4]); res.Unchanged != 1 {
		t.Errorf("resend with the only secret left: %+v, want unchanged", res)
	}
}

// A resend with any of the device's secrets is unchanged; with another it is a conflict.
func TestResendWithAnyCredential(t *testing.T) { pgtest.Each(t, testResendWithAnyCredential) }

func testResendWithAnyCredential(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	e.add(t, devreg.NewCredential{Secret: "second-secret-2"})
	for _, s := range []string{s1, "second-secret-2"} {
		if res := e.register(t, devreg.ConflictFail, "d1", s, "d2", "secret-of-d2"); res.Unchanged < 1 || res.Created+res.Unchanged != 2 {
			t.Errorf("resend with %s: %+v, want d1 unchanged", s, res)
		}
	}
	_, err := e.svc.Register(e.admin, e.dt.ID, &pairs{list: []string{"d1", "third-secret-3"}}, devreg.RegisterOptions{})
	if devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("resend with a secret of no credential: %v, want conflict", err)
	}
}

// on_conflict=replace leaves the registered credential and the ones the device made itself.
func TestReplaceKeepsDeviceCredentials(t *testing.T) {
	pgtest.Each(t, testReplaceKeepsDeviceCredentials)
}

func testReplaceKeepsDeviceCredentials(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	e.register(t, devreg.ConflictFail, "d2", "secret-of-d2")
	e.add(t, devreg.NewCredential{Secret: "api-secret-of-d1"})
	rot, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", s1)
	if err != nil {
		t.Fatal(err)
	}
	// d2's device-made credential takes the row's place once its registered one is deleted.
	rot2, err := e.svc.RotateCredential(context.Background(), e.acc, "d2", "secret-of-d2")
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := e.svc.ListCredentials(e.admin, "d2")
	if err := e.svc.DeleteCredential(e.admin, "d2", c2[0].ID); err != nil {
		t.Fatal(err)
	}
	e.advance(time.Minute)
	res := e.register(t, devreg.ConflictReplace, "d1", "factory-secret-again", "d2", "factory-secret-d2")
	if res.Replaced != 2 {
		t.Fatalf("replace: %+v", res)
	}
	e.wantRefused(t, s1, "the replaced registered secret")
	e.wantRefused(t, "api-secret-of-d1", "a replaced credential added through the API")
	e.wantLogin(t, rot.Secret, "the device-made secret after replace")
	e.wantLogin(t, "factory-secret-again", "the newly registered secret")
	for _, s := range []string{rot2.Secret, "factory-secret-d2"} {
		if _, err := e.svc.AuthenticateDevice(context.Background(), e.acc, "d2", s); err != nil {
			t.Errorf("d2 after replace with %q: %v", s, err)
		}
	}
	for _, dev := range []string{"d1", "d2"} {
		cs, _ := e.svc.ListCredentials(e.admin, dev)
		if len(cs) != 2 || cs[0].Source != devreg.CredentialFromDevice || cs[1].Source != devreg.CredentialFromRegistration {
			t.Errorf("%s after replace: %+v, want its device-made credential and the registered one", dev, cs)
		}
	}
}

// A device rotates its secret: the new one works at once, the old one until the grace ends.
func TestRotation(t *testing.T) { pgtest.Each(t, testRotation) }

func testRotation(t *testing.T, url string) {
	e := newCredEnv(t, url, 3600)
	ctx := context.Background()
	before := e.credentials(t)[0]
	rot, err := e.svc.RotateCredential(ctx, e.acc, "d1", s1)
	if err != nil {
		t.Fatal(err)
	}
	now := *e.now.Load()
	if len(rot.Secret) < 24 || rot.PreviousCredentialID != before.ID || !rot.PreviousNotAfter.Equal(now.Add(time.Hour)) {
		t.Errorf("rotation %+v: want a long secret, the previous credential %s until %v", rot, before.ID, now.Add(time.Hour))
	}
	for _, r := range rot.Secret {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			t.Fatalf("generated secret %q has %q; want letters and digits", rot.Secret, r)
		}
	}
	if id := e.wantLogin(t, rot.Secret, "new secret"); id != rot.CredentialID {
		t.Errorf("new secret logged in as %s, want %s", id, rot.CredentialID)
	}
	e.advance(59 * time.Minute)
	e.wantLogin(t, s1, "old secret during the grace")
	e.advance(time.Minute)
	e.wantRefused(t, s1, "old secret after the grace")
	if _, err := e.svc.RotateCredential(ctx, e.acc, "d1", s1); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
		t.Errorf("rotating with the expired secret: %v", err)
	}
	// Rotating again from the new secret never extends a window that ends sooner.
	cs := e.credentials(t)
	cur := cs[len(cs)-1]
	soon := e.now.Load().Add(10 * time.Minute)
	if _, err := e.svc.UpdateCredential(e.admin, "d1", cur.ID, devreg.CredentialUpdate{SetNotAfter: true, NotAfter: &soon}); err != nil {
		t.Fatal(err)
	}
	rot2, err := e.svc.RotateCredential(ctx, e.acc, "d1", rot.Secret)
	if err != nil {
		t.Fatal(err)
	}
	if !rot2.PreviousNotAfter.Equal(soon) {
		t.Errorf("second rotation's previous_not_after %v, want %v (never extended)", rot2.PreviousNotAfter, soon)
	}
	// The expired registered credential went when the rotation added one.
	if got := ids(e.credentials(t)); len(got) != 2 || got[0] != rot.CredentialID || got[1] != rot2.CredentialID {
		t.Errorf("credentials after two rotations: %v", got)
	}
}

// A rotation's wrong secrets count toward the device's throttle, as the token endpoint's do.
func TestRotationIsThrottled(t *testing.T) { pgtest.Each(t, testRotationIsThrottled) }

func testRotationIsThrottled(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	for range DeviceMaxFailures {
		if _, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", "wrong-secret!"); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
			t.Fatalf("rotation with a wrong secret: %v", err)
		}
	}
	if _, err := e.svc.RotateCredential(context.Background(), e.acc, "d1", s1); devreg.ErrorCode(err) != devreg.ERATELIMITED {
		t.Errorf("rotation with the right secret after %d failures: %v, want rate limited", DeviceMaxFailures, err)
	}
	if _, code := e.login(s1); code != devreg.ERATELIMITED {
		t.Errorf("login after %d failed rotations: %q, want rate limited", DeviceMaxFailures, code)
	}
	if got := e.credentials(t); len(got) != 1 {
		t.Errorf("throttled rotations left %d credentials", len(got))
	}
}

// A device that lost the answer rotates again with its old secret: the credential from the lost
// answer, never used, goes, so credentials do not pile up; used ones stay, up to five.
func TestRotationLostAnswer(t *testing.T) { pgtest.Each(t, testRotationLostAnswer) }

func testRotationLostAnswer(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	ctx := context.Background()
	var last devreg.Rotation
	for i := range 8 {
		rot, err := e.svc.RotateCredential(ctx, e.acc, "d1", s1)
		if err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
		if i > 0 {
			e.wantRefused(t, last.Secret, "the lost answer's secret")
		}
		last = rot
		if got := e.credentials(t); len(got) != 2 || got[1].ID != rot.CredentialID {
			t.Fatalf("after rotation %d: %v, want the registered one and %s", i, ids(got), rot.CredentialID)
		}
	}
	// Used ones stay: rotate from each new secret after using it, until the limit.
	for i := 2; i < devreg.MaxCredentials; i++ {
		e.wantLogin(t, last.Secret, "the newest secret")
		rot, err := e.svc.RotateCredential(ctx, e.acc, "d1", last.Secret)
		if err != nil {
			t.Fatalf("rotation from credential %d: %v", i, err)
		}
		last = rot
		if n := len(e.credentials(t)); n != i+1 {
			t.Fatalf("%d credentials after rotating from a used one, want %d", n, i+1)
		}
	}
	e.wantLogin(t, last.Secret, "the newest secret")
	if _, err := e.svc.RotateCredential(ctx, e.acc, "d1", last.Secret); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("a rotation beyond five credentials: %v, want conflict", err)
	}
}

// Parallel changes of one device's credentials are serialized: the limit of five holds, and
// parallel rotations leave one new credential.
func TestParallelCredentialChanges(t *testing.T) { pgtest.Each(t, testParallelCredentialChanges) }

func testParallelCredentialChanges(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	e.register(t, devreg.ConflictFail, "d2", "secret-of-d2")
	const n = 12
	var wg sync.WaitGroup
	var added, refused atomic.Int32
	start := make(chan struct{})
	for range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, err := e.svc.AddCredential(e.admin, "d1", devreg.NewCredential{Generate: true})
			switch devreg.ErrorCode(err) {
			case "":
				added.Add(1)
			case devreg.ECONFLICT:
				refused.Add(1)
			default:
				t.Errorf("add: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			if _, err := e.svc.RotateCredential(context.Background(), e.acc, "d2", "secret-of-d2"); err != nil {
				t.Errorf("rotate: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if added.Load() != devreg.MaxCredentials-1 || refused.Load() != n-devreg.MaxCredentials+1 || len(e.credentials(t)) != devreg.MaxCredentials {
		t.Errorf("%d parallel adds: %d added, %d refused, %d credentials; want 4, %d, 5", n, added.Load(), refused.Load(), len(e.credentials(t)), n-4)
	}
	if cs, _ := e.svc.ListCredentials(e.admin, "d2"); len(cs) != 2 {
		t.Errorf("%d parallel rotations left %d credentials, want 2", n, len(cs))
	}
}

// Each credential's hash moves to the current server key when that credential is used.
func TestCredentialKeyRotation(t *testing.T) { pgtest.Each(t, testCredentialKeyRotation) }

func testCredentialKeyRotation(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	e.add(t, devreg.NewCredential{Secret: "second-secret-2"})
	k2 := credential.Key{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
	keys, err := credential.NewKeyring(e.svc.keys.Keys()[0], k2)
	if err != nil {
		t.Fatal(err)
	}
	e.svc.keys = keys
	keyIDs := func() []string {
		d, err := e.svc.store.DeviceAuth(context.Background(), e.acc, "d1")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range d.Credentials {
			out = append(out, c.KeyID)
		}
		return out
	}
	e.wantLogin(t, "second-secret-2", "second secret under the old key")
	if got := keyIDs(); len(got) != 2 || got[0] != "k1" || got[1] != "k2" {
		t.Errorf("key IDs after using the second credential: %v, want [k1 k2]", got)
	}
	e.wantLogin(t, "second-secret-2", "second secret under the new key")
	e.wantLogin(t, s1, "first secret under the old key")
	if got := keyIDs(); len(got) != 2 || got[0] != "k2" || got[1] != "k2" {
		t.Errorf("key IDs after using both: %v, want [k2 k2]", got)
	}
	e.wantLogin(t, s1, "first secret under the new key")
}

// A deleted device's credentials go with it: registered again, it has only its new secret.
func TestDeleteDeviceDeletesCredentials(t *testing.T) {
	pgtest.Each(t, testDeleteDeviceDeletesCredentials)
}

func testDeleteDeviceDeletesCredentials(t *testing.T, url string) {
	e := newCredEnv(t, url, devreg.DefaultRotationGraceSeconds)
	e.add(t, devreg.NewCredential{Secret: "second-secret-2"})
	if err := e.svc.DeleteDevice(e.admin, "d1"); err != nil {
		t.Fatal(err)
	}
	e.wantRefused(t, "second-secret-2", "a secret of the deleted device")
	if res := e.register(t, devreg.ConflictFail, "d1", "brand-new-secret"); res.Created != 1 {
		t.Fatalf("registering the deleted ID again: %+v", res)
	}
	e.wantRefused(t, "second-secret-2", "a secret of the device before it was deleted")
	e.wantRefused(t, s1, "the first secret of the device before it was deleted")
	e.wantLogin(t, "brand-new-secret", "the new registration")
	if got := e.credentials(t); len(got) != 1 {
		t.Errorf("the device registered again has %d credentials, want 1", len(got))
	}
}
