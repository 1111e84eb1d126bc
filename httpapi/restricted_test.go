package httpapi_test

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestRestrictedKeyEveryOperation calls every operation of the OpenAPI document, with the
// objects of a device type the key does not reach in the path, as keys of each scope restricted
// to another type: as with another account's key, each answer is a refusal (403 or 404) or an
// answer that shows nothing of that type, and nothing of it changes.
func TestRestrictedKeyEveryOperation(t *testing.T) { pgtest.Each(t, testRestrictedKeyEveryOperation) }

func testRestrictedKeyEveryOperation(t *testing.T, database string) {
	e := newEnv(t, database, 0)
	var mine, theirs struct {
		ID string `json:"id"`
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "Mine"}`, 201, &mine)
	e.mustDo(t, e.admin, "POST", "/api/v1/devicetypes", `{"name": "Theirs"}`, 201, &theirs)
	var reg struct {
		BatchID string `json:"batch_id"`
	}
	e.mustDo(t, e.admin, "PUT", "/api/v1/devicetypes/"+mine.ID+"/device_ids", `{"devices": [{"device_id": "mine-1", "secret": "secret-of-mine-1"}]}`, 200, nil)
	e.mustDo(t, e.admin, "PUT", "/api/v1/devicetypes/"+theirs.ID+"/device_ids", `{"devices": [{"device_id": "theirs-1", "secret": "secret-of-theirs-1"}]}`, 200, &reg)
	var creds struct {
		Credentials []struct {
			ID string `json:"id"`
		} `json:"credentials"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/devices/theirs-1/credentials", "", 200, &creds)
	foreign := []string{theirs.ID, "theirs-1", reg.BatchID}
	keys := map[string]string{}
	for _, scope := range []string{"register", "read"} {
		var k struct {
			Key string `json:"key"`
		}
		e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line `+scope+`", "scope": "`+scope+`", "device_type_ids": ["`+mine.ID+`"]}`, 201, &k)
		keys[scope] = k.Key
	}
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "admin", "scope": "admin", "device_type_ids": ["`+mine.ID+`"]}`, 422, nil)

	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	e.mustDo(t, "", "GET", "/api/v1/openapi.json", "", 200, &doc)
	bodies := map[string]string{
		"POST /devicetypes":                                      `{"name": "New type"}`,
		"POST /devicetypes/{device_type_id}/cas":                 `{"certificate": ""}`,
		"PATCH /devicetypes/{device_type_id}":                    `{"name": "Renamed"}`,
		"PUT /devicetypes/{device_type_id}/device_ids":           `{"devices": [{"device_id": "new-1", "secret": "secret-of-new-1"}]}`,
		"PATCH /devices/{device_id}":                             `{"status": "disabled"}`,
		"POST /devices/{device_id}/credentials":                  `{"generate": true}`,
		"PATCH /devices/{device_id}/credentials/{credential_id}": `{"status": "disabled"}`,
		"PATCH /batches/{batch_id}":                              `{"status": "disabled"}`,
		"POST /apikeys":                                          `{"name": "another", "scope": "read"}`,
		"PATCH /apikeys/{api_key_id}":                            `{"name": "renamed"}`,
		"POST /users":                                            `{"email": "new@acme.test", "role": "admin"}`,
		"PATCH /users/{user_id}":                                 `{"role": "admin"}`,
		"POST /webhooks":                                         `{"url": "https://example.com/hook"}`,
		"PATCH /webhooks/{webhook_id}":                           `{"enabled": false}`,

		"POST /devicetypes/{device_type_id}/enrollment_groups":                     `{"name": "g", "id_pattern": "^g$", "max_devices": 1}`,
		"PATCH /devicetypes/{device_type_id}/enrollment_groups/{group_id}":         `{"status": "disabled"}`,
		"POST /devicetypes/{device_type_id}/enrollment_groups/{group_id}/reenroll": `{"device_ids": ["theirs-1"]}`,
	}
	queries := map[string]string{ // required query parameters
		"DELETE /devices/{device_id}/credentials": "?source=device",
		"DELETE /batches/{batch_id}/credentials":  "?source=device",
	}
	replacer := strings.NewReplacer("{device_type_id}", theirs.ID, "{device_id}", "theirs-1", "{batch_id}", reg.BatchID,
		"{credential_id}", creds.Credentials[0].ID, "{api_key_id}", "key_nosuch", "{group_id}", "eg_nosuch", "{user_id}", "usr_nosuch",
		"{webhook_id}", "whk_nosuch")
	var ops []string
	for path, methods := range doc.Paths {
		if path == "/readyz" {
			continue // not under /api/v1 (its own servers), and reaches no account's objects
		}
		for method := range methods {
			if method == "parameters" || method == "servers" {
				continue
			}
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(ops)
	if len(ops) < 15 {
		t.Fatalf("only %d operations in the document: %v", len(ops), ops)
	}
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		for scope, key := range keys {
			t.Run(scope+"/"+op, func(t *testing.T) {
				status, b := e.send(t, req{key: key, method: method, path: "/api/v1" + replacer.Replace(path) + queries[op], body: bodies[op]})
				switch {
				case status == 403 || status == 404:
				case status >= 200 && status < 300:
					for _, id := range foreign {
						if strings.Contains(string(b), id) {
							t.Errorf("%d answer shows %s of the type the key does not reach: %s", status, id, b)
						}
					}
				default:
					t.Errorf("answer %d %s; want a refusal (403, 404) or an answer without the other type's objects", status, b)
				}
			})
		}
	}
	// Nothing of the other type changed.
	var dev struct {
		Status string `json:"status"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/devices/theirs-1", "", 200, &dev)
	var typ struct {
		Name string `json:"name"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes/"+theirs.ID, "", 200, &typ)
	e.mustDo(t, e.admin, "GET", "/api/v1/devices/theirs-1/credentials", "", 200, &creds)
	if dev.Status != "enabled" || typ.Name != "Theirs" || len(creds.Credentials) != 1 {
		t.Errorf("the other type afterwards: device %q, type %q, %d credentials", dev.Status, typ.Name, len(creds.Credentials))
	}
}
