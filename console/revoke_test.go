package console_test

import (
	"context"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"devreg"
	"devreg/internal/pgtest"
)

// rotate rotates a device's secret as the device would and returns the new secret.
func (e *env) rotate(t *testing.T, deviceID, secret string) string {
	t.Helper()
	rot, err := e.srv.Service.RotateCredential(context.Background(), e.accountID, deviceID, secret)
	if err != nil {
		t.Fatalf("rotate %s: %v", deviceID, err)
	}
	return rot.Secret
}

// uploadLot registers a lot through the bulk upload and returns its batch ID.
func (e *env) uploadLot(t *testing.T, typeID, csv string) string {
	t.Helper()
	status, body := e.upload(t, map[string]string{"device_type_id": typeID}, "lot.csv", csv)
	batch := regexp.MustCompile(`/batches/(bat_[A-Za-z0-9]+)`).FindStringSubmatch(body)
	if status != 200 || batch == nil {
		t.Fatalf("upload = %d:\n%s", status, body)
	}
	return batch[1]
}

// TestConsoleRevokeAndReset: the console's ways out of a leaked factory secret. A device page
// offers to revoke the credentials the device made itself only when it holds some, and refuses
// (saying what to do) when nothing else would let the device in; the batch page revokes a lot's
// and lists the devices it left; the bulk upload resets credentials with Replace.
func TestConsoleRevokeAndReset(t *testing.T) { pgtest.Each(t, testConsoleRevokeAndReset) }

func testConsoleRevokeAndReset(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	batch := e.uploadLot(t, dt, "b-1, factory-secret-1\nb-2, factory-secret-2\nb-3, factory-secret-3")
	e.rotate(t, "b-1", "factory-secret-1")
	e.rotate(t, "b-2", "factory-secret-2")
	// b-2 lost its factory secret: only the credential it made lets it in.
	if err := e.srv.Service.DeleteCredential(e.asAdmin(), "b-2", e.credentials(t, "b-2")[0].ID); err != nil {
		t.Fatal(err)
	}

	if _, body := e.get(t, "/devices/b-3"); strings.Contains(body, "Revoke device-made credentials") {
		t.Errorf("the page of a device that made no credential offers to revoke them")
	}
	_, body := e.get(t, "/devices/b-1")
	if !strings.Contains(body, `action="/devices/b-1/credentials/revoke"`) || !strings.Contains(body, `data-confirm="Delete the 1 credentials device b-1 made itself`) {
		t.Errorf("the page of a device that rotated has no revoke button with a confirmation:\n%s", body)
	}
	status, body := e.post(t, "/devices/b-2/credentials/revoke", nil)
	if status != 200 || !strings.Contains(html.UnescapeString(body), "on_conflict=replace&credentials=reset") || len(e.credentials(t, "b-2")) != 1 {
		t.Errorf("revoking b-2's only valid credential = %d; want its page saying what to do, the credential kept:\n%s", status, body)
	}

	if _, body := e.get(t, "/batches/"+batch); !strings.Contains(body, `action="/batches/`+batch+`/credentials/revoke"`) || !strings.Contains(body, "data-confirm=\"Delete every credential the devices of batch") {
		t.Errorf("the batch page has no revoke button with a confirmation:\n%s", body)
	}
	status, body = e.post(t, "/batches/"+batch+"/credentials/revoke", nil)
	result := html.UnescapeString(regexp.MustCompile(`(?s)<div id="revoke-result">.*?</section>`).FindString(body))
	if status != 200 || !strings.Contains(result, "Device-made credentials revoked: 1, of 1 of the batch's 3 devices.") || !strings.Contains(result, "Devices left as they were: 1") ||
		!strings.Contains(result, `<code>b-2</code>`) || !strings.Contains(result, "credentials=reset") {
		t.Errorf("revoking the batch = %d; want the result with b-2 left:\n%s", status, body)
	}
	if creds := e.credentials(t, "b-1"); len(creds) != 1 || creds[0].Source != devreg.CredentialFromRegistration {
		t.Errorf("b-1 after the batch's revocation: %+v", creds)
	}
	// Nothing left to revoke and no device left: a notice on the batch page.
	batch2 := e.uploadLot(t, dt, "c-1, factory-secret-c")
	status, body = e.post(t, "/batches/"+batch2+"/credentials/revoke", nil)
	if status != 200 || !strings.Contains(html.UnescapeString(body), "Device-made credentials revoked: 0, of 0 of the batch's 1 devices.") {
		t.Errorf("revoking a batch without device-made credentials = %d:\n%s", status, body)
	}

	// The upload form offers the reset, which needs Replace.
	if _, body := e.get(t, "/devices/upload"); !strings.Contains(body, `name="credentials" type="checkbox" value="reset"`) {
		t.Errorf("the upload form has no reset choice")
	}
	status, body = e.upload(t, map[string]string{"device_type_id": dt, "credentials": "reset"}, "fix.csv", "b-2, factory-secret-2")
	if status != 400 || !strings.Contains(html.UnescapeString(body), "credentials=reset works only with on_conflict=replace") {
		t.Errorf("a reset without Replace = %d:\n%s", status, body)
	}
	status, body = e.upload(t, map[string]string{"device_type_id": dt, "on_conflict": "replace", "credentials": "reset"}, "fix.csv", "b-2, factory-secret-2")
	if status != 200 || !regexp.MustCompile(`id="dropped">1<`).MatchString(body) {
		t.Errorf("a reset upload = %d; want 1 dropped:\n%s", status, body)
	}
	if creds := e.credentials(t, "b-2"); len(creds) != 1 || creds[0].Source != devreg.CredentialFromRegistration {
		t.Errorf("b-2 after the reset: %+v", creds)
	}
}

// TestEditRotationLimit sets a device type's rotation limit on its edit page.
func TestEditRotationLimit(t *testing.T) { pgtest.Each(t, testEditRotationLimit) }

func testEditRotationLimit(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "T1")
	if _, body := e.get(t, "/devicetypes/"+dt+"/edit"); !regexp.MustCompile(`name="max_rotations_per_hour" type="number" min="1" max="1000"[^>]* value="5"`).MatchString(body) {
		t.Fatalf("the edit page lacks the rotation limit with its default:\n%s", body)
	}
	limit := func() int {
		t.Helper()
		typ, err := e.srv.Service.DeviceType(e.asAdmin(), dt)
		if err != nil {
			t.Fatal(err)
		}
		return *typ.MaxRotationsPerHour
	}
	for _, c := range []struct {
		value, says string
		want        int
	}{
		{"12", "Device type saved.", 12},
		{"0", "max_rotations_per_hour must be between 1 and 1000", 12},
		{"1001", "max_rotations_per_hour must be between 1 and 1000", 12},
		{"", "Device type saved.", 12},
	} {
		_, body := e.post(t, "/devicetypes/"+dt, url.Values{"name": {"T1"}, "min_secret_length": {"8"}, "max_rotations_per_hour": {c.value}})
		if !strings.Contains(body, c.says) || limit() != c.want {
			t.Errorf("saving %q: limit %d, want %d; the page does not say %q:\n%s", c.value, limit(), c.want, c.says, body)
		}
	}
	if _, body := e.get(t, "/devicetypes"); !strings.Contains(body, "Rotations per hour</th>") || !strings.Contains(body, `<td class="num">12</td>`) {
		t.Errorf("the Device Types page does not show the limit:\n%s", body)
	}
}
