package console_test

import (
	"bufio"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gowebpki/jcs"

	"devreg"
	"devreg/internal/pgtest"
	"devreg/server"
)

// clock is a test clock the server reads.
type clock struct{ t atomic.Pointer[time.Time] }

func newClock(t time.Time) *clock       { c := &clock{}; c.Set(t); return c }
func (c *clock) Now() time.Time         { return *c.t.Load() }
func (c *clock) Set(t time.Time)        { c.t.Store(&t) }
func (c *clock) Add(d time.Duration)    { c.Set(c.Now().Add(d)) }
func (c *clock) use(srv *server.Server) { srv.Service.Now = c.Now }

var entryRowPattern = regexp.MustCompile(`(?s)<tr id="entry-(\d+)">(.*?)</tr>`)

// auditRow is an entry as the Audit Log page shows it: its seq and its row's text, tags removed.
type auditRow struct {
	Seq  int64
	Text string
}

var tagPattern = regexp.MustCompile(`<[^>]*>`)

func auditRows(t *testing.T, body string) []auditRow {
	t.Helper()
	var rows []auditRow
	for _, m := range entryRowPattern.FindAllStringSubmatch(body, -1) {
		seq, _ := strconv.ParseInt(m[1], 10, 64)
		txt := html.UnescapeString(tagPattern.ReplaceAllString(m[2], " "))
		rows = append(rows, auditRow{seq, strings.Join(strings.Fields(txt), " ")})
	}
	return rows
}

func seqs(rows []auditRow) []int64 {
	var s []int64
	for _, r := range rows {
		s = append(s, r.Seq)
	}
	return s
}

