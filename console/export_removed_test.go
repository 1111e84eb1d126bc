package console_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

func (e *env) api(t *testing.T, method, path, ctype, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// invite creates a user with role through the API and sets its password through the invitation
// page; it returns the user's ID and a client logged in as it.
func (e *env) invite(t *testing.T, addr, role string) (string, *http.Client) {
	t.Helper()
	status, body := e.api(t, "POST", "/api/v1/users", "application/json", fmt.Sprintf(`{"email":%q,"role":%q}`, addr, role))
	if status != 201 {
		t.Fatalf("invite: %d %s", status, body)
	}
	var u struct {
		ID            string `json:"id"`
		InvitationURL string `json:"invitation_url"`
	}
	json.Unmarshal([]byte(body), &u)
	lu, _ := url.Parse(u.InvitationURL)
	token := lu.Query().Get("token")
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.PostForm(e.url+"/invitation", url.Values{"token": {token}, "password": {"user-password-1"}, "password2": {"user-password-1"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.PostForm(e.url+"/login", url.Values{"email": {addr}, "password": {"user-password-1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "<h1>Devices</h1>") {
		t.Fatalf("login as %s: %d %s", addr, resp.StatusCode, b)
	}
	return u.ID, c
}

// TestExportStopsForARemovedUser: a developer starts the CSV export of 200,000 devices (far more
// than the sockets hold), is removed by an admin, and keeps reading slowly: the download breaks
// off at the next page instead of sending every device. (An outside review's reproducer: it sent
// all of them.)
func TestExportStopsForARemovedUser(t *testing.T) {
	e := newEnv(t, "")
	status, body := e.api(t, "POST", "/api/v1/devicetypes", "application/json", `{"name":"Sensor","min_secret_length":8}`)
	if status != 201 {
		t.Fatalf("type: %d %s", status, body)
	}
	var dt struct{ ID string }
	json.Unmarshal([]byte(body), &dt)
	const n = 200000
	var csv strings.Builder
	for i := range n {
		fmt.Fprintf(&csv, "dev-%06d-%s, secret-%06d,\n", i, strings.Repeat("x", 40), i)
	}
	status, body = e.api(t, "PUT", "/api/v1/devicetypes/"+dt.ID+"/device_ids", "text/csv", csv.String())
	if status != 200 && status != 201 {
		t.Fatalf("register: %d %.300s", status, body)
	}
	id, dev := e.invite(t, "dev@acme.test", "developer")

	resp, err := (&http.Client{Jar: dev.Jar}).Get(e.url + "/devices/export.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("export: %d %.300s", resp.StatusCode, b)
	}
	br := bufio.NewReaderSize(resp.Body, 512)
	if first, _ := br.ReadString('\n'); !strings.HasPrefix(first, "device_id,") {
		t.Fatalf("the export's first line: %q", first)
	}
	if status, body := e.api(t, "DELETE", "/api/v1/users/"+id, "", ""); status != 204 {
		t.Fatalf("remove: %d %s", status, body)
	}
	rows := 0
	for {
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
		rows++
		if rows%5000 == 0 {
			time.Sleep(200 * time.Millisecond) // a slow reader
		}
	}
	if rows >= n-1 {
		t.Errorf("the removed user's export went on to send every device (%d rows) after the removal", rows)
	}
}
