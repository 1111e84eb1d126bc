package client_test

import (
	"context"
	"testing"

	"devreg"
	"devreg/client"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// TestTrustedCAs sets a type's certificate settings and manages its trusted CAs through the client.
func TestTrustedCAs(t *testing.T) {
	pgtest.Each(t, testTrustedCAs)
}

func testTrustedCAs(t *testing.T, database string) {
	ctx := context.Background()
	c, _, _ := newClient(t, database)
	name, field, on, limit := "Lock", "san_dns", true, 500
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name, CertificateIDField: &field, AutoRegister: &on, AutoRegisterLimit: &limit})
	if err != nil || dt.CertificateIDField != field || !dt.AutoRegister || dt.AutoRegisterMax() != limit {
		t.Fatalf("CreateDeviceType with certificate settings = %+v, %v", dt, err)
	}
	root := certtest.NewCA(t, "Lock Factory CA")
	ca, err := c.AddTrustedCA(ctx, dt.ID, string(root.PEM))
	if err != nil || ca.SHA256 != root.SHA256() {
		t.Fatalf("AddTrustedCA = %+v, %v", ca, err)
	}
	if _, err := c.AddTrustedCA(ctx, dt.ID, string(root.PEM)); !client.IsCode(err, devreg.ECONFLICT) {
		t.Errorf("AddTrustedCA twice: %v, want %s", err, devreg.ECONFLICT)
	}
	if _, err := c.AddTrustedCA(ctx, dt.ID, string(root.Issue(t, "lock-1").PEM)); !client.IsCode(err, devreg.EINVALID) {
		t.Errorf("AddTrustedCA of a device certificate: %v, want %s", err, devreg.EINVALID)
	}
	if cas, err := c.ListTrustedCAs(ctx, dt.ID); err != nil || len(cas) != 1 || cas[0].ID != ca.ID {
		t.Errorf("ListTrustedCAs = %+v, %v", cas, err)
	}
	if err := c.DeleteTrustedCA(ctx, dt.ID, ca.ID); err != nil {
		t.Fatal(err)
	}
	if cas, err := c.ListTrustedCAs(ctx, dt.ID); err != nil || len(cas) != 0 {
		t.Errorf("ListTrustedCAs after the delete = %+v, %v", cas, err)
	}
}
