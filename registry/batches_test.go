package registry_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/registry"
	"devreg/store"
)

// TestWhoMayChangeABatch: a console user who may register (the operations role) may disable,
// enable and delete the lots they registered themselves, and no other; an API key needs the
// admin scope for any lot, its own included; an administrator may change every lot, those of
// users and those made before batches recorded their creator. Each refusal says why.
func TestWhoMayChangeABatch(t *testing.T) { pgtest.Each(t, testWhoMayChangeABatch) }

func testWhoMayChangeABatch(t *testing.T, url string) {
	ctx := context.Background()
	svc, _ := registry.OpenTestService(t, url)
	a, admin := makerA(t, svc)
	// Users of each role, as an admin makes them: the service reads a console caller's role
	// again before it writes, so a caller must be the user it says it is.
	user := func(email string, role devreg.Role) devreg.User {
		t.Helper()
		u, _, err := svc.CreateUser(admin, registry.NewUser{Email: email, Role: role, Password: "a password of the user"})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	owner, colleagueUser, readerUser := user("ops@a.example", devreg.RoleOperations), user("colleague@a.example", devreg.RoleOperations),
		user("dev@a.example", devreg.RoleDeveloper)
	dt, err := svc.CreateDeviceType(admin, devreg.DeviceType{Name: "T"})
	if err != nil {
		t.Fatal(err)
	}
	// The owner, as an operations user would be: a console user with the register scope.
	operations := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeRegister, Name: owner.Email,
		Source: devreg.SourceConsole, UserID: owner.ID})
	colleague := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeRegister, Name: colleagueUser.Email,
		Source: devreg.SourceConsole, UserID: colleagueUser.ID})
	reader := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeRead, Name: readerUser.Email,
		Source: devreg.SourceConsole, UserID: readerUser.ID})
	k, err := svc.CreateAPIKey(admin, devreg.NewAPIKey{Name: "line 3", Scope: devreg.ScopeRegister})
	if err != nil {
		t.Fatal(err)
	}
	station, err := svc.AuthenticateAPIKey(ctx, k.Key)
	if err != nil {
		t.Fatal(err)
	}
	stationCtx := devreg.NewContextWithCaller(ctx, station)

	lots := 0
	lot := func(t *testing.T, who context.Context) devreg.Batch {
		t.Helper()
		lots++
		res, err := svc.Register(who, dt.ID, entries(fmt.Sprintf("d-%d", lots), "secret-of-the-lot"), devreg.RegisterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := svc.Batch(admin, res.BatchID)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ownLot := lot(t, operations)
	if ownLot.CreatorType != devreg.ActorUser || ownLot.CreatorID != owner.ID {
		t.Errorf("the lot's creator is %s %s, want user %s", ownLot.CreatorType, ownLot.CreatorID, owner.ID)
	}
	stationLot := lot(t, stationCtx)
	if stationLot.CreatorType != devreg.ActorAPIKey || stationLot.CreatorID != k.ID {
		t.Errorf("the station's lot's creator is %s %s, want api_key %s", stationLot.CreatorType, stationLot.CreatorID, k.ID)
	}

	tests := []struct {
		name  string
		who   context.Context
		batch devreg.Batch
		want  string
	}{
		{"a colleague's lot", colleague, ownLot, devreg.EFORBIDDEN},
		{"a reader", reader, ownLot, devreg.EFORBIDDEN},
		{"a station's lot, by the operations user", operations, stationLot, devreg.EFORBIDDEN},
		{"a register key's own lot", stationCtx, stationLot, devreg.EFORBIDDEN},
		{"the operations user's own lot", operations, ownLot, ""},
		{"the station's lot, by an administrator", admin, stationLot, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := svc.SetBatchStatus(tc.who, tc.batch.ID, devreg.StatusDisabled)
			if got := devreg.ErrorCode(err); got != tc.want {
				t.Fatalf("disable: %q (%v), want %q", got, err, tc.want)
			}
			if err == nil {
				if _, err := svc.SetBatchStatus(tc.who, tc.batch.ID, devreg.StatusEnabled); err != nil {
					t.Fatalf("enable again: %v", err)
				}
			}
			n, err := svc.DeleteBatch(tc.who, tc.batch.ID)
			if got := devreg.ErrorCode(err); got != tc.want {
				t.Fatalf("delete: %q (%v), want %q", got, err, tc.want)
			}
			if err == nil && n != 1 {
				t.Errorf("deleted %d devices, want 1", n)
			}
			_, err = svc.Batch(admin, tc.batch.ID)
			if exists := err == nil; exists != (tc.want != "") {
				t.Errorf("the batch exists afterwards: %v (%v)", exists, err)
			}
		})
	}

	// A batch made before creators were recorded is an administrator's alone.
	old := lot(t, operations)
	driver, dsn := "sqlite", strings.TrimPrefix(url, "sqlite:")
	if store.IsPostgres(url) {
		driver, dsn = "pgx", url
	}
	raw, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.ExecContext(ctx, `UPDATE batches SET creator_type = '', creator_id = '' WHERE id = $1`, old.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.DeleteBatch(operations, old.ID); devreg.ErrorCode(err) != devreg.EFORBIDDEN {
		t.Errorf("an operations user deleting a lot without creator: %v; want forbidden", err)
	}
	if n, err := svc.DeleteBatch(admin, old.ID); err != nil || n != 1 {
		t.Errorf("an administrator deleting it: %d, %v", n, err)
	}
}
