package registry_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"devreg"
)

// TestEveryAuditActionIsListed: every action the service records is in devreg.AuditActions, which
// the console's audit filter offers and whose events webhooks may ask for by type; an action
// missing there could be recorded but not subscribed to.
func TestEveryAuditActionIsListed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	recorded := regexp.MustCompile(`(?:audited|auditEntry)\(ctx, [^,]+, "([a-z_]+\.[a-z_]+)"|action :?= "([a-z_]+\.[a-z_]+)"`)
	found := 0
	for _, f := range files {
		if filepath.Ext(f) != ".go" || regexp.MustCompile(`_test\.go$`).MatchString(f) {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range recorded.FindAllStringSubmatch(string(src), -1) {
			action := m[1] + m[2]
			found++
			if !slices.Contains(devreg.AuditActions, action) {
				t.Errorf("%s records %q, which devreg.AuditActions does not list", f, action)
			}
		}
	}
	if found < 30 {
		t.Errorf("found %d recorded actions in the service's files; the pattern no longer sees how they are recorded", found)
	}
}
