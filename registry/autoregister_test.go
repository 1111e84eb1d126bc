package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// autoEnv is a credEnv whose device type trusts a CA and registers the devices of its
// certificates just in time, with a second service on the same database: another server.
type autoEnv struct {
	*credEnv
	other *Service
	ca    *certtest.Cert
}

func newAutoEnv(t *testing.T, url string, limit int) *autoEnv {
	t.Helper()
	e := &autoEnv{credEnv: &credEnv{}, ca: certtest.NewCA(t, "Factory CA")}
	now := time.Now().UTC().Truncate(time.Microsecond)
	e.now.Store(&now)
	for _, svc := range []**Service{&e.svc, &e.other} {
		*svc, _ = OpenTestService(t, url)
		(*svc).Now = func() time.Time { return *e.now.Load() }
	}
	a, _, err := e.svc.NewAccount(context.Background(), "Maker", "owner@maker.example", "password-of-the-owner")
	if err != nil {
		t.Fatal(err)
	}
	e.acc = a.ID
	e.admin = devreg.NewContextWithCaller(context.Background(), devreg.Caller{AccountID: a.ID, Scope: devreg.ScopeAdmin, Name: "admin", Source: devreg.SourceAPI})
	on := true
	if e.dt, err = e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Sensor", AutoRegister: on, AutoRegisterLimit: &limit}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddTrustedCA(e.admin, e.dt.ID, string(e.ca.PEM)); err != nil {
		t.Fatal(err)
	}
	return e
}

