// Package storetest is one conformance suite for devreg's stores: every case runs against each
// database the store supports, so a second dialect cannot drift from the first.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/credential"
	"devreg/store"
)

// Opener opens a fresh, empty store for one test.
type Opener func(t *testing.T) *store.DB

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

var key = credential.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}

// Run runs every case against stores from open.
func Run(t *testing.T, open Opener) {
	cases := []struct {
		name string
		fn   func(t *testing.T, db *store.DB)
	}{
		{"accounts-and-keys", testAccountsAndKeys},
		{"device-types", testDeviceTypes},
		{"stage-apply", testStageApply},
		{"direct-new-and-resent-files", testDirect},
		{"big-look-ups-spread-over-connections", testLookUpSpread},
		{"device-type-deleted-meanwhile", testTypeDeletedMeanwhile},
		{"stage-duplicates", testStageDuplicates},
		{"decide-refuses-on-every-path", testDecideRefuses},
		{"stage-replace-moves-counts", testStageReplace},
		{"stage-registered-ids-after-new-ones", testStageLateConflicts},
		{"list-devices", testListDevices},
		{"list-devices-and-batches-of-a-set-of-types", testListSetOfTypes},
		{"batches", testBatches},
		{"sessions-and-failures", testSessionsAndFailures},
		{"parallel-attempts-count-one-each", testParallelAttempts},
		{"parallel-first-check-ins-count-once", testParallelFirstCheckIns},
		{"check-in-tied-to-registration", testCheckInTiedToRegistration},
		{"delete-racing-replace-keeps-counts", testDeleteRacingReplace},
		{"replace-resets-credentials", testResetCredentials},
		{"revoke-batch-credentials", testRevokeBatchCredentials},
		{"trusted-cas", testTrustedCAs},
		{"enrollment-groups", testEnrollmentGroups},
		{"enrollment-group-changes", testEnrollmentGroupChanges},
		{"users", testUsers},
		{"last-admin-under-race", testLastAdminUnderRace},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

func newAccount(t *testing.T, db *store.DB, name string) string {
	t.Helper()
	a := devreg.Account{ID: "acc_" + name, Name: name, CreatedAt: t0}
	u := devreg.User{ID: "usr_" + name, AccountID: a.ID, Email: name + "@example.test", PasswordHash: "x", CreatedAt: t0}
	k := devreg.APIKey{ID: "key_" + name, AccountID: a.ID, Name: "owner", Scope: devreg.ScopeAdmin, CreatedAt: t0, Hash: credential.HashAPIKey("drk_" + name)}
	if err := db.CreateAccount(context.Background(), a, u, k); err != nil {
		t.Fatal(err)
	}
	return a.ID
}

func newType(t *testing.T, db *store.DB, account, id string) {
	t.Helper()
	if err := db.CreateDeviceType(context.Background(), devreg.DeviceType{ID: id, AccountID: account, Name: "type " + id, MinSecretLength: 8, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
}

type entry struct{ id, secret string }

// regPlan is a test's registration: what the store is asked (Registration) and what the
// registry would decide about what it finds (OnConflict, ResetCredentials).
type regPlan struct {
	DeviceTypeID     string
	OnConflict       devreg.OnConflict
	DryRun           bool
	ResetCredentials bool
	Batch            devreg.Batch
}

// stage registers entries for account as p says, through the store's stage (as a request that
// may repeat a device ID is).
func stage(t *testing.T, db *store.DB, account string, entries []entry, p regPlan) (devreg.RegisterResult, error) {
	t.Helper()
	return register(context.Background(), db, account, entries, p)
}

// register is stage from any goroutine.
func register(ctx context.Context, db *store.DB, account string, entries []entry, p regPlan) (devreg.RegisterResult, error) {
	reg := registration(account, p)
	reg.MayRepeat, reg.Sample = true, sample(entries)
	return db.Register(ctx, reg, EntryList(checked(account, entries)), decideAs(p))
}

// sample is the registry's sample of entries: the device IDs of those devreg.Sampled picks.
func sample(entries []entry) []string {
	var ids []string
	for i, e := range entries {
		if devreg.Sampled(i) {
			ids = append(ids, e.id)
		}
	}
	return ids
}

// checked turns entries into what the registry hands a store after checking them.
func checked(account string, entries []entry) []devreg.StagedEntry {
	var staged []devreg.StagedEntry
	for i, e := range entries {
		staged = append(staged, devreg.StagedEntry{Index: i, Line: i + 1, DeviceID: e.id, Hashes: credential.Hash(key, account, e.id, e.secret)})
	}
	return staged
}

// registration is the Registration of p for account, as the registry would ask it.
func registration(account string, p regPlan) devreg.Registration {
	reg := devreg.Registration{AccountID: account, DeviceTypeID: p.DeviceTypeID, KeyIDs: []string{key.ID}, DryRun: p.DryRun, Batch: p.Batch}
	if reg.Batch.ID == "" {
		reg.Batch = devreg.Batch{ID: credential.RandomID("bat", 8), CreatedAt: t0, CreatedBy: "test", Source: devreg.SourceAPI}
	}
	switch {
	case p.ResetCredentials:
		reg.Unchanged = devreg.UnchangedOnlyCredential
	case p.OnConflict == devreg.ConflictReplace:
		reg.Unchanged = devreg.UnchangedValidCredential
	}
	return reg
}

// conflictError is decideAs's refusal of conflicts under on_conflict=fail (or of certificates
// other devices hold): the first MaxProblems of them, and how many.
type conflictError struct {
	Conflicts []devreg.Conflict
	Count     int64
	Total     int64
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("%d of %d devices conflict", e.Count, e.Total)
}

// decideAs decides as the registry does under p's on_conflict, refusing with a *conflictError.
func decideAs(p regPlan) func(devreg.Found) (devreg.Decision, error) {
	replace := p.OnConflict == devreg.ConflictReplace
	return func(f devreg.Found) (devreg.Decision, error) {
		e := &conflictError{Total: f.Total}
		add := func(c devreg.Conflict) {
			if e.Count++; len(e.Conflicts) < devreg.MaxProblems {
				e.Conflicts = append(e.Conflicts, c)
			}
		}
		switch {
		case f.Repeats > 0:
			return devreg.Decision{}, fmt.Errorf("%d device IDs repeat", f.Repeats)
		case f.TakenNew > 0 || replace && f.TakenConflicting > 0:
			if err := f.EachTaken(replace, add); err != nil {
				return devreg.Decision{}, err
			}
			return devreg.Decision{}, e
		case f.Conflicting > 0 && p.OnConflict != devreg.ConflictSkip && !replace:
			if err := f.EachConflict(add); err != nil {
				return devreg.Decision{}, err
			}
			return devreg.Decision{}, e
		}
		return devreg.Decision{Replace: replace}, nil
	}
}

func testAccountsAndKeys(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "acme")
	err := db.CreateAccount(ctx, devreg.Account{ID: "acc_2", Name: "x", CreatedAt: t0},
		devreg.User{ID: "usr_2", AccountID: "acc_2", Email: "acme@example.test", PasswordHash: "x", CreatedAt: t0},
		devreg.APIKey{ID: "key_2", AccountID: "acc_2", Name: "o", Scope: devreg.ScopeAdmin, CreatedAt: t0, Hash: []byte("h2")})
	if devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("second user with the same email: err = %v, want conflict", err)
	}
	if _, err := db.APIKeyByHash(ctx, []byte("h2")); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("refused account left its API key behind: err = %v", err)
	}
	k, err := db.APIKeyByHash(ctx, credential.HashAPIKey("drk_acme"))
	if err != nil || k.AccountID != acc || k.Scope != devreg.ScopeAdmin || k.LastUsedAt != nil {
		t.Fatalf("APIKeyByHash = %+v, %v", k, err)
	}
	if k.DeviceTypeIDs != nil || k.ExpiresAt != nil || k.LastUsedIP != nil {
		t.Errorf("an unrestricted key that never expires and was never used: %+v", k)
	}
	if err := db.TouchAPIKey(ctx, k.ID, t0.Add(time.Hour), "192.0.2.7"); err != nil {
		t.Fatal(err)
	}
	keys, err := db.ListAPIKeys(ctx, acc)
	if err != nil || len(keys) != 1 || keys[0].LastUsedAt == nil || !keys[0].LastUsedAt.Equal(t0.Add(time.Hour)) ||
		keys[0].LastUsedIP == nil || *keys[0].LastUsedIP != "192.0.2.7" {
		t.Errorf("ListAPIKeys = %+v, %v", keys, err)
	}
	expires := t0.Add(48 * time.Hour)
	restricted := devreg.APIKey{ID: "key_r", AccountID: acc, Name: "line 3", Scope: devreg.ScopeRegister, CreatedAt: t0, Hash: []byte("hr"),
		DeviceTypeIDs: []string{"dt_a", "dt_b"}, ExpiresAt: &expires}
	if err := db.CreateAPIKey(ctx, restricted); err != nil {
		t.Fatal(err)
	}
	got, err := db.APIKeyByHash(ctx, []byte("hr"))
	if err != nil || !slices.Equal(got.DeviceTypeIDs, restricted.DeviceTypeIDs) || got.ExpiresAt == nil || !got.ExpiresAt.Equal(expires) {
		t.Errorf("restricted, expiring key read back: %+v, %v", got, err)
	}
	got.Name, got.ExpiresAt = "line 3 (renamed)", nil
	if err := db.UpdateAPIKey(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got, err := db.APIKey(ctx, acc, "key_r"); err != nil || got.Name != "line 3 (renamed)" || got.ExpiresAt != nil || len(got.DeviceTypeIDs) != 2 {
		t.Errorf("key after the update: %+v, %v", got, err)
	}
	if _, err := db.APIKey(ctx, "acc_other", "key_r"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account's key: %v, want not found", err)
	}
	if err := db.DeleteAPIKey(ctx, acc, "key_r"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteAPIKey(ctx, "acc_other", k.ID); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("deleting another account's key: err = %v, want not found", err)
	}
	if err := db.DeleteAPIKey(ctx, acc, k.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.APIKeyByHash(ctx, credential.HashAPIKey("drk_acme")); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("deleted key still found: %v", err)
	}
	u, err := db.UserByEmail(ctx, "acme@example.test")
	if err != nil || u.AccountID != acc {
		t.Errorf("UserByEmail = %+v, %v", u, err)
	}
}

func testDeviceTypes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc, other := newAccount(t, db, "a"), newAccount(t, db, "b")
	newType(t, db, acc, "dt_1")
	newType(t, db, other, "dt_2")
	err := db.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_3", AccountID: acc, Name: "type dt_1", MinSecretLength: 8, CreatedAt: t0})
	if devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("duplicate name: err = %v, want conflict", err)
	}
	if err := db.CreateDeviceType(ctx, devreg.DeviceType{ID: "dt_4", AccountID: other, Name: "type dt_1", MinSecretLength: 8, CreatedAt: t0}); err != nil {
		t.Errorf("same name in another account: %v", err)
	}
	if _, err := db.DeviceType(ctx, acc, "dt_2"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account's type: err = %v, want not found", err)
	}
	dt, err := db.DeviceType(ctx, acc, "dt_1")
	if err != nil {
		t.Fatal(err)
	}
	if dt.RotationGraceSeconds == nil || *dt.RotationGraceSeconds != devreg.DefaultRotationGraceSeconds {
		t.Errorf("a new type's rotation grace = %v, want the default %d", dt.RotationGraceSeconds, devreg.DefaultRotationGraceSeconds)
	}
	if dt.MaxRotationsPerHour == nil || *dt.MaxRotationsPerHour != devreg.DefaultMaxRotationsPerHour {
		t.Errorf("a new type's rotation limit = %v, want the default %d", dt.MaxRotationsPerHour, devreg.DefaultMaxRotationsPerHour)
	}
	if dt.CertificateIDField != "subject_cn" || dt.AutoRegister || dt.AutoRegisterLimit == nil || *dt.AutoRegisterLimit != devreg.DefaultAutoRegisterLimit {
		t.Errorf("a new type's certificate settings = %q, %v, %v, want subject_cn, off, %d", dt.CertificateIDField, dt.AutoRegister, dt.AutoRegisterLimit, devreg.DefaultAutoRegisterLimit)
	}
	dt.Description, dt.MinSecretLength, dt.RotationGraceSeconds, dt.MaxRotationsPerHour = "new", 32, ptr(0), ptr(1000)
	dt.CertificateIDField, dt.AutoRegister, dt.AutoRegisterLimit = "san_dns", true, ptr(100000)
	dt.MQTTPublish, dt.MQTTSubscribe = []string{"devices/{device_id}/up", "fleet/+/{account_id}"}, []string{}
	if err := db.UpdateDeviceType(ctx, dt); err != nil {
		t.Fatal(err)
	}
	types, err := db.ListDeviceTypes(ctx, acc)
	want := []devreg.DeviceType{{ID: "dt_1", AccountID: acc, Name: "type dt_1", Description: "new", MinSecretLength: 32, CreatedAt: t0,
		MQTTPublish: []string{"devices/{device_id}/up", "fleet/+/{account_id}"}, MQTTSubscribe: []string{}, RotationGraceSeconds: ptr(0),
		MaxRotationsPerHour: ptr(1000), CertificateIDField: "san_dns", AutoRegister: true, AutoRegisterLimit: ptr(100000)}}
	if diff := cmp.Diff(want, types); err != nil || diff != "" {
		t.Errorf("ListDeviceTypes (-want +got):\n%s %v", diff, err)
	}
	if _, err := stage(t, db, acc, []entry{{"d1", "secret-1"}}, regPlan{DeviceTypeID: "dt_1"}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteDeviceType(ctx, acc, "dt_1"); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("deleting a type with devices: err = %v, want conflict", err)
	}
	if err := db.DeleteDevice(ctx, acc, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteDeviceType(ctx, acc, "dt_1"); err != nil {
		t.Errorf("deleting an emptied type: %v", err)
	}
}

func testStageApply(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	first := []entry{{"d1", "secret-1"}, {"d2", "secret-2"}, {"d3", "secret-3"}}
	res, err := stage(t, db, acc, first, regPlan{DeviceTypeID: "dt_1", DryRun: true})
	if diff := cmp.Diff(devreg.RegisterResult{Created: 3, DryRun: true}, res); err != nil || diff != "" {
		t.Errorf("dry run (-want +got):\n%s %v", diff, err)
	}
	if d, _ := db.ListDevices(ctx, acc, devreg.DeviceFilter{Limit: 10}); len(d) != 0 {
		t.Errorf("dry run wrote %d devices", len(d))
	}
	res, err = stage(t, db, acc, first, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0, CreatedBy: "me", Source: devreg.SourceConsole, Filename: "lot1.csv"}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_1", Created: 3}, res); err != nil || diff != "" {
		t.Errorf("first registration (-want +got):\n%s %v", diff, err)
	}
	res, err = stage(t, db, acc, first, regPlan{DeviceTypeID: "dt_1"})
	if diff := cmp.Diff(devreg.RegisterResult{Unchanged: 3}, res); err != nil || diff != "" {
		t.Errorf("resend (-want +got):\n%s %v", diff, err)
	}
	clash := []entry{{"d4", "secret-4"}, {"d1", "other-secret"}, {"d2", "secret-2"}}
	_, err = stage(t, db, acc, clash, regPlan{DeviceTypeID: "dt_1"})
	var e *conflictError
	if !errors.As(err, &e) || e.Count != 1 || e.Total != 3 ||
		!cmp.Equal(e.Conflicts, []devreg.Conflict{{Index: 1, Line: 2, DeviceID: "d1", RegisteredType: "dt_1"}}) {
		t.Errorf("conflicting secret: err = %+v", err)
	}
	_, err = stage(t, db, acc, []entry{{"d3", "secret-3"}}, regPlan{DeviceTypeID: "dt_2"})
	if !errors.As(err, &e) || !cmp.Equal(e.Conflicts, []devreg.Conflict{{Index: 0, Line: 1, DeviceID: "d3", RegisteredType: "dt_1"}}) {
		t.Errorf("same ID and secret under another type: err = %v, want a conflict naming dt_1", err)
	}
	if _, err := db.Device(ctx, acc, "d4"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("refused registration wrote d4: %v", err)
	}
	res, err = stage(t, db, acc, clash, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictSkip, Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0, Source: devreg.SourceAPI}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_2", Created: 1, Unchanged: 1, Skipped: 1}, res); err != nil || diff != "" {
		t.Errorf("skip (-want +got):\n%s %v", diff, err)
	}
	dt, _ := db.DeviceType(ctx, acc, "dt_1")
	b, _ := db.Batch(ctx, acc, "bat_1")
	if dt.DeviceCount != 4 || b.DeviceCount != 3 || b.Filename != "lot1.csv" || b.Source != devreg.SourceConsole || b.CreatedBy != "me" {
		t.Errorf("counts: type %d (want 4), batch %+v", dt.DeviceCount, b)
	}
	// Another account may register the same device IDs.
	other := newAccount(t, db, "b")
	newType(t, db, other, "dt_9")
	if res, err := stage(t, db, other, first, regPlan{DeviceTypeID: "dt_9"}); err != nil || res.Created != 3 {
		t.Errorf("same IDs in another account: %+v, %v", res, err)
	}
}

