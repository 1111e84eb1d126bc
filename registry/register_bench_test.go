package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"devreg"
	"devreg/bulkfile"
	"devreg/registry"
)

// benchRegistry opens a registry on SQLite in a temporary directory, with an account whose admin
// the returned context speaks for, and one device type.
func benchRegistry(b *testing.B) (*registry.Service, context.Context, devreg.DeviceType) {
	b.Helper()
	ctx := context.Background()
	svc, _ := registry.OpenTestService(b, "sqlite:"+filepath.Join(b.TempDir(), "devreg.db"))
	acct, _, err := svc.NewAccount(ctx, "Bench", "bench@example.test", "bench-password")
	if err != nil {
		b.Fatal(err)
	}
	ctx = devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acct.ID, Scope: devreg.ScopeAdmin, Name: "bench", Source: devreg.SourceAPI})
	dt, err := svc.CreateDeviceType(ctx, devreg.DeviceType{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	return svc, ctx, dt
}

// benchFile is a bulk file of n devices with UUID-like IDs, spread over the key space.
func benchFile(n int) []byte {
	var file bytes.Buffer
	for i := range n {
		fmt.Fprintf(&file, "%08x-dev-%08d, secret-%016d,\n", uint32(i)*2654435761, i, i)
	}
	return file.Bytes()
}

// BenchmarkRegisterCSV registers b.N new devices from a bulk file in one request, on SQLite.
func BenchmarkRegisterCSV(b *testing.B) {
	benchRegister(b, false, devreg.RegisterOptions{}, func(res devreg.RegisterResult) bool { return res.Created == int64(b.N) })
}

// BenchmarkResendCSV sends a bulk file of b.N registered devices again.
func BenchmarkResendCSV(b *testing.B) {
	benchRegister(b, true, devreg.RegisterOptions{}, func(res devreg.RegisterResult) bool { return res.Unchanged == int64(b.N) })
}

// BenchmarkDryRunCSV checks a bulk file of b.N new devices.
func BenchmarkDryRunCSV(b *testing.B) {
	benchRegister(b, false, devreg.RegisterOptions{DryRun: true}, func(res devreg.RegisterResult) bool { return res.Created == int64(b.N) })
}

func benchRegister(b *testing.B, registered bool, opts devreg.RegisterOptions, ok func(devreg.RegisterResult) bool) {
	svc, ctx, dt := benchRegistry(b)
	file := benchFile(b.N)
	if registered {
		if _, err := svc.Register(ctx, dt.ID, bulkfile.NewReader(bytes.NewReader(file)), devreg.RegisterOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	res, err := svc.Register(ctx, dt.ID, bulkfile.NewReader(bytes.NewReader(file)), opts)
	if err != nil || !ok(res) {
		b.Fatalf("%+v %v", res, err)
	}
}

// BenchmarkDeviceStatusChanges disables and enables one device b.N times: a burst of
// single-device changes, each a transaction of its own with its audit entry.
func BenchmarkDeviceStatusChanges(b *testing.B) {
	svc, ctx, dt := benchRegistry(b)
	if _, err := svc.Register(ctx, dt.ID, bulkfile.NewReader(strings.NewReader("dev-1, secret-of-dev-1")), devreg.RegisterOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		status := devreg.StatusDisabled
		if i%2 == 1 {
			status = devreg.StatusEnabled
		}
		if _, err := svc.SetDeviceStatus(ctx, "dev-1", status); err != nil {
			b.Fatal(err)
		}
	}
}