// autoBatches returns the account's batches of just-in-time registrations, newest first.
func (e *autoEnv) autoBatches(t *testing.T) []devreg.Batch {
	t.Helper()
	all, _, err := e.svc.ListBatches(e.admin, devreg.BatchFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var auto []devreg.Batch
	for _, b := range all {
		if b.Source == devreg.SourceAutoRegister {
			auto = append(auto, b)
		}
	}
	return auto
}

func (e *autoEnv) deviceCount(t *testing.T, typeID string) int64 {
	t.Helper()
	dt, err := e.svc.DeviceType(e.admin, typeID)
	if err != nil {
		t.Fatal(err)
	}
	return dt.DeviceCount
}

// TestAutoRegister registers an unknown device whose certificate chains to its type's CA at its
// first certificate login: pinned by its certificate, into the type's batch of the day (one per
// day), counted, audited with the device as actor; the device then logs in as any device
// registered by certificate, and a sibling certificate with its ID no longer lets anyone in.
func TestAutoRegister(t *testing.T) { pgtest.Each(t, testAutoRegister) }

func testAutoRegister(t *testing.T, url string) {
	e := newAutoEnv(t, url, 100)
	leaf := e.ca.Issue(t, "sensor-0001", certtest.Serial(0xabc))
	dev, err := e.svc.AuthenticateDeviceCertificate(context.Background(), e.acc, "sensor-0001", []*x509.Certificate{leaf.Cert})
	if err != nil {
		t.Fatalf("first login of an unknown device with a certificate of the type's CA: %v", err)
	}
	batches := e.autoBatches(t)
	if len(batches) != 1 {
		t.Fatalf("%d batches of just-in-time registrations, want 1", len(batches))
	}
	b := batches[0]
	if dev.DeviceTypeID != e.dt.ID || dev.DeviceID != "sensor-0001" || dev.CredentialID != "cr_"+b.ID {
		t.Errorf("authenticated device = %+v, want sensor-0001 of %s with the credential of batch %s", dev, e.dt.ID, b.ID)
	}
	if b.DeviceCount != 1 || b.DeviceTypeID != e.dt.ID || b.Status != devreg.StatusEnabled || b.CreatedBy != autoRegisterCreator {
		t.Errorf("batch = %+v, want 1 enabled device of %s, created by %q", b, e.dt.ID, autoRegisterCreator)
	}
	if n := e.deviceCount(t, e.dt.ID); n != 1 {
		t.Errorf("device type counts %d devices, want 1", n)
	}
	creds, err := e.svc.ListCredentials(e.admin, "sensor-0001")
	if err != nil {
		t.Fatal(err)
	}
	if len(creds) != 1 || creds[0].Kind != devreg.CredentialCertificate || creds[0].SHA256 != leaf.SHA256() || creds[0].Serial != "0abc" && creds[0].Serial != "abc" {
		t.Errorf("credentials = %+v, want the certificate %s pinned with its details", creds, leaf.SHA256())
	}
	entries, _, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "device.auto_register"})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Actor.Type != devreg.ActorDevice || entries[0].Actor.ID != "sensor-0001" ||
		entries[0].Details["batch_id"] != b.ID || entries[0].Details["batch_created"] != true || entries[0].Details["sha256"] != leaf.SHA256() {
		t.Errorf("audit entries = %+v, want one by device sensor-0001 naming batch %s (made by it) and the fingerprint", entries, b.ID)
	}

	// Logged in again, it is the registered device: nothing more is registered.
	if id, code, err := e.certLogin("sensor-0001", leaf); code != "" || id != "cr_"+b.ID {
		t.Fatalf("second login = %q, %v; want the pinned credential", id, err)
	}
	e.wantCertRefused(t, "a sibling certificate of the registered device", "none of them", "sensor-0001", e.ca.Issue(t, "sensor-0001"))

	// A second device the same day goes into the same batch, through the other server too.
	second := e.ca.Issue(t, "sensor-0002")
	if _, err := e.other.AuthenticateDeviceCertificate(context.Background(), e.acc, "sensor-0002", []*x509.Certificate{second.Cert}); err != nil {
		t.Fatal(err)
	}
	if batches := e.autoBatches(t); len(batches) != 1 || batches[0].DeviceCount != 2 {
		t.Fatalf("after a second device: batches %+v, want one with 2 devices", batches)
	}
	// The next UTC day has its own batch.
	e.advance(24 * time.Hour)
	if _, _, err := e.certLogin("sensor-0003", e.ca.Issue(t, "sensor-0003")); err != nil {
		t.Fatal(err)
	}
	if batches := e.autoBatches(t); len(batches) != 2 || batches[0].DeviceCount != 1 || batches[1].ID != b.ID {
		t.Fatalf("the next day: batches %+v, want a new one with 1 device besides %s", batches, b.ID)
	}
	if n := e.deviceCount(t, e.dt.ID); n != 3 {
		t.Errorf("device type counts %d devices, want 3", n)
	}
}

// TestAutoRegisterRefusals registers nothing, and tells the device only invalid_client (as any
// unknown device), for: a type with auto_register off (the default) whose CA the certificate
// chains to, a certificate naming another ID, an expired one, one of another CA, one that two
// types with auto_register on trust (ambiguous), and a new device while the day's batch is
// disabled (which stops a flood), whose devices are refused too.
func TestAutoRegisterRefusals(t *testing.T) { pgtest.Each(t, testAutoRegisterRefusals) }

