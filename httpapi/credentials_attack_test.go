package httpapi_test

// Attacks, over real HTTP against a real server on both databases, on several credentials per
// device and on the unauthenticated rotation endpoint. Tests named TestAttack... reproduce
// real problems and fail until they are fixed; the others pin down properties that hold.

import (
	"bytes"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"devreg"
	"devreg/credential"
	"devreg/internal/pgtest"
	"devreg/store"
)

// deviceCall sends a device endpoint request: a form body, optional HTTP Basic credentials and
// extra headers. It returns the status and body.
func (e *env) atkCall(t *testing.T, path, query, body string, basic []string, header map[string]string) (int, string) {
	t.Helper()
	u := e.url + path
	if query != "" {
		u += "?" + query
	}
	hr, err := http.NewRequest("POST", u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != nil {
		hr.SetBasicAuth(basic[0], basic[1])
	}
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type rotationAnswer struct {
	CredentialID         string    `json:"credential_id"`
	Secret               string    `json:"secret"`
	PreviousCredentialID string    `json:"previous_credential_id"`
	PreviousNotAfter     time.Time `json:"previous_not_after"`
}

func (e *env) atkRotate(t *testing.T, deviceID, secret string) (int, rotationAnswer) {
	t.Helper()
	status, body := e.atkCall(t, "/device/v1/credentials", "",
		"account_id="+url.QueryEscape(e.accountID), []string{url.QueryEscape(deviceID), url.QueryEscape(secret)}, nil)
	var a rotationAnswer
	if status == 201 {
		if err := json.Unmarshal([]byte(body), &a); err != nil {
			t.Fatalf("rotation answer %s: %v", body, err)
		}
	}
	return status, a
}

func (e *env) atkToken(t *testing.T, deviceID, secret string) (int, string) {
	t.Helper()
	status, body := e.atkCall(t, "/device/v1/token", "",
		"grant_type=client_credentials&account_id="+url.QueryEscape(e.accountID),
		[]string{url.QueryEscape(deviceID), url.QueryEscape(secret)}, nil)
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal([]byte(body), &tok)
	return status, tok.AccessToken
}

// The rotation endpoint refuses every shape of request that does not carry the device's secret
// the way the token endpoint takes it, creates nothing for them, and counts toward the throttle
// only what named a device with a wrong secret, once each.
func TestAttackRotationEndpointShapes(t *testing.T) {
	pgtest.Each(t, testAttackRotationEndpointShapes)
}

func testAttackRotationEndpointShapes(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Shapes", 0)
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "sh-1, factory+secret 1\nsh-2, factory-secret-2\nsh-3, factory-secret-3")
	_, tok := e.atkToken(t, "sh-2", "factory-secret-2")
	if tok == "" {
		t.Fatal("no token")
	}
	acc := "account_id=" + url.QueryEscape(e.accountID)
	for _, c := range []struct {
		name, query, body string
		basic             []string
		header            map[string]string
		want              int
	}{
		{"query-string credentials", "client_id=sh-2&client_secret=factory-secret-2&" + acc, "", nil, nil, 400},
		{"query-string account with Basic", acc, "", []string{"sh-2", "factory-secret-2"}, nil, 400},
		{"token as bearer", "", acc, nil, map[string]string{"Authorization": "Bearer " + tok}, 401},
		{"token as the Basic secret", "", acc, []string{"sh-2", tok}, nil, 401},
		{"token as client_secret", "", acc + "&client_id=sh-2&client_secret=" + url.QueryEscape(tok), nil, nil, 401},
		{"both Basic and form", "", acc + "&client_id=sh-2&client_secret=factory-secret-2", []string{"sh-2", "factory-secret-2"}, nil, 400},
		{"repeated account_id", "", acc + "&" + acc + "&client_id=sh-2&client_secret=factory-secret-2", nil, nil, 400},
		{"JSON body", "", `{"account_id":"` + e.accountID + `"}`, []string{"sh-2", "factory-secret-2"}, map[string]string{"Content-Type": "application/json"}, 400},
		{"huge body", "", acc + "&pad=" + strings.Repeat("a", 1<<20), []string{"sh-2", "factory-secret-2"}, nil, 400},
		{"NUL in the secret", "", acc + "&client_id=sh-2&client_secret=factory-secret-2%00", nil, nil, 401},
	} {
		status, body := e.atkCall(t, "/device/v1/credentials", c.query, c.body, c.basic, c.header)
		if status != c.want && !(c.name == "huge body" && status == 413) {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.want)
		}
		if status == 201 {
			t.Errorf("%s: a credential was made: %s", c.name, body)
		}
	}
	var list credentialList
	e.mustDo(t, e.read, "GET", "/api/v1/devices/sh-2/credentials", "", 200, &list)
	if len(list.Credentials) != 1 {
		t.Errorf("sh-2 has %d credentials after refused rotations, want 1", len(list.Credentials))
	}
	// Four wrong secrets named the device above (the token three times, the NUL once); five
	// more wrong ones make nine, and the right secret still works.
	for range 5 {
		if status, _ := e.atkRotate(t, "sh-2", "not-the-secret"); status != 401 {
			t.Fatalf("wrong secret: %d", status)
		}
	}
	if status, _ := e.atkToken(t, "sh-2", "factory-secret-2"); status != 200 {
		t.Errorf("after nine failures the right secret gets %d, want 200 (a failure counted twice?)", status)
	}

	// A secret with '+' and a space: form-urlencoded in Basic as RFC 6749 asks, it works.
	if status, _ := e.atkRotate(t, "sh-1", "factory+secret 1"); status != 201 {
		t.Errorf("a secret with '+' and a space, form-urlencoded: %d", status)
	}

	// A disabled device, a disabled batch: 401 as for a wrong secret, nothing made.
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/sh-3", `{"status": "disabled"}`, 200, nil)
	if status, _ := e.atkRotate(t, "sh-3", "factory-secret-3"); status != 401 {
		t.Errorf("rotation of a disabled device: %d, want 401", status)
	}
	e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/sh-3", `{"status": "enabled"}`, 200, nil)
	var dev devreg.Device
	e.mustDo(t, e.read, "GET", "/api/v1/devices/sh-3", "", 200, &dev)
	e.mustDo(t, e.admin, "PATCH", "/api/v1/batches/"+dev.BatchID, `{"status": "disabled"}`, 200, nil)
	if status, _ := e.atkRotate(t, "sh-3", "factory-secret-3"); status != 401 {
		t.Errorf("rotation in a disabled batch: %d, want 401", status)
	}
	e.mustDo(t, e.read, "GET", "/api/v1/devices/sh-3/credentials", "", 200, &list)
	if len(list.Credentials) != 1 {
		t.Errorf("sh-3 has %d credentials after refused rotations, want 1", len(list.Credentials))
	}
}

