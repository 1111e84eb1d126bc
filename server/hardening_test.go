package server

import (
	"bufio"
	"context"
	"devreg/internal/logtest"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"devreg"
	"devreg/credential"
)

// entryList is a registration's devices, for tests.
type entryList []devreg.DeviceEntry

func (l *entryList) Next() (devreg.DeviceEntry, error) {
	if len(*l) == 0 {
		return devreg.DeviceEntry{}, io.EOF
	}
	e := (*l)[0]
	*l = (*l)[1:]
	return e, nil
}

func openTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// TestTricklingBodyIsCut sends a token request's headers and a few bytes of its body, then
// nothing: the server must give up on it after the grace, not hold the connection for good.
func TestTricklingBodyIsCut(t *testing.T) {
	s := openTestServer(t, Config{BodyGrace: time.Second, MinBodyRate: 1024, BodyIdle: 2 * time.Second})
	conn, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "POST /device/v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=")
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	io.Copy(io.Discard, conn) // until the server answers and closes
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the server held a stalled body for %s; want it cut after about 1s", took)
	}
}

// TestSlowHonestBodyIsServed sends a body at twice the minimum rate, for longer than the grace:
// it must be read whole and answered as usual.
func TestSlowHonestBodyIsServed(t *testing.T) {
	s := openTestServer(t, Config{BodyGrace: time.Second, MinBodyRate: 1024, BodyIdle: 2 * time.Second})
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "grant_type=client_credentials&account_id=acc_nope&client_id=d1&client_secret=")
		for range 6 { // 6 KiB in 3 s
			time.Sleep(500 * time.Millisecond)
			io.WriteString(pw, strings.Repeat("s", 1024))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", s.URL()+"/device/v1/token", pr)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), "invalid_client") {
		t.Fatalf("slow but steady token request = %d %s, want 401 invalid_client", resp.StatusCode, b)
	}
}

// TestHeaderStallsCappedPerAddress opens more connections that never finish their headers than
// one address may have: the extra ones are closed at once, another address is still served, and
// so is the first address once its stalled connections are gone.
func TestHeaderStallsCappedPerAddress(t *testing.T) {
	s := openTestServer(t, Config{MaxPendingPerAddr: 8})
	var stalled []net.Conn
	defer func() {
		for _, c := range stalled {
			c.Close()
		}
	}()
	closedAtOnce := 0
	for range 20 {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
			closedAtOnce++
		}
	}
	if closedAtOnce != 12 {
		t.Errorf("%d of 20 stalled connections were closed at once; want the 12 over the cap of 8", closedAtOnce)
	}
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	if resp, err := other.Get(s.URL() + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("another address during the stall: %v %v", resp, err)
	}
	for _, c := range stalled {
		c.Close()
	}
	stalled = nil
	deadline := time.Now().Add(5 * time.Second)
	for _, pending := s.conns.counts("127.0.0.1"); pending > 0 && time.Now().Before(deadline); _, pending = s.conns.counts("127.0.0.1") {
		time.Sleep(10 * time.Millisecond)
	}
	c, err := net.Dial("tcp", s.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first address after its stalls ended: %v %v", resp, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestDataFilesArePrivate checks that the embedded database's files and the data folder can be
// read by their owner only.
func TestDataFilesArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s := openTestServer(t, Config{DataDir: dir})
	if _, _, err := s.Service.NewAccount(context.Background(), "Acme", "o@acme.test", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data folder mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	for _, name := range []string{"devreg.db", "devreg.db-wal", "devreg.db-shm", "secret.keys", "signing.keys"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, %v; want 0600", name, fi.Mode().Perm(), err)
		}
	}
}

// TestKeyFileLossRefusesStart deletes, then replaces, the secret-hashing key file of a database
// that holds devices: the server must refuse to start and name what is missing, not make a new
// key that no stored hash matches.
func TestKeyFileLossRefusesStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)}
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	registerDevices(t, s, 1)
	s.ln.Close()
	s.Shutdown(ctx)

	keyFile := filepath.Join(dir, "secret.keys")
	keys, err := credential.LoadOrCreateKeyring(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyID := keys.Current().ID
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "secret key file") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("start without the key file: %v; want a refusal naming the missing key file", err)
	}
	if _, err := os.Stat(keyFile); err == nil {
		t.Fatal("a new key file was made for a database with devices")
	}
	other := t.TempDir() // a fresh key file of another installation
	if _, err := credential.LoadOrCreateKeyring(filepath.Join(other, "secret.keys")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(other, "secret.keys"))
	os.WriteFile(keyFile, b, 0o600)
	if _, err := Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), keyID) {
		t.Fatalf("start with another key file: %v; want a refusal naming key %s", err, keyID)
	}
}

