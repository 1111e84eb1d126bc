package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
)

// TestAttackKeyCheckMissesCredentialsTable: the start-up check that refuses a secret key file
// lacking a key some stored hash was made with reads only the devices table. A device's further
// credentials (the credentials table) keep the key they were made with until each is used, so an
// operator who rotates the key, sees every device row move to the new one and retires the old
// key gets a server that starts without a word, and the device-made and added credentials that
// were not used since can never authenticate again: a device that rotated its secret is locked
// out.
func TestAttackKeyCheckMissesCredentialsTable(t *testing.T) {
	pgtest.Each(t, testAttackKeyCheck)
}

func testAttackKeyCheck(t *testing.T, database string) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{Addr: "127.0.0.1:0", DataDir: dir, Database: database, Logger: slog.New(slog.DiscardHandler)}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	acc, _, err := s.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	admin := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	dt, err := s.Service.CreateDeviceType(admin, devreg.DeviceType{Name: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	devices := entryList{{Index: 0, DeviceID: "d1", Secret: "factory-secret-1"}}
	if _, err := s.Service.Register(admin, dt.ID, &devices, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	// The device rotates; the operator also adds a spare secret. Both hashed with the first key.
	rot, err := s.Service.RotateCredential(ctx, acc.ID, "d1", "factory-secret-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Service.AddCredential(admin, "d1", devreg.NewCredential{Secret: "spare-secret-22"}); err != nil {
		t.Fatal(err)
	}
	s.ln.Close()
	s.Shutdown(ctx)

	// Rotate the server key: append a new one, which becomes current.
	keyFile := filepath.Join(dir, "secret.keys")
	old, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	newLine := credential.NewKeyLine()
	if err := os.WriteFile(keyFile, append(old, []byte(newLine+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The device logs in with its factory secret (still in its grace): its row moves to the new key.
	if _, err := s.Service.AuthenticateDevice(ctx, acc.ID, "d1", "factory-secret-1"); err != nil {
		t.Fatal(err)
	}
	ids, err := s.db.HashKeyIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.ln.Close()
	s.Shutdown(ctx)
	newID, _, _ := strings.Cut(newLine, ":")
	if len(ids) != 1 || ids[0] != newID {
		t.Logf("key IDs in use per the check: %v", ids)
	}

	// The check says only the new key is in use; the operator retires the old one.
	var kept []string
	for _, line := range strings.Split(string(old), "\n") {
		if strings.HasPrefix(line, "#") {
			kept = append(kept, line)
		}
	}
	kept = append(kept, newLine, "")
	if err := os.WriteFile(keyFile, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, cfg)
	if err != nil {
		return // refused to start, naming the key that credentials still need: fixed
	}
	defer s.Shutdown(ctx)
	for _, secret := range []string{rot.Secret, "spare-secret-22"} {
		if _, err := s.Service.AuthenticateDevice(ctx, acc.ID, "d1", secret); err != nil {
			t.Errorf("the server started without the key that a credential of d1 was hashed with (the start-up check "+
				"reads only the devices table), and that credential no longer authenticates: %v", err)
		}
	}
}
