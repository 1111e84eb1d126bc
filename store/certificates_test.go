package store_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/credential"
	"devreg/internal/certtest"
	"devreg/registry"
	"devreg/store"
)

// TestCertificateCredentialSurvivesBackup backs up a registry whose device holds a certificate
// credential and restores it: the device still holds the certificate, with what it said, and the
// checks know a fingerprint from a secret's hash (no key is missing for it).
func TestCertificateCredentialSurvivesBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "data"), 0o700)
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(dir, "data", "devreg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys, err := credential.LoadOrCreateKeyring(filepath.Join(dir, "secret.keys"))
	if err != nil {
		t.Fatal(err)
	}
	svc := registry.New(db, keys)
	a, _, err := svc.NewAccount(ctx, "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "Sensor"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := certtest.NewCA(t, "Factory CA").Issue(t, "d1")
	src := &oneEntry{e: devreg.DeviceEntry{DeviceID: "d1", Certificate: string(leaf.PEM)}}
	if _, err := svc.Register(admin, dt.ID, src, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := db.Backup(ctx, filepath.Join(dir, "b.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(info.KeyIDs) != 0 || info.Tables["certificate_details"] != 1 {
		t.Errorf("backup info = %+v, want no key IDs (a fingerprint is under none) and one certificate's details", info)
	}
	restored := filepath.Join(dir, "restored", "devreg.db")
	os.Mkdir(filepath.Dir(restored), 0o700)
	if _, err := store.Restore(ctx, filepath.Join(dir, "b.db"), restored, store.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	db2, err := store.Open(ctx, "sqlite:"+restored)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	svc2 := registry.New(db2, keys)
	list, err := svc2.ListCredentials(admin, "d1")
	if err != nil || len(list) != 1 || list[0].Kind != devreg.CredentialCertificate || list[0].SHA256 != leaf.SHA256() || list[0].Subject != "CN=d1" {
		t.Fatalf("restored d1's credentials = %+v, %v", list, err)
	}
	r, err := db2.CheckHashKeys(ctx, func(id string) bool { _, ok := keys.Lookup(id); return ok }, "secret.keys")
	if err != nil || len(r.Problems) > 0 || !strings.Contains(r.Summary, "1 certificate credential") {
		t.Errorf("hash key check = %+v, %v; want clean, counting the certificate", r, err)
	}
}

type oneEntry struct {
	e    devreg.DeviceEntry
	done bool
}

func (o *oneEntry) Next() (devreg.DeviceEntry, error) {
	if o.done {
		return devreg.DeviceEntry{}, io.EOF
	}
	o.done = true
	return o.e, nil
}
