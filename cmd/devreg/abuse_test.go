package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"devreg/client"
)

// peakRSS returns the most memory the process has held, from /proc (Linux).
func peakRSS(t *testing.T, cmd *exec.Cmd) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestAbuseWithoutCredentials attacks a real server process the way someone without any
// credentials would, and measures what it costs the server: its temporary folder, its peak memory,
// and how fast it still answers others.
func TestAbuseWithoutCredentials(t *testing.T) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the server process inherits it
	base, cmd := serve(t, dir)
	ctx := context.Background()
	c := client.New(base, acme.APIKey)
	typeName := "T1"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &typeName})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, dt.ID, []client.Credential{{DeviceID: "dev-1", Secret: "secretfordevice1"}}, client.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(id, secret string) (int, time.Duration) {
		start := time.Now()
		resp, err := http.PostForm(base+"/device/v1/token", url.Values{"grant_type": {"client_credentials"}, "account_id": {acme.AccountID},
			"client_id": {id}, "client_secret": {secret}})
		if err != nil {
			t.Error(err)
			return 0, 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}

	t.Run("multipart-login-leaves-no-temp-files", func(t *testing.T) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("email", "ops@acme.test")
		fw, _ := mw.CreateFormFile("password", "big.bin")
		fw.Write(bytes.Repeat([]byte("x"), 64<<20))
		mw.Close()
		resp, err := http.Post(base+"/login", mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Fatalf("a multipart post to /login (answered %d) left %d files in the server's temporary folder", resp.StatusCode, len(left))
		}
	})

	t.Run("parallel-logins-bounded-memory", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.PostForm(base+"/login", url.Values{"email": {fmt.Sprintf("nobody%d@acme.test", i)}, "password": {"guess-guess"}})
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
		peak := peakRSS(t, cmd)
		t.Logf("server peak memory after 40 parallel logins: %d MiB", peak>>20)
		if peak > 512<<20 {
			t.Fatalf("40 parallel logins took the server to %d MiB; want under 512 MiB", peak>>20)
		}
	})

	t.Run("parallel-wrong-secrets-checked-at-most-10-times", func(t *testing.T) {
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, _ := token("dev-1", "wrong-secret-guess")
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("100 parallel wrong secrets: %v", codes)
		if codes[401] > 10 || codes[401]+codes[429] != 100 {
			t.Fatalf("100 parallel wrong secrets were answered %v; want at most 10 checked (401), the rest 429", codes)
		}
	})

	t.Run("trickling-uploads-do-not-freeze-the-service", func(t *testing.T) {
		var writers []*io.PipeWriter
		var wg sync.WaitGroup
		for range 12 {
			pr, pw := io.Pipe()
			writers = append(writers, pw)
			req, _ := http.NewRequest("PUT", base+"/api/v1/devicetypes/"+dt.ID+"/device_ids", pr)
			req.Header.Set("Authorization", "Bearer "+acme.APIKey)
			req.Header.Set("Content-Type", "text/csv")
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			go func() {
				for i := 0; i < 3; i++ {
					if _, err := fmt.Fprintf(pw, "slow-%d, secretforslow,\n", i); err != nil {
						return
					}
					time.Sleep(2 * time.Second)
				}
			}()
		}
		defer func() {
			for _, pw := range writers {
				pw.Close()
			}
			wg.Wait()
		}()
		time.Sleep(time.Second)
		var slowest time.Duration
		defer func() { t.Logf("slowest answer during 12 trickling uploads: %s", slowest) }()
		for range 3 {
			start := time.Now()
			resp, err := http.Get(base + "/healthz")
			if err != nil || resp.StatusCode != 200 || time.Since(start) > 2*time.Second {
				t.Fatalf("/healthz during 12 trickling uploads: %v %v after %s", resp, err, time.Since(start))
			}
			resp.Body.Close()
			slowest = max(slowest, time.Since(start))
			start = time.Now()
			if _, err := c.ListDeviceTypes(ctx); err != nil || time.Since(start) > 2*time.Second {
				t.Fatalf("GET /api/v1/devicetypes during 12 trickling uploads: %v after %s", err, time.Since(start))
			}
			// A wrong secret would count toward the throttle of dev-1, which the test above filled.
			slowest = max(slowest, time.Since(start))
			code, took := token("dev-unknown-"+strconv.Itoa(int(start.UnixNano())), "secretfordevice1")
			if code != 401 || took > 2*time.Second {
				t.Fatalf("token request during 12 trickling uploads = %d after %s", code, took)
			}
			slowest = max(slowest, took)
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("huge-invalid-field-gets-a-small-answer", func(t *testing.T) {
		body := strings.Repeat("x", 5<<20) + ", secretforhuge,\n"
		req, _ := http.NewRequest("PUT", base+"/api/v1/devicetypes/"+dt.ID+"/device_ids", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+acme.APIKey)
		req.Header.Set("Content-Type", "text/csv")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("a 5 MB invalid device ID: %d with a %d-byte answer", resp.StatusCode, len(answer))
		if resp.StatusCode != 422 || len(answer) > 4096 {
			t.Fatalf("a 5 MB invalid device ID = %d with a %d-byte answer; want 422 and a small answer", resp.StatusCode, len(answer))
		}
	})
}
