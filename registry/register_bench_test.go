package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"devreg"
	"devreg/bulkfile"
	"devreg/server"
)

// BenchmarkRegisterCSV registers b.N devices from a bulk file in one request, on SQLite.
func BenchmarkRegisterCSV(b *testing.B) {
	ctx := context.Background()
	svc, db, err := server.OpenRegistry(ctx, server.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	acct, _, err := svc.NewAccount(ctx, "Bench", "bench@example.test", "bench-password")
	if err != nil {
		b.Fatal(err)
	}
	ctx = devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acct.ID, Scope: devreg.ScopeAdmin, Name: "bench", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(ctx, devreg.DeviceType{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var file bytes.Buffer
	for i := range b.N {
		fmt.Fprintf(&file, "dev-%08d, secret-%016d,\n", i, i)
	}
	b.ResetTimer()
	res, err := svc.Register(ctx, dt.ID, bulkfile.NewReader(&file), devreg.RegisterOptions{})
	if err != nil || res.Created != int64(b.N) {
		b.Fatalf("%+v %v", res, err)
	}
}