// head returns the chain's head as the service reports it.
func (e *env) head(t *testing.T) devreg.AuditHead {
	t.Helper()
	_, _, head, err := e.srv.Service.AuditLog(e.asAdmin(), devreg.AuditFilter{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	return head
}

// apiPost makes a change through the Operations API with the account's first key.
func (e *env) apiPost(t *testing.T, path, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s = %d", path, resp.StatusCode)
	}
}

// TestAuditLog makes changes through the console and the API, then reads them on the Audit Log
// page: newest first, who, what and the details; each filter; the chain's head; bad filters.
func TestAuditLog(t *testing.T) { pgtest.Each(t, testAuditLog) }

func testAuditLog(t *testing.T, database string) {
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-3 * time.Hour)
	clk := newClock(t0)
	e := newEnv(t, database, clk.use) // 1 account.create
	if status, _ := e.post(t, "/login", url.Values{"email": {email}, "password": {"wrong password"}}); status != 401 {
		t.Fatalf("wrong password = %d", status) // 2 login.failure
	}
	e.post(t, "/login", url.Values{"email": {"stranger@acme.test"}, "password": {"wrong password"}}) // not recorded
	e.login(t)                                                                                       // 3 login.success
	dt := e.createType(t, "Lock")                                                                    // 4 devicetype.create
	e.register(t, dt, "lock-1", "lock-secret-1")                                                     // 5 devices.register
	clk.Add(time.Hour)
	t1 := clk.Now()
	if _, body := e.post(t, "/devices/lock-1/status", url.Values{"status": {"disabled"}}); !strings.Contains(body, "is disabled") {
		t.Fatalf("disable: %s", body) // 6 device.update
	}
	e.post(t, "/apikeys", url.Values{"name": {`<script>alert("x")</script>`}, "scope": {"read"}}) // 7 apikey.create
	e.apiPost(t, "/api/v1/devicetypes", `{"name": "Gateway"}`)                                    // 8 devicetype.create by the key
	keys, err := e.srv.Service.ListAPIKeys(e.asAdmin())
	if err != nil {
		t.Fatal(err)
	}
	ownerKey := keys[slices.IndexFunc(keys, func(k devreg.APIKey) bool { return strings.HasPrefix(k.Name, "owner") })].ID

	status, body := e.get(t, "/audit")
	rows := auditRows(t, body)
	if status != 200 || !slices.Equal(seqs(rows), []int64{8, 7, 6, 5, 4, 3, 2, 1}) {
		t.Fatalf("audit page = %d with entries %v, want 8 down to 1:\n%s", status, seqs(rows), body)
	}
	for _, tc := range []struct {
		seq  int64
		want []string
	}{
		{1, []string{"cli", "account.create", "email owner@acme.test"}},
		{2, []string{"user owner@acme.test", "login.failure", "user usr_"}},
		{3, []string{"user owner@acme.test", "login.success", "user usr_"}},
		{4, []string{"user owner@acme.test", "devicetype.create", "devicetype " + dt, "name Lock"}},
		{5, []string{"devices.register", "batch bat_", "created 1", "device_type_id " + dt}},
		{6, []string{"device.update", "device lock-1", "status enabled → disabled", t1.Format("2006-01-02 15:04:05")}},
		{7, []string{"apikey.create", `name <script>alert("x")</script>`, "scope read", "device_type_ids null"}},
		{8, []string{"api_key owner (owner@acme.test)", "devicetype.create", "name Gateway"}},
	} {
		if row := rows[len(rows)-int(tc.seq)].Text; !containsAll(row, tc.want) {
			t.Errorf("entry %d reads %q, want it to hold %q", tc.seq, row, tc.want)
		}
	}
	if strings.Contains(body, `<script>alert`) || !strings.Contains(body, `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`) {
		t.Errorf("the key's name in the details is not escaped")
	}
	head := e.head(t)
	if head.Seq != 8 || !strings.Contains(body, `id="head-value" readonly value="8:`+head.Hash+`"`) ||
		!strings.Contains(body, "devreg audit verify --head SEQ:HASH") {
		t.Errorf("the page does not show the head %d:%s with how to verify against it", head.Seq, head.Hash)
	}
	if !strings.Contains(body, `href="/audit/export"`) || !strings.Contains(body, "Download (NDJSON)") || !strings.Contains(body, `href="/audit" aria-current="page"`) {
		t.Errorf("the page lacks the download link, or the navigation does not mark it")
	}

	for _, tc := range []struct {
		name  string
		query url.Values
		want  []int64
	}{
		{"action", url.Values{"action": {"devicetype.create"}}, []int64{8, 4}},
		{"action/login-success", url.Values{"action": {"login.success"}}, []int64{3}},
		{"actor/api-key", url.Values{"actor_id": {ownerKey}}, []int64{8}},
		{"actor/cli", url.Values{"actor_id": {"cli"}}, []int64{1}},
		{"object", url.Values{"object_id": {"lock-1"}}, []int64{6}},
		{"since", url.Values{"since": {t1.Format("2006-01-02T15:04")}}, []int64{8, 7, 6}},
		{"until", url.Values{"until": {t1.Format("2006-01-02T15:04")}}, []int64{5, 4, 3, 2, 1}},
		{"since-rfc3339-and-action", url.Values{"since": {t1.Add(-time.Minute).Format(time.RFC3339)}, "action": {"devicetype.create"}}, []int64{8}},
		{"nothing", url.Values{"action": {"device.delete"}}, nil},
	} {
		t.Run("filter/"+tc.name, func(t *testing.T) {
			status, body := e.get(t, "/audit?"+tc.query.Encode())
			if got := seqs(auditRows(t, body)); status != 200 || !slices.Equal(got, tc.want) {
				t.Errorf("entries = %v (status %d), want %v", got, status, tc.want)
			}
			for k, v := range tc.query {
				if k != "since" || !strings.Contains(v[0], "Z") {
					if !strings.Contains(body, `value="`+html.EscapeString(v[0])+`"`) {
						t.Errorf("the form does not show the filter %s=%s", k, v[0])
					}
				}
			}
			if tc.want == nil && !strings.Contains(body, "No entries match these filters.") {
				t.Errorf("an empty result does not say so")
			}
		})
	}
	t.Run("filter-links", func(t *testing.T) {
		// Each row links to the page filtered by its action, actor and object.
		_, body := e.get(t, "/audit?since="+t1.Format("2006-01-02T15:04"))
		for _, want := range []string{`href="/audit?action=device.update&amp;since=`, `href="/audit?object_id=lock-1&amp;object_type=device&amp;since=`} {
			if !strings.Contains(body, want) {
				t.Errorf("no link %s", want)
			}
		}
	})

	for _, tc := range []struct {
		name   string
		query  string
		status int
		says   string
	}{
		{"400/since-not-a-time", "since=yesterday", 400, "since must be a date and time in UTC"},
		{"400/until-not-a-time", "until=2027-13-01T00:00", 400, "until must be a date and time in UTC"},
		{"422/since-after-until", "since=2027-02-01T00:00&until=2027-01-01T00:00", 422, "must be before until"},
		{"400/bad-cursor", "cursor=nonsense", 400, "cursor"},
		{"400/control-character", "object_id=a%00b", 400, "the object ID filter must be text"},
		{"400/too-long", "action=" + strings.Repeat("a", 201), 400, "the action filter must be text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.get(t, "/audit?"+tc.query)
			if status != tc.status || !strings.Contains(body, "That did not work") || !strings.Contains(html.UnescapeString(body), tc.says) {
				t.Errorf("status %d, want %d and an error page saying %q:\n%s", status, tc.status, tc.says, body)
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestAuditPaging pages through more entries than one page holds with "Older entries", with a
// filter kept across the pages.
func TestAuditPaging(t *testing.T) { pgtest.Each(t, testAuditPaging) }

func testAuditPaging(t *testing.T, database string) {
	e := newEnv(t, database)
	e.login(t)
	const n = 120
	for i := range n {
		if _, err := e.srv.Service.CreateAPIKey(e.asAdmin(), devreg.NewAPIKey{Name: "station " + strconv.Itoa(i), Scope: devreg.ScopeRegister}); err != nil {
			t.Fatal(err)
		}
	}
	next := regexp.MustCompile(`<a href="([^"]+)" rel="next">Older entries »</a>`)
	var got []int64
	path, pages := "/audit?action=apikey.create", 0
	for path != "" {
		status, body := e.get(t, path)
		if status != 200 {
			t.Fatalf("%s = %d", path, status)
		}
		pages++
		rows := auditRows(t, body)
		if len(rows) == 0 || len(rows) > 50 {
			t.Fatalf("page %d holds %d entries", pages, len(rows))
		}
		for _, r := range rows {
			if !strings.Contains(r.Text, "apikey.create") {
				t.Errorf("entry %d on page %d is not an apikey.create: %s", r.Seq, pages, r.Text)
			}
		}
		got = append(got, seqs(rows)...)
		path = ""
		if m := next.FindStringSubmatch(body); m != nil {
			path = html.UnescapeString(m[1])
			if !strings.Contains(path, "action=apikey.create") || !strings.Contains(path, "cursor=") {
				t.Errorf("the next page's link %s loses the filter or has no cursor", path)
			}
		}
		if pages > 1 && !strings.Contains(body, `<a href="/audit?action=apikey.create">« Newest entries</a>`) {
			t.Errorf("page %d has no link back to the newest entries", pages)
		}
	}
	// Entry 1 is account.create, 2 the login; the keys are 3 to n+2.
	var want []int64
	for seq := int64(n + 2); seq >= 3; seq-- {
		want = append(want, seq)
	}
	if pages != 3 || !slices.Equal(got, want) {
		t.Errorf("%d pages with entries %v, want 3 pages with %d down to 3, each once", pages, got, n+2)
	}
}

// exportLines downloads the export and returns its lines, decoded, and the response.
func (e *env) export(t *testing.T, query string) (*http.Response, [][]byte) {
	t.Helper()
	resp, err := e.http.Get(e.url + "/audit/export" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines [][]byte
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, slices.Clone(sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return resp, lines
}

// TestAuditExport downloads the audit log as NDJSON and recomputes its hash chain from the
// lines alone, as a tool outside devreg would: each line's hash is SHA-256 of the previous hash,
// a line feed and the line without "hash" in RFC 8785 form, and the last is the head in the
// Audit-Head header.
func TestAuditExport(t *testing.T) { pgtest.Each(t, testAuditExport) }

func testAuditExport(t *testing.T, database string) {
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-3 * time.Hour)
	clk := newClock(t0)
	e := newEnv(t, database, clk.use)
	e.login(t)
	// A name that RFC 8785 writes differently from encoding/json (which escapes <), with a
	// character outside ASCII.
	_, body := e.post(t, "/devicetypes", url.Values{"name": {"Lock <Ü>"}})
	dt := typeIDPattern.FindString(body[strings.Index(body, "Its ID is"):])
	e.register(t, dt, "lock-1", "lock-secret-1")
	clk.Add(time.Hour)
	e.post(t, "/devices/lock-1/status", url.Values{"status": {"disabled"}})
	e.post(t, "/devicetypes/"+dt, url.Values{"name": {"Lock 2"}, "min_secret_length": {"10"}, "rotation_grace_seconds": {"60"}})
	head := e.head(t)
	if head.Seq != 6 {
		t.Fatalf("head %d, want 6 entries", head.Seq)
	}

	resp, lines := e.export(t, "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" ||
		!strings.HasPrefix(resp.Header.Get("Content-Disposition"), `attachment; filename="devreg-audit-`) {
		t.Fatalf("export = %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
	if got, want := resp.Header.Get("Audit-Head"), strconv.FormatInt(head.Seq, 10)+":"+head.Hash; got != want {
		t.Errorf("Audit-Head = %q, want %q", got, want)
	}
	if len(lines) != int(head.Seq) {
		t.Fatalf("export has %d lines, want %d", len(lines), head.Seq)
	}
	prev := devreg.GenesisHash
	var actions []string
	for i, line := range lines {
		var entry map[string]any
		if err := json.Unmarshal(line, &entry); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
		hash, _ := entry["hash"].(string)
		delete(entry, "hash")
		raw, _ := json.Marshal(entry)
		canonical, err := jcs.Transform(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := devreg.ChainHash(prev, canonical); got != hash {
			t.Errorf("line %d: hash %s, recomputed %s", i+1, hash, got)
		}
		if seq, _ := entry["seq"].(float64); int(seq) != i+1 {
			t.Errorf("line %d has seq %v", i+1, entry["seq"])
		}
		actions = append(actions, entry["action"].(string))
		prev = hash
	}
	if prev != head.Hash {
		t.Errorf("the last line's hash %s is not the head %s", prev, head.Hash)
	}
	want := []string{"account.create", "login.success", "devicetype.create", "devices.register", "device.update", "devicetype.update"}
	if diff := cmp.Diff(want, actions); diff != "" {
		t.Errorf("actions, oldest first (-want +got):\n%s", diff)
	}
	// The service's own verification agrees.
	findings, err := e.srv.Service.VerifyAudit(t.Context(), nil)
	if err != nil || len(findings) != 0 {
		t.Errorf("VerifyAudit = %v, %v", findings, err)
	}

	t.Run("since", func(t *testing.T) {
		resp, lines := e.export(t, "?since="+url.QueryEscape(clk.Now().Format("2006-01-02T15:04")))
		if resp.StatusCode != 200 || len(lines) != 2 || !strings.Contains(string(lines[0]), `"action":"device.update"`) ||
			resp.Header.Get("Audit-Head") != "6:"+head.Hash {
			t.Errorf("export since the second hour = %d, head %q, lines:\n%s", resp.StatusCode, resp.Header.Get("Audit-Head"), lines)
		}
	})
	t.Run("empty-range", func(t *testing.T) {
		resp, lines := e.export(t, "?until="+t0.Add(-time.Hour).Format("2006-01-02T15:04"))
		if resp.StatusCode != 200 || len(lines) != 0 || resp.Header.Get("Audit-Head") != "6:"+head.Hash {
			t.Errorf("export of an empty range = %d, head %q, %d lines", resp.StatusCode, resp.Header.Get("Audit-Head"), len(lines))
		}
	})
	t.Run("400/bad-time", func(t *testing.T) {
		resp, lines := e.export(t, "?since=soon")
		if resp.StatusCode != 400 || resp.Header.Get("Content-Disposition") != "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(slices.Concat(lines...)), "since must be a date and time in UTC") {
			t.Errorf("export with a bad time = %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
		}
	})
	t.Run("needs-login", func(t *testing.T) {
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Get(e.url + "/audit/export")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=") {
			t.Errorf("export without a session = %d to %q, want the login page", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}