// A credential whose window ended, and the old secret after a rotation with no grace, cannot
// rotate; tokens of a rotated-away credential stop when the grace ends or it is deleted.
func TestAttackRotationExpiredAndGraceZero(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnv(t, database, 0)
		var dt devreg.DeviceType
		e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "NoGrace", "rotation_grace_seconds": 0}`, 201, &dt)
		e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "g0-1, factory-secret-1")
		_, oldTok := e.atkToken(t, "g0-1", "factory-secret-1")
		status, rot := e.atkRotate(t, "g0-1", "factory-secret-1")
		if status != 201 {
			t.Fatalf("rotation: %d", status)
		}
		if status, _ := e.atkRotate(t, "g0-1", "factory-secret-1"); status != 401 {
			t.Errorf("rotating again with the old secret after a rotation with grace 0: %d, want 401", status)
		}
		status, _ = e.atkCall(t, "/device/v1/checkin", "", "", nil, map[string]string{"Authorization": "Bearer " + oldTok, "Content-Type": "application/json"})
		if status != 401 {
			t.Errorf("check-in with a token of the rotated-away credential (grace 0): %d, want 401", status)
		}
		// An admin-set window that has ended.
		past := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
		c := e.addCredential(t, "g0-1", `{"secret": "ends-soon-secret-1"}`)
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devices/g0-1/credentials/"+c.ID, `{"not_after": "`+past+`"}`, 200, nil)
		if status, _ := e.atkRotate(t, "g0-1", "ends-soon-secret-1"); status != 401 {
			t.Errorf("rotation with an expired credential: %d, want 401", status)
		}
		if status, _ := e.atkToken(t, "g0-1", rot.Secret); status != 200 {
			t.Errorf("the rotated secret: %d", status)
		}
	})
}

// No secret, generated, rotated, typed or guessed, and no hash of one, ever shows in the
// server's debug log, in /metrics, in a listing or device answer, or in an error.
func TestAttackSecretsNeverLeak(t *testing.T) { pgtest.Each(t, testAttackSecretsNeverLeak) }

func testAttackSecretsNeverLeak(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	dt := e.createType(t, e.admin, "Leak", 0)
	secrets := []string{"factory-secret-LEAK1"}
	e.mustRegister(t, e.admin, dt.ID, "", "text/csv", "lk-1, factory-secret-LEAK1")
	_, rot := e.atkRotate(t, "lk-1", "factory-secret-LEAK1")
	secrets = append(secrets, rot.Secret)
	gen := e.addCredential(t, "lk-1", `{"generate": true}`)
	secrets = append(secrets, gen.Secret)
	e.addCredential(t, "lk-1", `{"secret": "typed-secret-LEAK2"}`)
	secrets = append(secrets, "typed-secret-LEAK2")
	// Errors that carry a secret in the request.
	for _, body := range []string{`{"secret": "typed-secret-LEAK2"}`, `{"secret": "shortLK"}`, `{"secret": "typed-secret-LEAK3\u0001"}`,
		`{"secret": "typed-secret-LEAK4", "generate": true}`, `{"secret": "typed-secret-LEAK5", "not_after": "2020-13-01T00:00:00Z"}`} {
		status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/lk-1/credentials", body: body, invalid: true})
		if status < 400 {
			t.Errorf("%s: %d", body, status)
		}
		for _, s := range []string{"typed-secret-LEAK", "shortLK"} {
			if strings.Contains(string(b), s) {
				t.Errorf("the error answer to %s shows the secret: %s", body, b)
			}
		}
	}
	secrets = append(secrets, "shortLK", "typed-secret-LEAK3", "typed-secret-LEAK4", "typed-secret-LEAK5")
	e.atkRotate(t, "lk-1", "guessed-secret-LEAK7")
	e.atkCall(t, "/device/v1/credentials", "client_id=lk-1&client_secret=query-secret-LEAK8&account_id="+e.accountID, "", nil, nil)
	e.atkCall(t, "/device/v1/token", "client_id=lk-1&client_secret=query-secret-LEAK8&account_id="+e.accountID, "", nil, nil)
	secrets = append(secrets, "guessed-secret-LEAK7", "query-secret-LEAK8")
	// Everything the server wrote or answers.
	var seen bytes.Buffer
	seen.WriteString(e.log.String())
	for _, p := range []string{"/api/v1/devices/lk-1/credentials", "/api/v1/devices/lk-1", "/api/v1/devices", "/metrics"} {
		_, b := e.send(t, req{key: e.admin, method: "GET", path: p})
		seen.Write(b)
	}
	// The hashes, as the server makes them with its keys, in hex and base64.
	var hashes []string
	keys, err := credential.LoadOrCreateKeyring(filepath.Join(e.dataDir, "secret.keys"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		for _, k := range keys.Keys() {
			sum := credential.Hash(k, e.accountID, "lk-1", s)
			hashes = append(hashes, hex.EncodeToString(sum), base64.StdEncoding.EncodeToString(sum), base64.RawURLEncoding.EncodeToString(sum))
		}
	}
	out := seen.String()
	for _, s := range append(secrets, hashes...) {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("%q shows in the log, a listing, /metrics or an error", s)
		}
	}
	if !strings.Contains(e.log.String(), "/device/v1/credentials") {
		t.Errorf("the log does not show the rotation requests at all: is it the server's log?")
	}
}

// TestAttackReplaceRacingAddOverHTTP: the race of TestAttackReplaceRacingAddExceedsFive
// (package registry) with real requests only and no hooks: an admin adds a credential while a
// large registration with on_conflict=replace runs. On PostgreSQL the device ends with six
// credentials in some rounds. The test fails only when it sees the race; after the fix it passes.
func TestAttackReplaceRacingAddOverHTTP(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnv(t, database, 0)
		dt := e.createType(t, e.admin, "Race", 0)
		// It rotates more than a device may in an hour; TestRotationLimit (deviceauth) tests the limit.
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"max_rotations_per_hour": 1000}`, 200, nil)
		const filler = 20000
		var csv strings.Builder
		for i := range filler {
			fmt.Fprintf(&csv, "f-%d, filler-secret-%d\n", i, i)
		}
		fillerCSV := csv.String()
		e.mustRegister(t, e.admin, dt.ID, "", "text/csv", fillerCSV+"rc-1, factory-secret-0\n")
		// Device-made credentials, each used, up to four; the one in the row device-made.
		secret := "factory-secret-0"
		for range 3 {
			status, rot := e.atkRotate(t, "rc-1", secret)
			if status != 201 {
				t.Fatalf("rotation: %d", status)
			}
			secret = rot.Secret
			if status, _ := e.atkToken(t, "rc-1", secret); status != 200 {
				t.Fatalf("token: %d", status)
			}
		}
		prepare := func() {
			// Delete every credential but device-made ones, so a device-made one takes the row,
			// then rotate (and use) to reach four.
			var list credentialList
			e.mustDo(t, e.read, "GET", "/api/v1/devices/rc-1/credentials", "", 200, &list)
			for _, c := range list.Credentials {
				if c.Source != devreg.CredentialFromDevice {
					e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/rc-1/credentials/"+c.ID, "", 204, nil)
				}
			}
			e.mustDo(t, e.read, "GET", "/api/v1/devices/rc-1/credentials", "", 200, &list)
			for _, c := range list.Credentials[:max(0, len(list.Credentials)-3)] {
				e.mustDo(t, e.admin, "DELETE", "/api/v1/devices/rc-1/credentials/"+c.ID, "", 204, nil)
			}
			status, rot := e.atkRotate(t, "rc-1", secret)
			if status != 201 {
				t.Fatalf("rotation: %d", status)
			}
			secret = rot.Secret
			e.atkToken(t, "rc-1", secret)
			e.mustDo(t, e.read, "GET", "/api/v1/devices/rc-1/credentials", "", 200, &list)
			if len(list.Credentials) != 4 {
				t.Fatalf("prepared %d credentials, want 4", len(list.Credentials))
			}
		}
		// How long a replace takes.
		prepare()
		start := time.Now()
		e.mustRegister(t, e.admin, dt.ID, "on_conflict=replace", "text/csv", fillerCSV+"rc-1, factory-secret-r\n")
		took := time.Since(start)
		t.Logf("a replace of %d devices takes %v", filler+1, took)
		var watch *sql.DB
		if store.IsPostgres(database) {
			var err error
			if watch, err = sql.Open("pgx", database); err != nil {
				t.Fatal(err)
			}
			defer watch.Close()
		}
		rounds := 30
		if watch == nil {
			rounds = 3 // SQLite writes one transaction at a time: the race cannot happen
		}
		for round := range rounds {
			prepare()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, b := e.register(t, e.admin, dt.ID, "on_conflict=replace", "text/csv", fillerCSV+fmt.Sprintf("rc-1, factory-secret-r%d\n", round))
				if status != 200 {
					t.Errorf("replace: %d %s", status, b)
				}
			}()
			// On PostgreSQL, wait until the replace writes the devices' rows (observed, not
			// hooked); on SQLite (serialized anyway), at a random point of the replace.
			if watch != nil {
				waitForQuery(t, watch, "UPDATE devices SET device_type_id", took*3)
			} else {
				time.Sleep(time.Duration(float64(took) * rand.Float64()))
			}
			status, _ := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/rc-1/credentials", body: fmt.Sprintf(`{"secret": "api-secret-round-%d"}`, round)})
			wg.Wait()
			var list credentialList
			e.mustDo(t, e.read, "GET", "/api/v1/devices/rc-1/credentials", "", 200, &list)
			t.Logf("round %d: add %d, %d credentials", round, status, len(list.Credentials))
			if len(list.Credentials) > devreg.MaxCredentials {
				t.Fatalf("round %d: the add answered %d, and the device now has %d credentials: %v", round, status, len(list.Credentials), credentialIDs(list.Credentials))
			}
		}
	})
}