func testStageDuplicates(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	ids := []string{"a", "b", "a", "c", "b", "a"}
	var entries EntryList
	for i, id := range ids {
		entries = append(entries, devreg.StagedEntry{Index: i, Line: 10 + i, DeviceID: id, Hashes: credential.Hash(key, acc, id, "s")})
	}
	var found devreg.Found
	var repeats []devreg.Repeat
	refused := errors.New("refused")
	reg := registration(acc, regPlan{DeviceTypeID: "dt_1"})
	reg.MayRepeat = true
	_, err := db.Register(ctx, reg, entries, func(f devreg.Found) (devreg.Decision, error) {
		found = f
		if err := f.EachRepeat(func(r devreg.Repeat) { repeats = append(repeats, r) }); err != nil {
			return devreg.Decision{}, err
		}
		return devreg.Decision{}, refused
	})
	if !errors.Is(err, refused) {
		t.Fatalf("registration with repeats: %v, want decide's refusal", err)
	}
	want := []devreg.Repeat{
		{Index: 2, Line: 12, DeviceID: "a", FirstIndex: 0, FirstLine: 10},
		{Index: 4, Line: 14, DeviceID: "b", FirstIndex: 1, FirstLine: 11},
		{Index: 5, Line: 15, DeviceID: "a", FirstIndex: 0, FirstLine: 10},
	}
	if diff := cmp.Diff(want, repeats); diff != "" || found.Repeats != 3 || found.Total != 6 {
		t.Errorf("duplicates (-want +got):\n%s\nfound %d of %d", diff, found.Repeats, found.Total)
	}
	if dt, _ := db.DeviceType(ctx, acc, "dt_1"); dt.DeviceCount != 0 {
		t.Errorf("a refused registration wrote %d devices", dt.DeviceCount)
	}
}

