package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/credential"
	"devreg/store"
)

// addCredential gives a device another credential with the given source, window and status, as
// the registry would.
func addCredential(t *testing.T, db *store.DB, acc, deviceID, secret string, c devreg.Credential) devreg.Credential {
	t.Helper()
	if c.ID == "" {
		c.ID = credential.RandomID("cr", 8)
	}
	if c.Status == "" {
		c.Status = devreg.StatusEnabled
	}
	added := devreg.StoredCredential{Credential: c, KeyID: key.ID, Hash: credential.Hash(key, acc, deviceID, secret)}
	if err := db.ChangeCredentials(context.Background(), acc, deviceID, func(devreg.DeviceAuth) (devreg.CredentialChange, error) {
		return devreg.CredentialChange{Add: &added}, nil
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// endFirstCredential gives a device's oldest credential a window that ends at end.
func endFirstCredential(t *testing.T, db *store.DB, acc, deviceID string, end time.Time) {
	t.Helper()
	if err := db.ChangeCredentials(context.Background(), acc, deviceID, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		c := d.Credentials[0]
		c.NotAfter = &end
		return devreg.CredentialChange{Update: []devreg.StoredCredential{c}}, nil
	}); err != nil {
		t.Fatal(err)
	}
}

// credentialSources lists a device's credentials as source:ID, oldest first, the one in the
// device's row marked with a *.
func credentialSources(t *testing.T, db *store.DB, acc, deviceID string) []string {
	t.Helper()
	d, err := db.DeviceAuth(context.Background(), acc, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range d.Credentials {
		s := string(c.Source) + ":" + c.ID
		if c.InDevice {
			s += "*"
		}
		out = append(out, s)
	}
	return out
}

// testResetCredentials: a replace with ResetCredentials leaves every registered device of the
// request with the registered secret alone (device-made credentials dropped and counted), and
// counts a device unchanged only if it holds exactly that, on the staged and the direct path and
// in a dry run.
func testResetCredentials(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	lot := []entry{{"exact", "factory-1"}, {"rotated", "factory-2"}, {"moved", "factory-3"}, {"windowed", "factory-4"}, {"api", "factory-5"}}
	if _, err := stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	// "rotated" made two credentials itself; "moved" has one in its row (its registration's was
	// deleted); "windowed" has an end on its factory secret; "api" holds an added one.
	addCredential(t, db, acc, "rotated", "device-made-1", devreg.Credential{CreatedAt: t0.Add(time.Minute), Source: devreg.CredentialFromDevice})
	addCredential(t, db, acc, "rotated", "device-made-2", devreg.Credential{CreatedAt: t0.Add(2 * time.Minute), Source: devreg.CredentialFromDevice})
	addCredential(t, db, acc, "moved", "device-made-3", devreg.Credential{CreatedAt: t0.Add(time.Minute), Source: devreg.CredentialFromDevice})
	if err := db.ChangeCredentials(ctx, acc, "moved", func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
		return devreg.CredentialChange{Delete: []string{d.Credentials[0].ID}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	endFirstCredential(t, db, acc, "windowed", t0.Add(time.Hour))
	addCredential(t, db, acc, "api", "api-secret-1", devreg.Credential{CreatedAt: t0.Add(time.Minute), Source: devreg.CredentialFromAPI})

	// "moved" no longer holds its factory secret: under keep it is a conflict; reset it anyway.
	reset := regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, ResetCredentials: true, DryRun: true}
	res, err := stage(t, db, acc, lot, reset)
	if diff := cmp.Diff(devreg.RegisterResult{Unchanged: 1, Replaced: 4, DryRun: true, DeviceCredentialsDropped: 3}, res); err != nil || diff != "" {
		t.Errorf("dry run of a reset (-want +got):\n%s %v", diff, err)
	}
	if got := credentialSources(t, db, acc, "rotated"); len(got) != 3 {
		t.Errorf("a dry run changed the credentials: %v", got)
	}
	reset.DryRun, reset.Batch = false, devreg.Batch{ID: "bat_2", CreatedAt: t0.Add(time.Hour)}
	res, err = stage(t, db, acc, lot, reset)
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_2", Unchanged: 1, Replaced: 4, DeviceCredentialsDropped: 3}, res); err != nil || diff != "" {
		t.Errorf("a reset (-want +got):\n%s %v", diff, err)
	}
	for i, e := range lot {
		d, err := db.DeviceAuth(ctx, acc, e.id)
		if err != nil {
			t.Fatal(err)
		}
		c := d.Credentials[0]
		if len(d.Credentials) != 1 || !c.InDevice || c.Source != devreg.CredentialFromRegistration || c.Status != devreg.StatusEnabled ||
			c.NotBefore != nil || c.NotAfter != nil || string(c.Hash) != string(credential.Hash(key, acc, e.id, e.secret)) {
			t.Errorf("device %d (%s) after a reset: %v; want its factory secret alone", i, e.id, credentialSources(t, db, acc, e.id))
		}
	}
	checkCounts(t, db, acc)

	// Sent again, every device is exactly as the reset leaves it: the direct path finds the lot
	// unchanged, and so does the stage.
	if res, done := direct(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, ResetCredentials: true}); !done || res != (devreg.RegisterResult{Unchanged: 5}) {
		t.Errorf("a reset sent again, direct: %+v, done %v", res, done)
	}
	if res, err := stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, ResetCredentials: true}); err != nil || res != (devreg.RegisterResult{Unchanged: 5}) {
		t.Errorf("a reset sent again, staged: %+v, %v", res, err)
	}
	// One more credential of any source is not "exactly": the direct path leaves the request to
	// the stage, which replaces that device.
	addCredential(t, db, acc, "exact", "device-made-4", devreg.Credential{CreatedAt: t0.Add(2 * time.Hour), Source: devreg.CredentialFromDevice})
	if _, done := direct(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, ResetCredentials: true}); done {
		t.Errorf("the direct path took a reset of a device that holds more than its factory secret")
	}
	res, err = stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace, ResetCredentials: true,
		Batch: devreg.Batch{ID: "bat_3", CreatedAt: t0.Add(3 * time.Hour)}})
	if diff := cmp.Diff(devreg.RegisterResult{BatchID: "bat_3", Unchanged: 4, Replaced: 1, DeviceCredentialsDropped: 1}, res); err != nil || diff != "" {
		t.Errorf("a reset of one device that rotated (-want +got):\n%s %v", diff, err)
	}
	if got := credentialSources(t, db, acc, "exact"); len(got) != 1 {
		t.Errorf("after the reset the device holds %v", got)
	}
	// Without reset a replace keeps what devices made (today's behaviour).
	addCredential(t, db, acc, "exact", "device-made-5", devreg.Credential{CreatedAt: t0.Add(4 * time.Hour), Source: devreg.CredentialFromDevice})
	if res, err := stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", OnConflict: devreg.ConflictReplace}); err != nil || res != (devreg.RegisterResult{Unchanged: 5}) {
		t.Errorf("a replace that keeps device-made credentials: %+v, %v", res, err)
	}
	checkCounts(t, db, acc)
}