// waitForQuery waits until a statement starting with prefix runs on the database, or for at most
// limit.
func waitForQuery(t *testing.T, db *sql.DB, prefix string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'
			AND ltrim(query) LIKE $1`, prefix+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("did not see %q run", prefix)
}

// Parallel adds, deletes, disables, enables, window changes, rotations, token logins and device
// deletes with registrations again, over real HTTP on one device: after each round the device
// (when registered) holds one to five credentials, at least one of which lets it in now, and
// every credential listed is one of the current device's (none from before a delete).
func TestAttackParallelCredentialChaos(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		e := newEnv(t, database, 0)
		dt := e.createType(t, e.admin, "Chaos", 0)
		// It rotates more than a device may in an hour; TestRotationLimit (deviceauth) tests the limit.
		e.mustDo(t, e.admin, "PATCH", "/api/v1/devicetypes/"+dt.ID, `{"max_rotations_per_hour": 1000}`, 200, nil)
		var mu sync.Mutex
		var secrets map[string]string // credential ID -> secret, of the current incarnation
		var known []string
		var dev string
		generation := 0
		rotations := map[int]int{}
		defer func() { t.Logf("rotation answers: %v", rotations) }()
		pick := func() (string, string) {
			mu.Lock()
			defer mu.Unlock()
			for id, s := range secrets {
				return id, s
			}
			return "", known[len(known)-1]
		}
		for round := range 6 {
			// A device per round: failures of secrets deleted under a worker's feet fill the
			// throttle of a device within a round.
			dev = fmt.Sprintf("ch-%d", round)
			e.mustRegister(t, e.admin, dt.ID, "", "text/csv", dev+", factory-secret-0")
			secrets, known = map[string]string{}, []string{"factory-secret-0"}
			var wg sync.WaitGroup
			for w := range 10 {
				wg.Go(func() {
					for i := range 6 {
						id, secret := pick()
						switch (w + i) % 7 {
						case 0:
							var c devreg.Credential
							status, b := e.send(t, req{key: e.admin, method: "POST", path: "/api/v1/devices/" + dev + "/credentials", body: `{"generate": true}`})
							if status == 201 && json.Unmarshal(b, &c) == nil {
								mu.Lock()
								secrets[c.ID] = c.Secret
								mu.Unlock()
							} else if status != 409 && status != 404 {
								t.Errorf("add: %d %s", status, b)
							}
						case 1:
							if id != "" {
								status, b := e.send(t, req{key: e.admin, method: "DELETE", path: "/api/v1/devices/" + dev + "/credentials/" + id})
								if status == 204 {
									mu.Lock()
									delete(secrets, id)
									mu.Unlock()
								} else if status != 409 && status != 404 {
									t.Errorf("delete: %d %s", status, b)
								}
							}
						case 2, 3:
							if id != "" {
								st := []string{"disabled", "enabled"}[i%2]
								status, b := e.send(t, req{key: e.admin, method: "PATCH", path: "/api/v1/devices/" + dev + "/credentials/" + id, body: `{"status": "` + st + `"}`})
								if status != 200 && status != 409 && status != 404 {
									t.Errorf("patch: %d %s", status, b)
								}
							}
						case 4:
							status, rot := e.atkRotate(t, dev, secret)
							mu.Lock()
							rotations[status]++
							mu.Unlock()
							if status == 201 {
								mu.Lock()
								secrets[rot.CredentialID] = rot.Secret
								mu.Unlock()
								e.atkToken(t, dev, rot.Secret)
							} else if status != 401 && status != 409 && status != 429 {
								t.Errorf("rotate: %d", status)
							}
						case 5:
							e.atkToken(t, dev, secret)
						case 6:
							if w == 0 && i == 0 {
								// The device goes and comes back with a new secret.
								e.send(t, req{key: e.admin, method: "DELETE", path: "/api/v1/devices/" + dev + ""})
								mu.Lock()
								generation++
								fresh := fmt.Sprintf("factory-secret-%d", generation)
								known = append(known, fresh)
								secrets = map[string]string{}
								mu.Unlock()
								e.mustRegister(t, e.admin, dt.ID, "", "text/csv", dev+", "+fresh)
							}
						}
					}
				})
			}
			wg.Wait()
			var list credentialList
			status, b := e.send(t, req{key: e.read, method: "GET", path: "/api/v1/devices/" + dev + "/credentials"})
			if status != 200 || json.Unmarshal(b, &list) != nil {
				t.Fatalf("round %d: list %d %s", round, status, b)
			}
			n := len(list.Credentials)
			valid := 0
			for _, c := range list.Credentials {
				if c.ValidAt(time.Now()) {
					valid++
				}
			}
			if n < 1 || n > devreg.MaxCredentials || valid == 0 {
				t.Errorf("round %d: %d credentials, %d valid now: %v", round, n, valid, credentialIDs(list.Credentials))
			}
			// A secret of a credential the current device does not list never logs it in.
			listed := map[string]bool{}
			for _, c := range list.Credentials {
				listed[c.ID] = true
			}
			mu.Lock()
			var gone []string
			for id, s := range secrets {
				if !listed[id] {
					gone = append(gone, s)
				}
			}
			old := append([]string(nil), known[:len(known)-1]...)
			mu.Unlock()
			for _, s := range append(gone, old...) {
				if e.authenticates(dev, s) {
					t.Errorf("round %d: a secret of a deleted credential or an earlier incarnation logs in", round)
				}
			}
		}
	})
}
