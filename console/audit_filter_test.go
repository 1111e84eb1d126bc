package console_test

import (
	"regexp"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// TestAuditActionFilterIsAList: the audit page's action filter is a list of the known actions,
// "Any action" first, with the one filtered by chosen, even one the list does not know.
func TestAuditActionFilterIsAList(t *testing.T) { pgtest.Each(t, testAuditActionFilterIsAList) }

func testAuditActionFilterIsAList(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	sel := regexp.MustCompile(`(?s)<select id="a-action" name="action">.*?</select>`)
	for _, tc := range []struct{ query, selected string }{
		{"", `<option value="">Any action</option>`},
		{"?action=devicetype.create", `<option value="devicetype.create" selected>devicetype.create</option>`},
		{"?action=no.such", `<option value="no.such" selected>no.such</option>`},
	} {
		_, body := e.get(t, "/audit"+tc.query)
		list := sel.FindString(body)
		if !strings.Contains(list, tc.selected) || !strings.Contains(list, `<option value="apikey.create"`) || strings.Count(list, " selected") > 1 {
			t.Errorf("/audit%s: the action list is\n%s\nwant %s in it", tc.query, list, tc.selected)
		}
	}
}

// TestAuditShowsNamesWithIDs: an entry shows its actor's name with the actor's ID, and its
// object's ID with the object's name where it has one.
func TestAuditShowsNamesWithIDs(t *testing.T) { pgtest.Each(t, testAuditShowsNamesWithIDs) }

func testAuditShowsNamesWithIDs(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	dt := e.createType(t, "Lock")
	_, body := e.get(t, "/audit?action=devicetype.create")
	row := regexp.MustCompile(`(?s)<tr id="entry-\d+">.*?</tr>`).FindString(body)
	if !regexp.MustCompile(`>owner@acme.test</a><div class="muted small"><code class="hash">usr_[A-Za-z0-9]+</code></div>`).MatchString(row) {
		t.Errorf("the entry does not show its actor's ID beside the name:\n%s", row)
	}
	if !strings.Contains(row, `<code class="hash">`+dt+`</code></a><div class="small object-name">Lock</div>`) {
		t.Errorf("the entry does not show the type's name beside its ID:\n%s", row)
	}
}
