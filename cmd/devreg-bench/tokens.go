package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"devreg"
)

// loadConnections is how many connections a load generator keeps busy at once.
const loadConnections = 32

// tokenDevices is how many registered devices the rate figures spread their requests over.
const tokenDevices = 1000

// load is a kind of request a load generator sends as fast as the server answers, cycling through
// its variants.
type load struct {
	name, method, path, contentType string
	variants                        []variant
	check                           func(status int, body []byte) error
}

// variant is one request of a load: its Authorization header and body, either possibly empty.
type variant struct{ auth, body string }

// rateRun measures token issues per second, broker logins per second with the secret and with a
// token as the password (EMQX's authenticator, as a broker calls it), and topic checks per second
// (EMQX's authorizer: may the device publish to devices/<its ID>/telemetry), each spread over
// tokenDevices devices, next to the same server's /healthz rate. Each device is sent every kind
// of request once first, which checks the answers and leaves the rates to measure a steady state
// (a device's first token records that its credential was used).
func (b *bench) rateRun(ctx context.Context, srv *server) error {
	brokerKey, err := srv.c.CreateAPIKey(ctx, "bench broker", devreg.ScopeBroker)
	if err != nil {
		return err
	}
	ok200 := func(status int, body []byte) error {
		if status != 200 {
			return fmt.Errorf("HTTP %d: %s", status, body[:min(len(body), 200)])
		}
		return nil
	}
	allowed := func(status int, body []byte) error {
		if status != 200 || !bytes.Contains(body, []byte(`"allow"`)) {
			return fmt.Errorf("HTTP %d: %s", status, body[:min(len(body), 200)])
		}
		return nil
	}
	healthz := load{name: "healthz", method: "GET", path: "/healthz", variants: []variant{{}}, check: ok200}
	tokens := load{name: "token_issue", method: "POST", path: "/device/v1/token", contentType: "application/x-www-form-urlencoded", check: ok200}
	form := url.Values{"grant_type": {"client_credentials"}, "account_id": {srv.accountID}}.Encode()
	step := max(1, b.n/tokenDevices)
	for i := 0; i < b.n && len(tokens.variants) < tokenDevices; i += step {
		basic := base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(b.idsA[i]) + ":" + url.QueryEscape(b.secretsA[i])))
		tokens.variants = append(tokens.variants, variant{auth: "Basic " + basic, body: form})
	}
	// A device's first token records that its credential was used; the tokens for the broker
	// logins are gathered here, which also takes that write out of the rate.
	accessTokens := make([]string, len(tokens.variants))
	for i, v := range tokens.variants {
		status, body, err := send(ctx, http.DefaultClient, srv.url, tokens, v)
		if err == nil {
			err = ok200(status, body)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err == nil {
			err = json.Unmarshal(body, &tok)
		}
		if err != nil {
			return fmt.Errorf("token_issue: %w", err)
		}
		accessTokens[i] = tok.AccessToken
	}
	brokerLogin := func(name string, password func(i, device int) string) load {
		l := load{name: name, method: "POST", path: "/broker/v1/emqx/authn", contentType: "application/json", check: allowed}
		for i := range tokens.variants {
			id := b.idsA[i*step]
			body, _ := json.Marshal(map[string]string{"username": id, "password": password(i, i*step), "clientid": id, "peerhost": "10.0.0.7"})
			l.variants = append(l.variants, variant{auth: "Bearer " + brokerKey.Key, body: string(body)})
		}
		return l
	}
	topicCheck := load{name: "topic_check", method: "POST", path: "/broker/v1/emqx/authz", contentType: "application/json", check: allowed}
	for i := range tokens.variants {
		id := b.idsA[i*step]
		body, _ := json.Marshal(map[string]string{"username": id, "clientid": id, "topic": "devices/" + id + "/telemetry", "action": "publish"})
		topicCheck.variants = append(topicCheck.variants, variant{auth: "Bearer " + brokerKey.Key, body: string(body)})
	}
	loads := []load{
		healthz, tokens,
		brokerLogin("broker_login_secret", func(_, device int) string { return b.secretsA[device] }),
		brokerLogin("broker_login_token", func(i, _ int) string { return accessTokens[i] }),
		topicCheck,
	}
	var base float64
	for _, l := range loads {
		for _, v := range l.variants {
			status, body, err := send(ctx, http.DefaultClient, srv.url, l, v)
			if err == nil {
				err = l.check(status, body)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
		}
		settle(srv.cmd.Process.Pid)
		cpu := cpuSeconds(srv.cmd.Process.Pid)
		rate, err := b.load.rate(ctx, b.dir, srv.url, l, b.rateTime)
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		m := measure{value: rate, cpu: cpuSeconds(srv.cmd.Process.Pid) - cpu}
		if l.name == "healthz" {
			base = rate
			b.res.add(l.name, "", m)
			continue
		}
		m.ratio = rate / base
		b.res.add(l.name, "healthz", m)
	}
	return nil
}

// runTokensOnly measures only the request rates of rateRun, cfg.runs times, each time on a new
// server whose registry holds cfg.n devices, and prints them.
func runTokensOnly(cfg config, bin string) error {
	began := time.Now()
	b, err := newBench(cfg, bin)
	if err != nil {
		return err
	}
	defer os.RemoveAll(b.dir)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	b.idsA, b.secretsA = make([]string, cfg.n), make([]string, cfg.n)
	for i := range cfg.n {
		b.idsA[i], b.secretsA[i] = deviceID("a", i), randText(rng, 24)
	}
	if b.files.csvA, err = writeLines(b.dir, "a.csv", cfg.n, func(w *bufio.Writer, i int) { fmt.Fprintf(w, "%s, %s,\n", b.idsA[i], b.secretsA[i]) }); err != nil {
		return err
	}
	ctx := context.Background()
	for r := range cfg.runs {
		fmt.Fprintf(os.Stderr, "run %d of %d (%s in)\n", r+1, cfg.runs, time.Since(began).Round(time.Second))
		if err := b.tokensRun(ctx, r); err != nil {
			return err
		}
	}
	b.reportRates(os.Stdout, time.Since(began))
	return nil
}

// tokensRun registers the devices on a server of its own and measures the request rates there.
func (b *bench) tokensRun(ctx context.Context, run int) error {
	srv, err := b.startServer(ctx, fmt.Sprintf("run%d-tokens", run+1))
	if err != nil {
		return err
	}
	defer srv.stop()
	typeID, err := srv.newType(ctx, "bench tokens")
	if err != nil {
		return err
	}
	n := int64(b.n)
	if _, err := srv.register(ctx, "register_csv", typeID, b.files.csvA, "text/csv", false, http.StatusOK, func(r regResult) bool { return r.Created == n }); err != nil {
		return err
	}
	return b.rateRun(ctx, srv)
}

// reportRates prints the request rates that rateRun measured, as the full report does.
func (b *bench) reportRates(w io.Writer, took time.Duration) {
	fmt.Fprintf(w, "devreg-bench tokens-only: n=%d, %d runs, %d CPUs; rates: %s, %s each; took %s\n",
		b.n, b.runs, runtime.NumCPU(), b.load, b.rateTime, took.Round(time.Second))
	fmt.Fprintln(w, "Each figure: the median of the runs [least–greatest]. Each ratio is taken within a run.")
	b.printRates(w)
}

// rateNames are the request rates rateRun measures.
var rateNames = []string{"healthz", "token_issue", "broker_login_secret", "broker_login_token", "topic_check"}

// printRates prints the request rates rateRun measured, with their ratios to /healthz.
func (b *bench) printRates(w io.Writer) {
	fmt.Fprintf(w, "\n%-34s %-26s %-22s %14s\n", "rate", "requests/s", "ratio_to_healthz", "server_cpu_us/req")
	for _, name := range rateNames {
		s := b.res.byName[name]
		ratio := "-"
		if name != "healthz" {
			ratio = spreadOf(s.ratios()).format(2)
		}
		perReq := spreadOf(s.pick(func(m measure) float64 { return m.cpu / (m.value * b.rateTime.Seconds()) * 1e6 }))
		fmt.Fprintf(w, "%-34s %-26s %-22s %14.0f\n", name, spreadOf(s.values()).format(0), ratio, perReq.med)
	}
}

// send sends one variant of l and returns the answer's status and body.
func send(ctx context.Context, hc *http.Client, serverURL string, l load, v variant) (int, []byte, error) {
	var body io.Reader
	if v.body != "" {
		body = strings.NewReader(v.body)
	}
	req, err := http.NewRequestWithContext(ctx, l.method, serverURL+l.path, body)
	if err != nil {
		return 0, nil, err
	}
	if l.contentType != "" {
		req.Header.Set("Content-Type", l.contentType)
	}
	if v.auth != "" {
		req.Header.Set("Authorization", v.auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, b, err
}

// loadGenerator measures how many requests of a load a server answers per second with
// loadConnections connections.
type loadGenerator interface {
	rate(ctx context.Context, dir, serverURL string, l load, d time.Duration) (float64, error)
	String() string
}

// newLoadGenerator returns wrk when it is installed, and a Go load generator otherwise.
func newLoadGenerator() loadGenerator {
	if path, err := exec.LookPath("wrk"); err == nil {
		out, _ := exec.Command(path, "--version").CombinedOutput() // prints its version and exits 1
		version := "wrk"
		if f := strings.Fields(string(out)); len(f) >= 2 {
			version = f[0] + " " + f[1]
		}
		return wrkLoad{path: path, version: version}
	}
	return goLoad{}
}

// wrkLoad is wrk (https://github.com/wg/wrk), with a thread per core.
type wrkLoad struct{ path, version string }

func (w wrkLoad) String() string {
	return fmt.Sprintf("%s, %d threads, %d connections", w.version, wrkThreads(), loadConnections)
}

func wrkThreads() int { return min(loadConnections, runtime.NumCPU()) }

func (w wrkLoad) rate(ctx context.Context, dir, serverURL string, l load, d time.Duration) (float64, error) {
	script := filepath.Join(dir, l.name+".lua")
	if err := os.WriteFile(script, []byte(wrkScript(l)), 0o600); err != nil {
		return 0, err
	}
	defer os.Remove(script)
	cmd := exec.CommandContext(ctx, w.path, "-t", strconv.Itoa(wrkThreads()), "-c", strconv.Itoa(loadConnections),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second).Seconds()))), "--timeout", "10s", "-s", script, serverURL+l.path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	text := string(out)
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`).FindStringSubmatch(text); m != nil {
		return 0, fmt.Errorf("wrk: %s answers were not 2xx:\n%s", m[1], text)
	}
	if strings.Contains(text, "Socket errors:") {
		return 0, fmt.Errorf("wrk: socket errors:\n%s", text)
	}
	m := regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`).FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("wrk printed no rate:\n%s", text)
	}
	return strconv.ParseFloat(m[1], 64)
}

