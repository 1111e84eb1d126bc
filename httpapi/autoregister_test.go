package httpapi_test

import (
	"context"
	"crypto/x509"
	"testing"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// TestAutoRegisteredBatchOverTheAPI turns auto_register on for a device type over the API, lets
// a device register itself by its certificate, and reads the day's batch, the type's count and
// the audit entry through the API: the answers (validated against the OpenAPI document) show
// the batch's source auto_register and the device as the entry's actor.
func TestAutoRegisteredBatchOverTheAPI(t *testing.T) {
	pgtest.Each(t, testAutoRegisteredBatchOverTheAPI)
}

func testAutoRegisteredBatchOverTheAPI(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Sensor", 0)
	ca := certtest.NewCA(t, "Factory CA")
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes/"+dt.ID+"/cas", caBody(ca.PEM), 201, nil)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"auto_register": true, "auto_register_limit": 5}`, 200, nil)

	leaf := ca.Issue(t, "sensor-1")
	if _, err := e.srv.Service.AuthenticateDeviceCertificate(context.Background(), e.accountID, "sensor-1", []*x509.Certificate{leaf.Cert}); err != nil {
		t.Fatal(err)
	}
	var page struct {
		Batches []devreg.Batch `json:"batches"`
	}
	e.mustDo(t, e.read, "GET", "/api/v1/batches", "", 200, &page)
	if len(page.Batches) != 1 || page.Batches[0].Source != devreg.SourceAutoRegister || page.Batches[0].DeviceCount != 1 {
		t.Fatalf("batches = %+v, want the day's batch of auto_register with one device", page.Batches)
	}
	var got devreg.DeviceType
	e.mustDo(t, e.read, "GET", "/api/v1/devicetypes/"+dt.ID, "", 200, &got)
	if got.DeviceCount != 1 {
		t.Errorf("device type counts %d devices, want 1", got.DeviceCount)
	}
	var audit struct {
		Entries []devreg.AuditEntry `json:"entries"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/audit?action=device.auto_register", "", 200, &audit)
	if len(audit.Entries) != 1 || audit.Entries[0].Actor.Type != "device" || audit.Entries[0].Actor.ID != "sensor-1" ||
		audit.Entries[0].Details["batch_id"] != page.Batches[0].ID {
		t.Errorf("audit = %+v, want one entry by device sensor-1 naming the batch", audit.Entries)
	}
}