// testRevokeBatchCredentials: revoking a batch's device-made credentials deletes them on every
// device that another credential lets in now, takes the row's place for one kept there, leaves
// the others as they were and lists them in the batch's order, and appends its audit entry only
// when it deleted any.
func testRevokeBatchCredentials(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	newType(t, db, acc, "dt_1")
	newType(t, db, acc, "dt_2")
	var lot []entry
	for i := range 40 {
		lot = append(lot, entry{fmt.Sprintf("dev-%02d", i), fmt.Sprintf("factory-%02d", i)})
	}
	if _, err := stage(t, db, acc, lot, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_1", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stage(t, db, acc, []entry{{"other", "factory-other"}}, regPlan{DeviceTypeID: "dt_2", Batch: devreg.Batch{ID: "bat_2", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(24 * time.Hour)
	made := func(id string, n int) {
		addCredential(t, db, acc, id, "made-"+id+fmt.Sprint(n), devreg.Credential{CreatedAt: t0.Add(time.Duration(n) * time.Minute), Source: devreg.CredentialFromDevice})
	}
	// Every third device rotated once, dev-01 twice.
	for i := 0; i < 40; i += 3 {
		made(lot[i].id, 1)
	}
	made("dev-01", 1)
	made("dev-01", 2)
	made("other", 1)
	// dev-06's factory secret ended with its grace: only its own credential lets it in.
	endFirstCredential(t, db, acc, "dev-06", t0.Add(time.Hour))
	// dev-09 holds only what it made (its registration's credential deleted), so its own is in
	// its row; dev-12 too, but it has an API credential besides, which takes the row's place.
	for _, id := range []string{"dev-09", "dev-12"} {
		if id == "dev-12" {
			addCredential(t, db, acc, id, "api-secret", devreg.Credential{CreatedAt: t0.Add(5 * time.Minute), Source: devreg.CredentialFromAPI})
		}
		if err := db.ChangeCredentials(ctx, acc, id, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
			return devreg.CredentialChange{Delete: []string{d.Credentials[0].ID}}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := credentialSources(t, db, acc, "dev-12"); len(got) != 2 || got[0][len(got[0])-1] != '*' || got[0][:7] != "device:" {
		t.Fatalf("dev-12 before the revocation: %v, want its own credential in its row", got)
	}

	audited := 0
	audit := func(r devreg.BatchRevocation) *devreg.AuditEntry {
		audited++
		return &devreg.AuditEntry{ID: credential.RandomID("aud", 8), Time: now, Actor: devreg.AuditActor{Type: devreg.ActorAPIKey, ID: "key_a", Name: "owner"},
			Action: "credentials.revoke", Object: devreg.AuditObject{Type: "batch", ID: "bat_1"}, Details: map[string]any{"deleted": r.Deleted}}
	}
	r, left, err := db.RevokeBatchCredentials(ctx, acc, "dt_1", "bat_1", now, audit)
	if err != nil {
		t.Fatal(err)
	}
	// 14 devices rotated (dev-00, dev-03, ..., dev-39), and dev-01 twice; dev-06 and dev-09 are
	// left, so 13 lose 14 credentials.
	if diff := cmp.Diff(devreg.BatchRevocation{Devices: 40, Deleted: 14, DevicesChanged: 13, DevicesLeft: 2}, r); diff != "" {
		t.Errorf("revocation (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]devreg.DeviceLeft{{Index: 6, DeviceID: "dev-06", Others: 1}, {Index: 9, DeviceID: "dev-09", Others: 0}}, left); diff != "" {
		t.Errorf("devices left (-want +got):\n%s", diff)
	}
	if audited != 1 {
		t.Errorf("the audit entry was made %d times, want once", audited)
	}
	for _, c := range []struct {
		id   string
		want int
	}{{"dev-00", 1}, {"dev-01", 1}, {"dev-02", 1}, {"dev-06", 2}, {"dev-09", 1}, {"dev-12", 1}, {"other", 2}} {
		got := credentialSources(t, db, acc, c.id)
		if len(got) != c.want {
			t.Errorf("%s after the revocation: %v, want %d credentials", c.id, got, c.want)
		}
	}
	if got := credentialSources(t, db, acc, "dev-12"); len(got) != 1 || got[0][:4] != "api:" || got[0][len(got[0])-1] != '*' {
		t.Errorf("dev-12 after the revocation: %v, want its API credential alone, in its row", got)
	}
	if got := credentialSources(t, db, acc, "dev-00"); got[0][:13] != "registration:" {
		t.Errorf("dev-00 after the revocation: %v, want its registration's credential", got)
	}

	// Again: nothing left to delete, no audit entry; the devices left are listed again.
	r, left, err = db.RevokeBatchCredentials(ctx, acc, "dt_1", "bat_1", now, audit)
	if err != nil || r.Deleted != 0 || r.DevicesLeft != 2 || len(left) != 2 || audited != 1 {
		t.Errorf("a second revocation: %+v, %d left, %v; audited %d times", r, len(left), err, audited)
	}
	// The batch seen through another type holds nothing.
	if r, _, err := db.RevokeBatchCredentials(ctx, acc, "dt_2", "bat_1", now, audit); err != nil || r.Devices != 0 || r.Deleted != 0 {
		t.Errorf("the batch through another type: %+v, %v", r, err)
	}
	checkCounts(t, db, acc) // before the next lot, which is more than it can list

	// A lot of more devices left than a refusal lists: all are counted, the first MaxProblems
	// listed, in order.
	var big []entry
	for i := range devreg.MaxProblems + 1 {
		big = append(big, entry{fmt.Sprintf("big-%04d", i), "factory-big"})
	}
	if _, err := stage(t, db, acc, big, regPlan{DeviceTypeID: "dt_1", Batch: devreg.Batch{ID: "bat_big", CreatedAt: t0}}); err != nil {
		t.Fatal(err)
	}
	for _, e := range big { // the factory secret's grace over, one credential made by the device
		if err := db.ChangeCredentials(ctx, acc, e.id, func(d devreg.DeviceAuth) (devreg.CredentialChange, error) {
			c := d.Credentials[0]
			c.NotAfter = new(t0.Add(time.Hour))
			made := devreg.StoredCredential{Credential: devreg.Credential{ID: "cr_made", CreatedAt: t0.Add(time.Minute), Status: devreg.StatusEnabled,
				Source: devreg.CredentialFromDevice}, KeyID: key.ID, Hash: credential.Hash(key, acc, e.id, "made")}
			return devreg.CredentialChange{Update: []devreg.StoredCredential{c}, Add: &made}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	r, left, err = db.RevokeBatchCredentials(ctx, acc, "dt_1", "bat_big", now, audit)
	if err != nil || r.Devices != int64(len(big)) || r.DevicesLeft != int64(len(big)) || r.Deleted != 0 || len(left) != devreg.MaxProblems ||
		left[0].DeviceID != "big-0000" || left[len(left)-1].Index != devreg.MaxProblems-1 {
		t.Errorf("a lot of %d devices left: %+v, %d listed, %v", len(big), r, len(left), err)
	}
}
