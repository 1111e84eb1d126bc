package httpapi_test

import (
	"strings"
	"testing"

	"devreg"
)

// TestNamesRefuseInvisibleCharacters: a name with a bidi override or a zero-width space is a 422
// that names the character and where it is, and nothing is created or renamed.
func TestNamesRefuseInvisibleCharacters(t *testing.T) {
	e := newEnv(t, "", 0)
	var key devreg.APIKey
	e.mustDo(t, e.admin, "POST", "/api/v1/apikeys", `{"name": "line 3", "scope": "register"}`, 201, &key)
	for _, tt := range []struct {
		name         string
		method, path string
		body         string
		says         string
	}{
		{"422/type-name-with-right-to-left-override", "POST", "/api/v1/devicetypes", `{"name": "Thermo\u202estat"}`, "name contains the bidi control U+202E at character 7"},
		{"422/type-description-with-right-to-left-override", "POST", "/api/v1/devicetypes", `{"name": "T2", "description": "\u202eabc"}`, "description contains the bidi control U+202E at character 1"},
		{"422/key-name-with-zero-width-space", "POST", "/api/v1/apikeys", `{"name": "line\u200b3", "scope": "read"}`, "name contains the invisible character U+200B at character 5"},
		{"422/key-rename-with-zero-width-joiner", "PATCH", "/api/v1/apikeys/" + key.ID, `{"name": "line\u200d3"}`, "name contains the invisible character U+200D at character 5"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, b := e.send(t, req{key: e.admin, method: tt.method, path: tt.path, body: tt.body})
			if eb := decodeError(t, b); status != 422 || eb.Error.Code != devreg.EINVALID || !strings.Contains(eb.Error.Message, tt.says) {
				t.Errorf("= %d %s, want 422 saying %q", status, b, tt.says)
			}
		})
	}
	var types struct {
		DeviceTypes []devreg.DeviceType `json:"device_types"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/devicetypes", "", 200, &types)
	var keys struct {
		APIKeys []devreg.APIKey `json:"api_keys"`
	}
	e.mustDo(t, e.admin, "GET", "/api/v1/apikeys", "", 200, &keys)
	if len(types.DeviceTypes) != 0 || len(keys.APIKeys) != 4 || keys.APIKeys[3].Name != "line 3" {
		t.Errorf("after the refusals: types %+v, keys %+v; want none created or renamed", types.DeviceTypes, keys.APIKeys)
	}
}
