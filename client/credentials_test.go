package client_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"devreg"
	"devreg/client"
	"devreg/internal/apitest"
	"devreg/internal/pgtest"
	"devreg/server"
)

// newClient starts a server on a fresh database (a URL of pgtest.Each) and returns a client with an
// admin key whose traffic is checked against the OpenAPI document, and the account's ID.
func newClient(t *testing.T, database string) (*client.Client, string, string) {
	t.Helper()
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Database: database, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	acct, key, err := srv.Service.NewAccount(ctx, "Acme", "owner@acme.test", "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := apitest.NewTransport(nil, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range tr.Failures() {
			t.Errorf("OpenAPI: %s", f)
		}
	})
	c := client.New(srv.URL(), key)
	c.HTTP = &http.Client{Transport: tr}
	return c, srv.URL(), acct.ID
}

// TestCredentials manages a device's credentials through the client, and rotates its secret as
// the device does.
func TestCredentials(t *testing.T) {
	pgtest.Each(t, testCredentials)
}

func testCredentials(t *testing.T, database string) {
	ctx := context.Background()
	c, serverURL, accountID := newClient(t, database)
	name, hour, noGraceName, zero := "Lock", 3600, "No grace", 0
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name, RotationGraceSeconds: &hour})
	if err != nil || dt.RotationGraceSeconds == nil || *dt.RotationGraceSeconds != hour {
		t.Fatalf("CreateDeviceType with a grace of an hour = %+v, %v", dt, err)
	}
	noGrace, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &noGraceName, RotationGraceSeconds: &zero})
	if err != nil || noGrace.RotationGraceSeconds == nil || *noGrace.RotationGraceSeconds != 0 {
		t.Fatalf("CreateDeviceType with no grace = %+v, %v", noGrace, err)
	}
	if _, err := c.Register(ctx, dt.ID, []client.Credential{{DeviceID: "lock-1", Secret: "factory-secret-1"}}, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}

	list, err := c.ListCredentials(ctx, "lock-1")
	if err != nil || len(list) != 1 || list[0].Source != devreg.CredentialFromRegistration {
		t.Fatalf("ListCredentials = %+v, %v; want the registration's credential", list, err)
	}
	first := list[0]
	gen, err := c.AddCredential(ctx, "lock-1", devreg.NewCredential{Generate: true})
	if err != nil || len(gen.Secret) < 32 || gen.Source != devreg.CredentialFromAPI {
		t.Fatalf("AddCredential(generate) = %+v, %v", gen, err)
	}
	until := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	ours, err := c.AddCredential(ctx, "lock-1", devreg.NewCredential{Secret: "our-secret-for-lock-1", NotAfter: &until})
	if err != nil || ours.Secret != "" || ours.NotAfter == nil || !ours.NotAfter.Equal(until) || ours.NotBefore != nil {
		t.Fatalf("AddCredential(secret, not_after) = %+v, %v", ours, err)
	}
	if _, err := c.AddCredential(ctx, "lock-1", devreg.NewCredential{Secret: "short"}); !client.IsCode(err, devreg.EINVALID) {
		t.Errorf("AddCredential with a short secret: %v, want %s", err, devreg.EINVALID)
	}
	if _, err := c.ListCredentials(ctx, "no-such-device"); !client.IsCode(err, devreg.ENOTFOUND) {
		t.Errorf("ListCredentials of an unknown device: %v, want %s", err, devreg.ENOTFOUND)
	}

	disabled := devreg.StatusDisabled
	upd, err := c.UpdateCredential(ctx, "lock-1", ours.ID, devreg.CredentialUpdate{Status: &disabled})
	if err != nil || upd.Status != disabled || upd.NotAfter == nil {
		t.Errorf("UpdateCredential(disabled) = %+v, %v; want disabled, its end kept", upd, err)
	}
	upd, err = c.UpdateCredential(ctx, "lock-1", ours.ID, devreg.CredentialUpdate{SetNotAfter: true})
	if err != nil || upd.NotAfter != nil || upd.Status != disabled {
		t.Errorf("UpdateCredential(no end) = %+v, %v; want no end, still disabled", upd, err)
	}
	if err := c.DeleteCredential(ctx, "lock-1", ours.ID); err != nil {
		t.Errorf("DeleteCredential: %v", err)
	}
	if err := c.DeleteCredential(ctx, "lock-1", gen.ID); err != nil {
		t.Errorf("DeleteCredential: %v", err)
	}
	if err := c.DeleteCredential(ctx, "lock-1", first.ID); !client.IsCode(err, devreg.ECONFLICT) {
		t.Errorf("DeleteCredential of the last one: %v, want %s", err, devreg.ECONFLICT)
	}

	// The device rotates its factory secret; the old one works for the type's grace of an hour.
	before := time.Now()
	rot, err := client.RotateCredential(ctx, nil, serverURL, accountID, "lock-1", "factory-secret-1")
	if err != nil || len(rot.Secret) < 24 || rot.PreviousCredentialID != first.ID || rot.CredentialID == "" {
		t.Fatalf("RotateCredential = %+v, %v", rot, err)
	}
	if d := rot.PreviousNotAfter.Sub(before); d < time.Hour-time.Second || d > time.Hour+time.Minute {
		t.Errorf("previous_not_after is %s after the rotation, want an hour", d)
	}
	for _, secret := range []string{rot.Secret, "factory-secret-1"} {
		if _, err := client.DeviceToken(ctx, nil, serverURL, accountID, "lock-1", secret, ""); err != nil {
			t.Errorf("DeviceToken after the rotation: %v", err)
		}
	}
	list, err = c.ListCredentials(ctx, "lock-1")
	if err != nil || len(list) != 2 || list[1].ID != rot.CredentialID || list[1].Source != devreg.CredentialFromDevice || list[1].Secret != "" {
		t.Errorf("credentials after the rotation = %+v, %v", list, err)
	}
	_, err = client.RotateCredential(ctx, nil, serverURL, accountID, "lock-1", "not-the-secret")
	var de *client.DeviceError
	if !errors.As(err, &de) || de.Status != http.StatusUnauthorized || de.Code != "invalid_client" {
		t.Errorf("RotateCredential with a wrong secret: %v, want 401 invalid_client", err)
	}
}