func testAutoRegisterRefusals(t *testing.T, url string) {
	e := newAutoEnv(t, url, 100)
	offCA := certtest.NewCA(t, "Off CA")
	off, err := e.svc.CreateDeviceType(e.admin, devreg.DeviceType{Name: "Off"})
	if err != nil {
		t.Fatal(err)
	}
	if off.AutoRegister {
		t.Fatal("a new device type has auto_register on; it must be off by default")
	}
	if _, err := e.svc.AddTrustedCA(e.admin, off.ID, string(offCA.PEM)); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a type with auto_register off", "no such device", "x1", offCA.Issue(t, "x1"))
	e.wantCertRefused(t, "a certificate naming another ID", "no such device", "x2", e.ca.Issue(t, "x3"))
	e.wantCertRefused(t, "an expired certificate", "expired", "x4",
		e.ca.Issue(t, "x4", certtest.Valid(time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))))
	e.wantCertRefused(t, "an unknown CA", "no such device", "x5", certtest.NewCA(t, "Stranger").Issue(t, "x5"))
	e.wantCertRefused(t, "a CA certificate itself", "is a CA certificate", "Factory CA", e.ca)

	// Turned on for the second type too, with the same CA: which type is ambiguous.
	on := true
	if _, err := e.svc.UpdateDeviceType(e.admin, off.ID, devreg.DeviceTypeUpdate{AutoRegister: &on}); err != nil {
		t.Fatal(err)
	}
	shared, err := e.svc.AddTrustedCA(e.admin, off.ID, string(e.ca.PEM))
	if err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "two types trusting the certificate", "ambiguous", "x6", e.ca.Issue(t, "x6"))
	if err := e.svc.DeleteTrustedCA(e.admin, off.ID, shared.ID); err != nil {
		t.Fatal(err)
	}
	if b := e.autoBatches(t); len(b) != 0 {
		t.Fatalf("refused certificates made batches %+v", b)
	}
	// The second type's own CA registers into it.
	if _, _, err := e.certLogin("x1", offCA.Issue(t, "x1")); err != nil {
		t.Fatalf("the type turned on, its own CA: %v", err)
	}
	if n := e.deviceCount(t, off.ID); n != 1 {
		t.Errorf("type %s counts %d devices, want 1", off.ID, n)
	}

	// The day's batch of the first type, disabled: its devices are refused, and so is a new one.
	first := e.ca.Issue(t, "y1")
	if _, _, err := e.certLogin("y1", first); err != nil {
		t.Fatal(err)
	}
	var day devreg.Batch
	for _, b := range e.autoBatches(t) {
		if b.DeviceTypeID == e.dt.ID {
			day = b
		}
	}
	if _, err := e.svc.SetBatchStatus(e.admin, day.ID, devreg.StatusDisabled); err != nil {
		t.Fatal(err)
	}
	e.wantCertRefused(t, "a device of the disabled batch", "disabled", "y1", first)
	e.wantCertRefused(t, "a new device while the day's batch is disabled", "disabled", "y2", e.ca.Issue(t, "y2"))
	if n := e.deviceCount(t, e.dt.ID); n != 1 {
		t.Errorf("device type counts %d devices after the refusal, want 1", n)
	}
	// The next day has a batch of its own, enabled.
	e.advance(24 * time.Hour)
	if _, _, err := e.certLogin("y2", e.ca.Issue(t, "y2")); err != nil {
		t.Fatalf("the next day: %v", err)
	}
}

// TestAutoRegisterRace has the same new device log in many times at once on two servers (two
// services on one database): it is registered once, and every login gets in.
func TestAutoRegisterRace(t *testing.T) { pgtest.Each(t, testAutoRegisterRace) }

func testAutoRegisterRace(t *testing.T, url string) {
	e := newAutoEnv(t, url, 100)
	leaf := e.ca.Issue(t, "racer")
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		svc := e.svc
		if i%2 == 1 {
			svc = e.other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = svc.AuthenticateDeviceCertificate(context.Background(), e.acc, "racer", []*x509.Certificate{leaf.Cert})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("login %d: %v", i, err)
		}
	}
	if b := e.autoBatches(t); len(b) != 1 || b[0].DeviceCount != 1 {
		t.Errorf("batches %+v, want one with the one device", b)
	}
	if c := e.deviceCount(t, e.dt.ID); c != 1 {
		t.Errorf("device type counts %d devices, want 1", c)
	}
	entries, _, _, err := e.svc.AuditLog(e.admin, devreg.AuditFilter{Action: "device.auto_register"})
	if err != nil || len(entries) != 1 {
		t.Errorf("%d audit entries (%v), want 1", len(entries), err)
	}
}