// testDecideRefuses: an error from decide is Register's, and nothing is written, on each path:
// new devices written at once, a resend looked up, the stage, and a request refused already
// (which on PostgreSQL hung on its stage's connection, busy with a COPY that nothing ended).
func testDecideRefuses(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	lot := []entry{{"d1", "secret-1"}, {"d2", "secret-2"}, {"d3", "secret-3"}}
	refused := errors.New("refused")
	refuse := func(f devreg.Found) (devreg.Decision, error) { return devreg.Decision{}, refused }
	for i, c := range []struct {
		name       string
		mayRepeat  bool
		registered bool // the lot is registered already
		refused    bool // the request is refused already (Registration.Refused)
	}{
		{"new devices", false, false, false},
		{"new devices, staged", true, false, false},
		{"refused already", false, false, true},
		{"a resend", false, true, false},
		{"a resend, staged", true, true, false},
	} {
		if i == 3 {
			if _, err := stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
				t.Fatal(err)
			}
		}
		reg := registration(acc, regPlan{DeviceTypeID: "dt_1"})
		reg.Sample, reg.MayRepeat, reg.Refused = []string{"d1", "d2"}, c.mayRepeat, c.refused
		reg.KeyID = "key_a" // decide is handed the caller as stored now
		res, err := db.Register(ctx, reg, EntryList(checked(acc, lot)), refuse)
		if !errors.Is(err, refused) || res != (devreg.RegisterResult{}) {
			t.Errorf("%s: %+v, %v; want decide's error", c.name, res, err)
		}
		if b, err := db.Batch(ctx, acc, reg.Batch.ID); err == nil {
			t.Errorf("%s: a refused registration made batch %+v", c.name, b)
		}
		want := int64(0)
		if c.registered {
			want = int64(len(lot))
		}
		if dt, _ := db.DeviceType(ctx, acc, "dt_1"); dt.DeviceCount != want {
			t.Errorf("%s: the type counts %d devices after a refusal", c.name, dt.DeviceCount)
		}
	}
	checkCounts(t, db, acc)
}