// TestClientGoneMidListingLogsNoError aborts listings while they are answered: the server must
// neither log an error nor try to write a second header.
func TestClientGoneMidListingLogsNoError(t *testing.T) {
	var logs logtest.Buffer
	ctx := context.Background()
	s, err := Open(ctx, Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(ctx)
	key := registerDevices(t, s, 3000)
	for i := range 20 {
		conn, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /api/v1/devices?limit=1000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", key)
		if i%2 == 1 {
			conn.Read(make([]byte, 100)) // the answer has started
		}
		conn.(*net.TCPConn).SetLinger(0) // a reset, as a client that crashes sends
		conn.Close()
	}
	time.Sleep(500 * time.Millisecond)
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "superfluous") {
			t.Errorf("an aborted listing was logged as an error: %s", line)
		}
	}
}

// registerDevices makes an account on s with n devices of one type, and returns its API key.
func registerDevices(t *testing.T, s *Server, n int) string {
	t.Helper()
	ctx := context.Background()
	acc, key, err := s.Service.NewAccount(ctx, "Acme", "o@acme.test", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	actx := devreg.NewContextWithCaller(ctx, devreg.Caller{AccountID: acc.ID, Scope: devreg.ScopeAdmin, Name: "test", Source: devreg.SourceAPI})
	dt, err := s.Service.CreateDeviceType(actx, devreg.DeviceType{Name: "T1"})
	if err != nil {
		t.Fatal(err)
	}
	var devices entryList
	for i := range n {
		devices = append(devices, devreg.DeviceEntry{Index: i, DeviceID: fmt.Sprintf("device-%05d", i), Secret: "secretfordevice"})
	}
	if _, err := s.Service.Register(actx, dt.ID, &devices, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	return key
}

// TestKeepAliveHeaderStallsCapped sends one request on each connection, then starts the next
// request's headers and stalls: reused connections count as sending headers too.
func TestKeepAliveHeaderStallsCapped(t *testing.T) {
	s := openTestServer(t, Config{MaxPendingPerAddr: 8})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var readers []*bufio.Reader
	for range 20 { // all idle after one request each
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		br := bufio.NewReader(c)
		readers = append(readers, br)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	cut := 0
	for i, c := range conns {
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and no more
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := readers[i].ReadByte(); err != nil && !isTimeout(err) {
			cut++
		}
	}
	if cut != 12 {
		t.Errorf("%d of 20 reused connections stalling in their headers were cut; want the 12 over the cap of 8", cut)
	}
}

// TestOpenConnectionsCappedPerAddress keeps idle connections open from one address: those over
// the cap are closed at once.
func TestOpenConnectionsCappedPerAddress(t *testing.T) {
	s := openTestServer(t, Config{MaxConnsPerAddr: 10})
	refused := 0
	for range 15 {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			refused++
		} else {
			resp.Body.Close()
		}
	}
	if refused != 5 {
		t.Errorf("%d of 15 idle connections of one address were refused; want the 5 over the cap of 10", refused)
	}
}

// TestUnreadBodyDoesNotHoldTheConnection declares a body that never comes to an endpoint that
// does not read it: the server must give up after the grace, not wait for good.
func TestUnreadBodyDoesNotHoldTheConnection(t *testing.T) {
	s := openTestServer(t, Config{BodyGrace: time.Second})
	for _, head := range []string{
		"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
		"POST /api/v1/devicetypes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200000\r\n\r\n{",
	} {
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		io.WriteString(c, head)
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		io.Copy(io.Discard, c)
		c.Close()
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%q: the server held a body that never came for %s; want about 1s", strings.SplitN(head, "\r\n", 2)[0], took)
		}
	}
}

// TestHugeHeadersRefused sends headers far over what any client needs.
func TestHugeHeadersRefused(t *testing.T) {
	s := openTestServer(t, Config{})
	req, _ := http.NewRequest("GET", s.URL()+"/healthz", nil)
	req.Header.Set("X-Junk", strings.Repeat("j", 200<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("200 KiB of headers = %d, want 431", resp.StatusCode)
	}
}