// wrkScript is a wrk script that sends the variants of l in turn, each thread from the first.
func wrkScript(l load) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "local method, path, ctype = %s, %s, %s\nlocal variants = {\n", luaString(l.method), luaString(l.path), luaString(l.contentType))
	for _, v := range l.variants {
		fmt.Fprintf(&sb, "  {%s, %s},\n", luaString(v.auth), luaString(v.body))
	}
	sb.WriteString(`}
local reqs, i = {}, 0
function init(args)
  for k, v in ipairs(variants) do
    local headers = {}
    if ctype ~= "" then headers["Content-Type"] = ctype end
    if v[1] ~= "" then headers["Authorization"] = v[1] end
    local body = nil
    if v[2] ~= "" then body = v[2] end
    reqs[k] = wrk.format(method, path, headers, body)
  end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
`)
	return sb.String()
}

// luaString quotes s for Lua, which reads the escapes strconv.Quote writes for printable ASCII;
// the variants hold nothing else.
func luaString(s string) string {
	for _, r := range s {
		if r < ' ' || r > '~' {
			panic(fmt.Sprintf("bench: %q is not printable ASCII", s))
		}
	}
	return strconv.Quote(s)
}

// goLoad is a load generator in this process: a goroutine per connection.
type goLoad struct{}

func (goLoad) String() string {
	return fmt.Sprintf("a Go load generator (wrk is not installed), %d connections", loadConnections)
}

func (goLoad) rate(ctx context.Context, _, serverURL string, l load, d time.Duration) (float64, error) {
	return rateFrom(ctx, serverURL, l, d, nil)
}
