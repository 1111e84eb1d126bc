package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"devreg/internal/pgtest"
)

// scrape reads a Prometheus text exposition: the value of every series, keyed as written
// (name{labels}), and the names of the metric families it declares.
func scrape(t *testing.T, u string) (map[string]float64, map[string]bool) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", u, resp.StatusCode)
	}
	values, families := map[string]float64{}, map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(f)[0]] = true
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		values[line[:i]] = v
	}
	return values, families
}

// do sends a request with an API key (or none) and returns the status and body.
func do(t *testing.T, method, u, key, contentType, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestMetricsListenAndDomainMetrics checks that --metrics-listen takes /metrics off the public
// port onto its own, that the domain metrics move after real requests (tokens issued and
// refused by reason, throttled logins, registrations and their devices, audit entries, the
// database pool), that no series names an account, device or key, and that every metric the
// Grafana dashboard in deploy/ queries is one devreg exports; on both databases.
func TestMetricsListenAndDomainMetrics(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, database string) {
		srv, _ := openServerOn(t, database, Config{MetricsAddr: "127.0.0.1:0"})
		if srv.MetricsURL() == "" || strings.HasPrefix(srv.MetricsURL(), srv.URL()) {
			t.Fatalf("metrics URL %q beside %s: want a listener of its own", srv.MetricsURL(), srv.URL())
		}
		if status, _ := getBody(t, srv.URL()+"/metrics"); status != 404 {
			t.Fatalf("GET /metrics on the public port = %d; want 404 with --metrics-listen", status)
		}
		before, _ := scrape(t, srv.MetricsURL())

		acct, key, err := srv.Service.NewAccount(context.Background(), "Metrics Co", "owner@metrics.example", "a long password here")
		if err != nil {
			t.Fatal(err)
		}
		api := srv.URL() + "/api/v1"
		status, body := do(t, "POST", api+"/devicetypes", key, "application/json", `{"name": "Sensor"}`)
		var dt struct{ ID string }
		if json.Unmarshal([]byte(body), &dt); status != 201 {
			t.Fatalf("create device type: %d %s", status, body)
		}
		if status, body = do(t, "PUT", api+"/devicetypes/"+dt.ID+"/device_ids", key, "text/csv", "m1,secret-of-m1,m2,secret-of-m2,m3,secret-of-m3\n"); status != 200 {
			t.Fatalf("register: %d %s", status, body)
		}
		// A dry run registers nothing and is not counted.
		if status, body = do(t, "PUT", api+"/devicetypes/"+dt.ID+"/device_ids?dry_run=true", key, "text/csv", "m9,secret-of-m9\n"); status != 200 {
			t.Fatalf("dry run: %d %s", status, body)
		}
		token := func(device, secret string) int {
			form := url.Values{"grant_type": {"client_credentials"}, "account_id": {acct.ID}, "client_id": {device}, "client_secret": {secret}}
			status, _ := do(t, "POST", srv.URL()+"/device/v1/token", "", "application/x-www-form-urlencoded", form.Encode())
			return status
		}
		if s := token("m1", "secret-of-m1"); s != 200 {
			t.Fatalf("token for m1 = %d", s)
		}
		for range 10 {
			if s := token("m2", "wrong secret!"); s != 401 {
				t.Fatalf("token with a wrong secret = %d; want 401", s)
			}
		}
		if s := token("m2", "secret-of-m2"); s != 429 {
			t.Fatalf("token after 10 failures = %d; want 429", s)
		}
		form := url.Values{"grant_type": {"password"}, "account_id": {acct.ID}, "client_id": {"m1"}, "client_secret": {"secret-of-m1"}}
		if status, _ = do(t, "POST", srv.URL()+"/device/v1/token", "", "application/x-www-form-urlencoded", form.Encode()); status != 400 {
			t.Fatalf("token with grant_type=password = %d; want 400", status)
		}
		if status, _ = do(t, "POST", srv.URL()+"/device/v1/token", "", "application/x-www-form-urlencoded", "grant_type=client_credentials"); status != 400 {
			t.Fatalf("token without account_id = %d; want 400", status)
		}
		// A broker's check, so that the broker metrics exist.
		status, body = do(t, "POST", api+"/apikeys", key, "application/json", `{"name": "broker", "scope": "broker"}`)
		var bk struct{ Key string }
		if json.Unmarshal([]byte(body), &bk); status != 201 {
			t.Fatalf("broker key: %d %s", status, body)
		}
		if status, body = do(t, "POST", srv.URL()+"/broker/v1/emqx/authn", bk.Key, "application/json",
			`{"username": "m3", "password": "secret-of-m3", "clientid": "m3"}`); status != 200 || !strings.Contains(body, "allow") {
			t.Fatalf("broker login: %d %s", status, body)
		}

		after, families := scrape(t, srv.MetricsURL())
		for series, want := range map[string]float64{
			`devreg_device_tokens_issued_total`:                                   1,
			`devreg_device_tokens_refused_total{reason="invalid_client"}`:         10,
			`devreg_device_tokens_refused_total{reason="throttled"}`:              1,
			`devreg_device_tokens_refused_total{reason="unsupported_grant_type"}`: 1,
			`devreg_device_tokens_refused_total{reason="invalid_request"}`:        1,
			`devreg_throttled_logins_total{kind="device"}`:                        1,
			`devreg_throttled_logins_total{kind="console"}`:                       0,
			`devreg_registrations_total`:                                          1,
			`devreg_devices_registered_total{result="created"}`:                   3,
			`devreg_devices_registered_total{result="replaced"}`:                  0,
			// account creation, device type, registration, broker key
			`devreg_audit_entries_total`: 4,
		} {
			if got := after[series] - before[series]; got != want {
				t.Errorf("%s moved by %v; want %v", series, got, want)
			}
		}
		if after["devreg_db_connections_max"] < 1 {
			t.Errorf("devreg_db_connections_max = %v; want the pool's size", after["devreg_db_connections_max"])
		}
		for _, name := range []string{"devreg_db_connections_in_use", "devreg_db_connections_idle", "devreg_db_waits_total",
			"devreg_db_wait_seconds_total", "devreg_last_seen_backlog"} {
			if _, ok := after[name]; !ok {
				t.Errorf("%s is missing", name)
			}
		}
		// Aggregates only: nothing names the account, a device or a key.
		for series := range after {
			for _, id := range []string{acct.ID, "m1", "m2", "m3", dt.ID} {
				if strings.Contains(series, `"`+id+`"`) || strings.Contains(series, id) && strings.HasPrefix(series, "devreg_") {
					t.Errorf("series %s names %s", series, id)
				}
			}
		}

		// Every metric the dashboard queries is one devreg exports.
		raw, err := os.ReadFile("../deploy/grafana-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Panels []struct {
				Title   string
				Targets []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(raw, &dash); err != nil {
			t.Fatalf("grafana-dashboard.json: %v", err)
		}
		queried := 0
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				for _, name := range regexp.MustCompile(`\bdevreg_[a-z_]+`).FindAllString(tg.Expr, -1) {
					queried++
					family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
					if !families[family] {
						t.Errorf("panel %q queries %s, which devreg does not export", p.Title, name)
					}
				}
			}
		}
		if queried < 10 {
			t.Errorf("the dashboard queries only %d metrics", queried)
		}
	})
}