func testStageReplace(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	if _, err := stage(t, db, acc, []entry{{"d1", "secret-1"}, {"d2", "secret-2"}}, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	res, err := stage(t, db, acc, []entry{{"d1", "secret-1"}, {"d2", "new-secret"}, {"d3", "secret-3"}},
		regPlan{DeviceTypeID: "dt_2", OnConflict: devreg.ConflictReplace, Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_2", Created: 1, Replaced: 2}, res); err != nil || diff != "" {
		t.Errorf("replace (-want +got):\n%s %v", diff, err)
	}
	counts := deviceCounts(db, acc, []string{"dt_1", "dt_2"}, []string{"bat_1", "bat_2"})
	if diff := cmp.Diff(map[string]int64{"dt_1": 0, "dt_2": 3, "bat_1": 0, "bat_2": 3}, counts); diff != "" {
		t.Errorf("counts after replace (-want +got):\n%s", diff)
	}
	d2, _ := db.Device(ctx, acc, "d2")
	if d2.DeviceTypeID != "dt_2" || d2.BatchID != "bat_2" {
		t.Errorf("replaced device = %+v", d2)
	}
	res, err = stage(t, db, acc, []entry{{"d2", "new-secret"}}, regPlan{DeviceTypeID: "dt_2"})
	if err != nil || res.Unchanged != 1 {
		t.Errorf("the replaced secret is not the stored one: %+v, %v", res, err)
	}
}

// testStageLateConflicts registers requests whose first entries are new and whose registered
// IDs come later, at indexes a store might not look at before it writes.
func testStageLateConflicts(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	registered := []entry{{"e1", "secret-1"}, {"e2", "secret-2"}, {"e3", "secret-3"}, {"e4", "secret-4"}}
	if _, err := stage(t, db, acc, registered, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	request := []entry{{"n0", "s-0"}, {"n1", "s-1"}, {"n2", "s-2"}, {"e1", "secret-1"}, {"n4", "s-4"}, {"e2", "other-secret"}, {"e3", "secret-3"}, {"n7", "s-7"}}
	_, err := stage(t, db, acc, request, regPlan{DeviceTypeID: "dt_1"})
	var e *conflictError
	if !errors.As(err, &e) || e.Count != 1 || !cmp.Equal(e.Conflicts, []devreg.Conflict{{Index: 5, Line: 6, DeviceID: "e2", RegisteredType: "dt_1"}}) {
		t.Errorf("conflict at index 5: err = %+v", err)
	}
	if _, err := db.Device(ctx, acc, "n0"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("refused registration wrote n0: %v", err)
	}
	if dt, _ := db.DeviceType(ctx, acc, "dt_1"); dt.DeviceCount != 4 {
		t.Errorf("refused registration changed the type's count to %d", dt.DeviceCount)
	}

	res, err := stage(t, db, acc, request, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictSkip, Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_2", Created: 5, Unchanged: 2, Skipped: 1}, res); err != nil || diff != "" {
		t.Errorf("skip (-want +got):\n%s %v", diff, err)
	}
	devices, err := db.ListDevices(ctx, acc, devreg.DeviceFilter{BatchID: "bat_2", Limit: 10})
	var got []string
	for _, d := range devices {
		got = append(got, d.DeviceID)
	}
	if diff := cmp.Diff([]string{"n0", "n1", "n2", "n4", "n7"}, got); err != nil || diff != "" {
		t.Errorf("the skip's batch (-want +got):\n%s %v", diff, err)
	}
	if e2, _ := db.Device(ctx, acc, "e2"); e2.BatchID != "bat_1" {
		t.Errorf("skipped device moved to batch %s", e2.BatchID)
	}

	res, err = stage(t, db, acc, []entry{{"m0", "s"}, {"m1", "s"}, {"m2", "s"}, {"e4", "new-secret"}},
		regPlan{DeviceTypeID: "dt_2", OnConflict: devreg.ConflictReplace, Batch: devreg.Batch{ID: "bat_3", CreatedAt: t0}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_3", Created: 3, Replaced: 1}, res); err != nil || diff != "" {
		t.Errorf("replace (-want +got):\n%s %v", diff, err)
	}
	counts := deviceCounts(db, acc, []string{"dt_1", "dt_2"}, []string{"bat_1", "bat_2", "bat_3"})
	if diff := cmp.Diff(map[string]int64{"dt_1": 8, "dt_2": 4, "bat_1": 3, "bat_2": 5, "bat_3": 4}, counts); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

// deviceCounts returns the device counts of the account's device types and batches, by ID.
func deviceCounts(db *store.DB, acc string, types, batches []string) map[string]int64 {
	ctx := context.Background()
	counts := map[string]int64{}
	for _, id := range types {
		dt, _ := db.DeviceType(ctx, acc, id)
		counts[id] = dt.DeviceCount
	}
	for _, id := range batches {
		b, _ := db.Batch(ctx, acc, id)
		counts[id] = b.DeviceCount
	}
	return counts
}

func testListDevices(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	var entries []entry
	for i := range 30 {
		entries = append(entries, entry{fmt.Sprintf("x-%02d", i), "secret-x"})
	}
	stage(t, db, acc, entries, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}})
	stage(t, db, acc, []entry{{"y-1", "secret-y"}, {"x-99", "secret-x"}}, regPlan{DeviceTypeID: "dt_2", Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0}})
	if err := db.SetDeviceStatus(ctx, acc, "x-05", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if err := db.SetDeviceStatus(ctx, "acc_nobody", "x-06", devreg.StatusDisabled); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("status of another account's device: %v", err)
	}
	ids := func(f devreg.DeviceFilter) []string {
		f.Limit = 100
		ds, err := db.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.DeviceID)
		}
		return out
	}
	tests := []struct {
		name string
		f    devreg.DeviceFilter
		want []string
	}{
		{"type-in-registration-order", devreg.DeviceFilter{DeviceTypeID: "dt_2"}, []string{"y-1", "x-99"}},
		{"batch-and-prefix", devreg.DeviceFilter{BatchID: "bat_1", Prefix: "x-2"}, []string{"x-20", "x-21", "x-22", "x-23", "x-24", "x-25", "x-26", "x-27", "x-28", "x-29"}},
		{"status", devreg.DeviceFilter{Status: devreg.StatusDisabled}, []string{"x-05"}},
		{"after-id-with-prefix", devreg.DeviceFilter{Prefix: "x-2", After: devreg.Cursor{DeviceID: "x-27"}}, []string{"x-28", "x-29"}},
		{"prefix-is-not-a-pattern", devreg.DeviceFilter{Prefix: "x_"}, nil},
		{"never-connected", devreg.DeviceFilter{Connected: ptr(false), Prefix: "y"}, []string{"y-1"}},
		{"connected", devreg.DeviceFilter{Connected: ptr(true)}, nil},
	}
	for _, tt := range tests {
		if got := ids(tt.f); !cmp.Equal(tt.want, got) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func testBatches(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	for i := range 5 {
		typ := "dt_1"
		if i%2 == 1 {
			typ = "dt_2"
		}
		stage(t, db, acc, []entry{{fmt.Sprintf("d%d", i), "secret-x"}}, regPlan{DeviceTypeID: typ, Batch: devreg.Batch{ID: fmt.Sprintf("bat_%d", i), CreatedAt: t0}})
	}
	batches, seqs, err := db.ListBatches(ctx, acc, devreg.BatchFilter{Limit: 2})
	if err != nil || len(batches) != 2 || batches[0].ID != "bat_4" || batches[1].ID != "bat_3" {
		t.Fatalf("first page = %+v, %v", batches, err)
	}
	batches, _, _ = db.ListBatches(ctx, acc, devreg.BatchFilter{Limit: 10, After: devreg.Cursor{Seq: seqs[1]}})
	if len(batches) != 3 || batches[0].ID != "bat_2" {
		t.Errorf("second page = %+v", batches)
	}
	batches, _, _ = db.ListBatches(ctx, acc, devreg.BatchFilter{Limit: 10, DeviceTypeID: "dt_2"})
	if len(batches) != 2 || batches[0].ID != "bat_3" || batches[1].ID != "bat_1" {
		t.Errorf("batches of dt_2 = %+v", batches)
	}
	if err := db.SetBatchStatus(ctx, acc, "bat_1", devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	if b, _ := db.Batch(ctx, acc, "bat_1"); b.Status != devreg.StatusDisabled {
		t.Errorf("batch status = %s", b.Status)
	}
	if _, err := db.Batch(ctx, "acc_nobody", "bat_1"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account's batch: %v", err)
	}
}

func testSessionsAndFailures(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	token := []byte("token-hash")
	if err := db.CreateSession(ctx, token, "usr_a", passwordOf(t, db, acc, "usr_a"), t0, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	u, err := db.SessionUser(ctx, token, t0.Add(time.Minute))
	if err != nil || u.AccountID != acc || u.Email != "a@example.test" {
		t.Errorf("SessionUser = %+v, %v", u, err)
	}
	if _, err := db.SessionUser(ctx, token, t0.Add(2*time.Hour)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("expired session: err = %v, want not found", err)
	}
	if err := db.DeleteSession(ctx, token, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SessionUser(ctx, token, t0); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("deleted session: err = %v, want not found", err)
	}

	window := 15 * time.Minute
	reserve := func(key string, at time.Duration) (int, time.Time) {
		t.Helper()
		n, since, err := db.ReserveAttempt(ctx, key, t0.Add(at), window)
		if err != nil {
			t.Fatal(err)
		}
		return n, since
	}
	for i := range 3 {
		if n, since := reserve("k", time.Duration(i)*time.Minute); n != i+1 || !since.Equal(t0) {
			t.Errorf("attempt %d = %d since %v, want %d since %v", i+1, n, since, i+1, t0)
		}
	}
	// A success gives its attempt back; one of a window that has been replaced gives nothing.
	if err := db.ReleaseAttempt(ctx, "k", t0); err != nil {
		t.Fatal(err)
	}
	if err := db.ReleaseAttempt(ctx, "k", t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, _ := reserve("k", 10*time.Minute); n != 3 {
		t.Errorf("after one attempt was given back, the next = %d, want 3", n)
	}
	if n, since := reserve("k", 16*time.Minute); n != 1 || !since.Equal(t0.Add(16*time.Minute)) {
		t.Errorf("an attempt after the window opens a new one: %d since %v", n, since)
	}
	// A window whose attempts all succeeded holds no failure: the next attempt starts a new one,
	// so a window always starts with its first failure.
	if err := db.ReleaseAttempt(ctx, "k", t0.Add(16*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.ReleaseAttempt(ctx, "k", t0.Add(16*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n, since := reserve("k", 20*time.Minute); n != 1 || !since.Equal(t0.Add(20*time.Minute)) {
		t.Errorf("an attempt after only successes = %d since %v, want 1 since %v", n, since, t0.Add(20*time.Minute))
	}
	if n, _ := reserve("other", 20*time.Minute); n != 1 {
		t.Errorf("another key's first attempt = %d", n)
	}
}

// testParallelAttempts counts attempts for one key from many goroutines at once: each gets a
// count of its own, so no two can both see room under a limit.
func testParallelAttempts(t *testing.T, db *store.DB) {
	const n = 40
	counts := make(chan int, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			c, _, err := db.ReserveAttempt(context.Background(), "device:parallel", t0, 15*time.Minute)
			counts <- c
			errs <- err
		})
	}
	wg.Wait()
	close(counts)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []int
	for c := range counts {
		got = append(got, c)
	}
	slices.Sort(got)
	want := make([]int, n)
	for i := range want {
		want[i] = i + 1
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts of %d parallel attempts (-want +got):\n%s", n, diff)
	}
}

// testParallelFirstCheckIns checks devices in for the first time from many goroutines at once:
// each is one connected device of its batch.
func testParallelFirstCheckIns(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	const devices, n = 8, 16
	var entries []entry
	for i := range devices {
		entries = append(entries, entry{fmt.Sprintf("d%d", i), "secret-1"})
	}
	if _, err := stage(t, db, acc, entries, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		start := make(chan struct{})
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for j := range n {
			wg.Go(func() {
				<-start
				errs <- db.CheckIn(ctx, acc, e.id, "bat_1", t0.Add(time.Duration(j)*time.Second), nil, nil)
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("check-in: %v", err)
			}
		}
		if b, _ := db.Batch(ctx, acc, "bat_1"); b.ConnectedCount != int64(i+1) {
			t.Fatalf("connected_count after %d parallel first check-ins of %d devices = %d, want %d", n, i+1, b.ConnectedCount, i+1)
		}
	}
	checkCounts(t, db, acc)
}

// testCheckInTiedToRegistration checks in with the batch of an earlier registration of a device:
// refused, and nothing is recorded.
func testCheckInTiedToRegistration(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	if _, err := stage(t, db, acc, []entry{{"d1", "secret-1"}}, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if d, err := db.DeviceAuth(ctx, acc, "d1"); err != nil || d.BatchID != "bat_1" {
		t.Fatalf("DeviceAuth batch = %q, %v; want bat_1", d.BatchID, err)
	}
	if _, err := stage(t, db, acc, []entry{{"d1", "secret-2"}}, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	for _, batch := range []string{"bat_1", ""} {
		if err := db.CheckIn(ctx, acc, "d1", batch, t0, nil, nil); devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
			t.Errorf("check-in for batch %q after the device moved to bat_2: %v, want unauthorized", batch, err)
		}
	}
	if d, _ := db.Device(ctx, acc, "d1"); d.LastSeenAt != nil {
		t.Errorf("a refused check-in set last_seen_at")
	}
	if err := db.CheckIn(ctx, acc, "d1", "bat_2", t0, nil, nil); err != nil {
		t.Errorf("check-in for the current registration: %v", err)
	}
	checkCounts(t, db, acc)
}

// testDeleteRacingReplace deletes devices while registrations replace them under another type and
// the devices check in for the first time, all at once, many times over: every count still
// equals the rows it counts, and a type whose devices are gone can be deleted.
func testDeleteRacingReplace(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	for round := range 25 {
		id := fmt.Sprintf("r%02d", round)
		first := fmt.Sprintf("bat_%02d_a", round)
		if _, err := stage(t, db, acc, []entry{{id, "secret-1"}, {id + "-x", "secret-1"}}, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: first, CreatedAt: t0}}); err != nil {
			t.Fatal(err)
		}
		if round%2 == 0 { // half the devices have checked in before the race
			if err := db.CheckIn(ctx, acc, id, first, t0, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		wg.Go(func() {
			if err := db.DeleteDevice(ctx, acc, id); err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND {
				errs <- fmt.Errorf("delete: %w", err)
			}
		})
		wg.Go(func() {
			if _, err := register(ctx, db, acc, []entry{{id, "secret-2"}, {id + "-x", "secret-2"}}, regPlan{DeviceTypeID: "dt_2",
				OnConflict: devreg.ConflictReplace, Batch: devreg.Batch{ID: fmt.Sprintf("bat_%02d_b", round), CreatedAt: t0}}); err != nil {
				errs <- fmt.Errorf("replace: %w", err)
			}
		})
		wg.Go(func() {
			if err := db.CheckIn(ctx, acc, id, first, t0.Add(time.Second), nil, nil); err != nil && devreg.ErrorCode(err) != devreg.ENOTFOUND && devreg.ErrorCode(err) != devreg.EUNAUTHORIZED {
				errs <- fmt.Errorf("check-in: %w", err)
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: %v", round, err)
		}
		if !checkCounts(t, db, acc) {
			t.Fatalf("round %d: counts drifted", round)
		}
	}
	for _, id := range []string{"dt_1", "dt_2"} {
		devices, err := db.ListDevices(ctx, acc, devreg.DeviceFilter{DeviceTypeID: id, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devices {
			if err := db.DeleteDevice(ctx, acc, d.DeviceID); err != nil {
				t.Fatal(err)
			}
		}
	}
	checkCounts(t, db, acc)
	for _, id := range []string{"dt_1", "dt_2"} {
		if err := db.DeleteDeviceType(ctx, acc, id); err != nil {
			t.Errorf("deleting emptied type %s: %v", id, err)
		}
	}
}

// checkCounts compares every device count of the account's types and batches with the devices
// the store lists for them, and reports whether all matched.
func checkCounts(t *testing.T, db *store.DB, acc string) bool {
	t.Helper()
	ctx := context.Background()
	rows := func(f devreg.DeviceFilter) int64 {
		t.Helper()
		f.Limit = devreg.MaxPageSize
		devices, err := db.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		return int64(len(devices))
	}
	types, err := db.ListDeviceTypes(ctx, acc)
	if err != nil {
		t.Fatal(err)
	}
	ok := true
	for _, dt := range types {
		if n := rows(devreg.DeviceFilter{DeviceTypeID: dt.ID}); n != dt.DeviceCount {
			t.Errorf("device type %s: device_count %d, %d devices", dt.ID, dt.DeviceCount, n)
			ok = false
		}
	}
	batches, _, err := db.ListBatches(ctx, acc, devreg.BatchFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		n, c := rows(devreg.DeviceFilter{BatchID: b.ID}), rows(devreg.DeviceFilter{BatchID: b.ID, Connected: ptr(true)})
		if n != b.DeviceCount || c != b.ConnectedCount {
			t.Errorf("batch %s: device_count %d, %d devices; connected_count %d, %d connected", b.ID, b.DeviceCount, n, b.ConnectedCount, c)
			ok = false
		}
	}
	return ok
}

// EntryList is a request's checked entries, as the registry's spool hands them out.
type EntryList []devreg.StagedEntry

func (l EntryList) Len() int { return len(l) }

func (EntryList) Release() {}

func (l EntryList) Replay(chunk int, fn func([]devreg.StagedEntry) error) error {
	for start := 0; start < len(l); start += chunk {
		if err := fn(l[start:min(start+chunk, len(l))]); err != nil {
			return err
		}
	}
	return nil
}

// errStaged stops a registration that direct sees go to the stage.
var errStaged = errors.New("left to the stage")

// direct registers entries as p says, if the store can without a stage: done is false, and
// nothing written, if the store staged them.
func direct(t *testing.T, db *store.DB, account string, entries []entry, p regPlan) (devreg.RegisterResult, bool) {
	t.Helper()
	reg := registration(account, p)
	reg.Sample = sample(entries)
	ctx, timings := devreg.NewContextWithTimings(context.Background())
	decide := decideAs(p)
	res, err := db.Register(ctx, reg, EntryList(checked(account, entries)), func(f devreg.Found) (devreg.Decision, error) {
		if strings.Contains(timings.Header(), "stage;") {
			return devreg.Decision{}, errStaged
		}
		return decide(f)
	})
	if errors.Is(err, errStaged) {
		return devreg.RegisterResult{}, false
	}
	if err != nil {
		t.Fatalf("direct: %v", err)
	}
	return res, true
}

func testDirect(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	devices := func(from, n int, secret string) []entry {
		var es []entry
		for i := from; i < from+n; i++ {
			es = append(es, entry{fmt.Sprintf("dev-%05d", (i*7919)%100000), secret})
		}
		return es
	}
	count := func() int64 {
		dt, err := db.DeviceType(ctx, acc, "dt_1")
		if err != nil {
			t.Fatal(err)
		}
		return dt.DeviceCount
	}
	lot := devices(0, 600, "secret-one") // more than one statement's worth, and a part

	if res, done := direct(t, db, acc, lot[:300], regPlan{DeviceTypeID: "dt_1", DryRun: true}); !done || res != (devreg.RegisterResult{Created: 300, DryRun: true}) {
		t.Errorf("dry run of new devices: %+v, done %v", res, done)
	}
	res, done := direct(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0, Source: devreg.SourceAPI}})
	if !done || res != (devreg.RegisterResult{BatchID: "bat_1", Created: 600}) || count() != 600 {
		t.Fatalf("new devices: %+v, done %v, type count %d", res, done, count())
	}
	listed, err := db.ListDevices(ctx, acc, devreg.DeviceFilter{BatchID: "bat_1", Limit: 1000})
	if err != nil || len(listed) != 600 || listed[0].DeviceID != lot[0].id || listed[599].DeviceID != lot[599].id {
		t.Errorf("the batch does not list its devices in the request's order: %d devices, %v", len(listed), err)
	}
	if d, err := db.DeviceAuth(ctx, acc, lot[450].id); err != nil || len(d.Credentials) != 1 ||
		!bytes.Equal(d.Credentials[0].Hash, credential.Hash(key, acc, lot[450].id, "secret-one")) || d.DeviceTypeID != "dt_1" {
		t.Errorf("a device written directly: %+v, %v", d, err)
	}
	for _, plan := range []regPlan{{DeviceTypeID: "dt_1"}, {DeviceTypeID: "dt_1", DryRun: true}, {DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace}} {
		if res, done := direct(t, db, acc, lot, plan); !done || res != (devreg.RegisterResult{Unchanged: 600, DryRun: plan.DryRun}) {
			t.Errorf("resend (%s, dry run %v): %+v, done %v", plan.OnConflict, plan.DryRun, res, done)
		}
	}

	// Anything else is left to the stage, with nothing written: a registered device among new
	// ones where the sample does not look, a changed secret, another device type.
	late := append(devices(1000, 299, "secret-two"), lot[10])
	changed := append(devices(0, 599, "secret-one"), entry{lot[599].id, "secret-new"})
	for name, c := range map[string]struct {
		entries []entry
		plan    regPlan
	}{
		"registered after new ones":         {late, regPlan{DeviceTypeID: "dt_1"}},
		"registered after new ones, skip":   {late, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictSkip}},
		"registered after new ones, dry":    {late, regPlan{DeviceTypeID: "dt_1", DryRun: true}},
		"new after registered ones":         {append(lot[:5:5], devices(2000, 10, "secret-three")...), regPlan{DeviceTypeID: "dt_1"}},
		"a changed secret at the end":       {changed, regPlan{DeviceTypeID: "dt_1"}},
		"a changed secret, dry run":         {changed, regPlan{DeviceTypeID: "dt_1", DryRun: true}},
		"the same devices under other type": {lot, regPlan{DeviceTypeID: "dt_2"}},
	} {
		if res, done := direct(t, db, acc, c.entries, c.plan); done {
			t.Errorf("%s: applied without a stage: %+v", name, res)
		}
	}
	// A direct insert that fails at its end goes straight to the stage: its first entry is new,
	// so it is no resend, and reading it all again to find that out is waste.
	clash := append(devices(3000, 299, "secret-four"), entry{lot[10].id, "secret-other"})
	ctx2, timings := devreg.NewContextWithTimings(ctx)
	reg := registration(acc, regPlan{DeviceTypeID: "dt_1"})
	reg.Sample = []string{clash[0].id, clash[1].id, clash[2].id}
	if res, err := db.Register(ctx2, reg, EntryList(checked(acc, clash)), decideAs(regPlan{DeviceTypeID: "dt_1"})); err == nil {
		t.Errorf("a device registered with another secret after new ones, on_conflict=fail: %+v", res)
	}
	if h := timings.Header(); !strings.Contains(h, "insert;") || !strings.Contains(h, "stage;") || strings.Contains(h, "lookup;") {
		t.Errorf("a direct insert that failed at its end: the stages were %s; want insert and stage, no lookup", h)
	}
	if _, err := db.Device(ctx, acc, late[0].id); devreg.ErrorCode(err) != devreg.ENOTFOUND || count() != 600 {
		t.Errorf("a request left to the stage wrote devices: %v, type count %d", err, count())
	}
	if d, _ := db.DeviceAuth(ctx, acc, lot[599].id); len(d.Credentials) != 1 || !bytes.Equal(d.Credentials[0].Hash, credential.Hash(key, acc, lot[599].id, "secret-one")) {
		t.Errorf("a request left to the stage changed a secret")
	}
	checkCounts(t, db, acc)
}

// testLookUpSpread: a big request sent again, or a dry run of new devices, is looked up on
// several connections at once, in one snapshot. The counts are the whole request's; a changed
// secret or a registered device in any part of it leaves it to the stage, with nothing written;
// and two such look-ups at once, which share the registrations' connections, both answer.
func testLookUpSpread(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	const n = 5000 // 5 of PostgreSQL's look-up statements, 20 of SQLite's
	lot, fresh := make([]entry, n), make([]entry, n)
	for i := range n {
		lot[i], fresh[i] = entry{fmt.Sprintf("big-%05d", i), "secret-one"}, entry{fmt.Sprintf("new-%05d", i), "secret-one"}
	}
	if res, done := direct(t, db, acc, fresh, regPlan{DeviceTypeID: "dt_1", DryRun: true}); !done || res != (devreg.RegisterResult{Created: n, DryRun: true}) {
		t.Errorf("dry run of new devices: %+v, done %v", res, done)
	}
	if res, done := direct(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1"}); !done || res.Created != n {
		t.Fatalf("new devices: %+v, done %v", res, done)
	}
	var wg sync.WaitGroup
	results, errs := make([]devreg.RegisterResult, 2), make([]error, 2)
	for i := range results {
		wg.Go(func() {
			reg := registration(acc, regPlan{DeviceTypeID: "dt_1"})
			reg.Sample = sample(lot)
			results[i], errs[i] = db.Register(ctx, reg, EntryList(checked(acc, lot)), decideAs(regPlan{DeviceTypeID: "dt_1"}))
		})
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i] != (devreg.RegisterResult{Unchanged: n}) {
			t.Errorf("one of two resends at once: %+v, %v", results[i], errs[i])
		}
	}
	for _, at := range []int{0, n / 2, n - 1} {
		changed := slices.Clone(lot)
		changed[at].secret = "secret-new"
		if res, done := direct(t, db, acc, changed, regPlan{DeviceTypeID: "dt_1"}); done {
			t.Errorf("a resend with entry %d's secret changed: applied without a stage: %+v", at, res)
		}
		mixed := slices.Clone(fresh)
		mixed[at] = lot[at]
		if res, done := direct(t, db, acc, mixed, regPlan{DeviceTypeID: "dt_1", DryRun: true}); done {
			t.Errorf("a dry run with entry %d registered: applied without a stage: %+v", at, res)
		}
	}
	if d, _ := db.DeviceAuth(ctx, acc, lot[n-1].id); len(d.Credentials) != 1 || !bytes.Equal(d.Credentials[0].Hash, credential.Hash(key, acc, lot[n-1].id, "secret-one")) {
		t.Errorf("a request left to the stage changed a secret")
	}
	if dt, err := db.DeviceType(ctx, acc, "dt_1"); err != nil || dt.DeviceCount != n {
		t.Errorf("after the look-ups the device type counts %d devices (%v); want %d", dt.DeviceCount, err, n)
	}
	if _, err := db.Device(ctx, acc, fresh[0].id); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a dry run or a request left to the stage wrote a device: %v", err)
	}
}

// testTypeDeletedMeanwhile: a registration whose device type is gone by the time the store looks
// (deleted while the request was read) ends with devreg.ErrDeviceTypeDeleted and writes nothing,
// a dry run as well as a run that writes, on each path: new devices, and a mix of new and
// registered ones (the stage).
func testTypeDeletedMeanwhile(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_gone")
	registered := []entry{{"dev-1", "secret-one"}}
	if res, done := direct(t, db, acc, registered, regPlan{DeviceTypeID: "dt_1"}); !done || res.Created != 1 {
		t.Fatalf("registering: %+v, done %v", res, done)
	}
	if err := db.DeleteDeviceType(ctx, acc, "dt_gone"); err != nil {
		t.Fatal(err)
	}
	fresh := []entry{{"dev-2", "secret-two"}, {"dev-3", "secret-two"}}
	for name, entries := range map[string][]entry{"new devices": fresh, "new and registered": append(fresh, registered...)} {
		for _, dry := range []bool{true, false} {
			p := regPlan{DeviceTypeID: "dt_gone", DryRun: dry, OnConflict: devreg.ConflictSkip}
			reg := registration(acc, p)
			reg.Sample = sample(entries)
			res, err := db.Register(ctx, reg, EntryList(checked(acc, entries)), decideAs(p))
			if !errors.Is(err, devreg.ErrDeviceTypeDeleted) {
				t.Errorf("%s, dry run %v, into a deleted device type: %+v, %v; want ErrDeviceTypeDeleted", name, dry, res, err)
			}
		}
	}
	if _, err := db.Device(ctx, acc, "dev-2"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a registration into a deleted device type wrote a device: %v", err)
	}
}

// testTrustedCAs: a type's CAs are stored with their DER, listed oldest first to their account
// only, refused twice or beyond devreg.MaxTrustedCAs, deleted one by one and with their type.
func testTrustedCAs(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc, other := newAccount(t, db, "a"), newAccount(t, db, "b")
	newType(t, db, acc, "dt_1")
	newType(t, db, other, "dt_2")
	ca := func(i int) devreg.TrustedCA {
		return devreg.TrustedCA{ID: fmt.Sprintf("ca_%02d", i), DeviceTypeID: "dt_1", SHA256: fmt.Sprintf("%064x", i+1), Subject: fmt.Sprintf("CN=CA %d", i),
			NotAfter: t0.Add(time.Duration(i) * time.Hour), CreatedAt: t0.Add(time.Duration(i) * time.Second), DER: []byte{0x30, byte(i)}}
	}
	for i := range devreg.MaxTrustedCAs {
		if err := db.AddTrustedCA(ctx, acc, ca(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.AddTrustedCA(ctx, acc, ca(devreg.MaxTrustedCAs)); devreg.ErrorCode(err) != devreg.EINVALID {
		t.Errorf("the 11th CA: err = %v, want invalid", err)
	}
	same := ca(3)
	same.ID = "ca_again"
	if err := db.AddTrustedCA(ctx, acc, same); devreg.ErrorCode(err) != devreg.ECONFLICT {
		t.Errorf("the same certificate twice: err = %v, want conflict", err)
	}
	if err := db.AddTrustedCA(ctx, other, ca(20)); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("a CA on another account's type: err = %v, want not found", err)
	}
	cas, err := db.TrustedCAs(ctx, acc, "dt_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != devreg.MaxTrustedCAs {
		t.Fatalf("listed %d CAs", len(cas))
	}
	if diff := cmp.Diff(ca(0), cas[0]); diff != "" {
		t.Errorf("the first CA (-want +got):\n%s", diff)
	}
	if cas, err := db.TrustedCAs(ctx, other, "dt_1"); err != nil || len(cas) != 0 {
		t.Errorf("another account sees %d CAs of the type, %v", len(cas), err)
	}
	if err := db.DeleteTrustedCA(ctx, other, "dt_1", "ca_00"); devreg.ErrorCode(err) != devreg.ENOTFOUND {
		t.Errorf("another account deletes a CA: err = %v, want not found", err)
	}
	if err := db.DeleteTrustedCA(ctx, acc, "dt_1", "ca_00"); err != nil {
		t.Fatal(err)
	}
	if err := db.AddTrustedCA(ctx, acc, ca(10)); err != nil {
		t.Errorf("a CA in the freed place: %v", err)
	}
	if err := db.DeleteDeviceType(ctx, acc, "dt_1"); err != nil {
		t.Fatal(err)
	}
	newType(t, db, acc, "dt_1")
	if cas, err := db.TrustedCAs(ctx, acc, "dt_1"); err != nil || len(cas) != 0 {
		t.Errorf("a type made anew under a deleted one's ID has %d CAs, %v", len(cas), err)
	}
}
