package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"devreg"
)

// TestSmallBodiesAreBounded sends calls other than registration a body far over what they hold:
// it is refused after a bounded read, not decoded whole into memory.
func TestSmallBodiesAreBounded(t *testing.T) {
	body := `{"name": "` + strings.Repeat("n", 50<<20) + `"}`
	src := strings.NewReader(body)
	r := httptest.NewRequest("POST", "/api/v1/devicetypes", src)
	r.Header.Set("Content-Type", "application/json")
	var in struct{ Name string }
	err := decodeJSON(r, &in)
	if devreg.ErrorCode(err) != devreg.ETOOLARGE || in.Name != "" {
		t.Fatalf("a 50 MB device type name: %v", err)
	}
	if read := len(body) - src.Len(); read > 2*maxSmallBody {
		t.Errorf("read %d bytes of the body before refusing it; want at most about %d", read, maxSmallBody)
	}
}