// TestAutoRegisterLimit sends 50 new devices at once, on two servers, to a type whose
// auto_register_limit is 10: exactly 10 are registered, the other 40 are refused with
// ERATELIMITED (ErrAutoRegisterLimit) and when to retry; they are registered after the window.
func TestAutoRegisterLimit(t *testing.T) { pgtest.Each(t, testAutoRegisterLimit) }

func testAutoRegisterLimit(t *testing.T, url string) {
	const limit, n = 10, 50
	e := newAutoEnv(t, url, limit)
	leaves := make([]*certtest.Cert, n)
	for i := range leaves {
		leaves[i] = e.ca.Issue(t, fmt.Sprintf("dev-%02d", i))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		svc := e.svc
		if i%2 == 1 {
			svc = e.other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = svc.AuthenticateDeviceCertificate(context.Background(), e.acc, fmt.Sprintf("dev-%02d", i), []*x509.Certificate{leaves[i].Cert})
		}()
	}
	close(start)
	wg.Wait()
	var in, limited []int
	for i, err := range errs {
		switch {
		case err == nil:
			in = append(in, i)
		case devreg.ErrorCode(err) == devreg.ERATELIMITED && errors.Is(err, ErrAutoRegisterLimit):
			wait, ok := devreg.RetryAfter(err)
			if !ok || wait <= 0 || wait > AutoRegisterWindow {
				t.Errorf("device %d: Retry-After %v, want within the hour", i, wait)
			}
			if !strings.Contains(devreg.ErrorMessage(err), "auto_register_limit") {
				t.Errorf("device %d is told %q, want it to name auto_register_limit", i, devreg.ErrorMessage(err))
			}
			limited = append(limited, i)
		default:
			t.Errorf("device %d: %v, want in or rate limited", i, err)
		}
	}
	if len(in) != limit || len(limited) != n-limit {
		t.Fatalf("%d devices registered, %d rate limited; want %d and %d", len(in), len(limited), limit, n-limit)
	}
	if c := e.deviceCount(t, e.dt.ID); c != limit {
		t.Errorf("device type counts %d devices, want %d", c, limit)
	}
	if b := e.autoBatches(t); len(b) != 1 || b[0].DeviceCount != limit {
		t.Errorf("batches %+v, want one of %d devices", b, limit)
	}
	// A refused device that tries again within the hour is refused again, without counting as a
	// wrong certificate: after the window it is registered.
	again := limited[0]
	id := fmt.Sprintf("dev-%02d", again)
	if _, code, _ := e.certLogin(id, leaves[again]); code != devreg.ERATELIMITED {
		t.Errorf("again within the hour: %q, want rate_limited", code)
	}
	e.advance(AutoRegisterWindow + time.Second)
	if _, _, err := e.certLogin(id, leaves[again]); err != nil {
		t.Errorf("after the window: %v", err)
	}
}

// TestAutoRegisterRefusesWhatLoginRefuses: a certificate that chains to the type's CA but that
// no login takes (an RSA-1024 key) registers no device: a refused login writes nothing.
func TestAutoRegisterRefusesWhatLoginRefuses(t *testing.T) {
	pgtest.Each(t, testAutoRegisterRefusesWhatLoginRefuses)
}

func testAutoRegisterRefusesWhatLoginRefuses(t *testing.T, url string) {
	e := newAutoEnv(t, url, 10)
	e.wantCertRefused(t, "an RSA-1024 certificate of the type's CA", "at least 2048", "weak-1", e.ca.Issue(t, "weak-1", certtest.RSA(1024)))
	if n := e.deviceCount(t, e.dt.ID); n != 0 {
		t.Errorf("the type counts %d devices after a refused login, want 0", n)
	}
	if b := e.autoBatches(t); len(b) != 0 {
		t.Errorf("batches of just-in-time registrations after a refused login: %+v, want none", b)
	}
}
