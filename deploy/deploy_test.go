// Package deploy holds devreg's deployment files: the systemd unit, the container image's
// Dockerfile, a compose file with PostgreSQL and a Grafana dashboard. Its tests check them where
// no container engine runs: the binary, built as the Dockerfile builds it, runs as the image runs
// it, and the unit passes systemd-analyze verify.
package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// imageUID is the distroless image's non-root user, the one the Dockerfile runs devreg as.
const imageUID = 65532

// TestBinaryRunsAsTheImageRunsIt builds devreg as the Dockerfile does (CGO_ENABLED=0), checks
// that the binary is static (distroless/static has no C library), and runs it as the image does:
// as the unprivileged user 65532, with DEVREG_DATA its only writable folder, HOME and TMPDIR
// pointing nowhere, in the root directory. It must serve /readyz and create an account, and
// afterwards nothing of that user's may exist outside the data folder in the places it could
// have written (/tmp, /var/tmp, /dev/shm).
func TestBinaryRunsAsTheImageRunsIt(t *testing.T) {
	docker, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0 go build", "FROM gcr.io/distroless/static", "USER 65532:65532", "VOLUME /data", "DEVREG_DATA=/data",
		"--chown=65532:65532 /out/data /data"} {
		if !bytes.Contains(docker, []byte(want)) {
			t.Errorf("the Dockerfile lacks %q, which this test assumes", want)
		}
	}
	if os.Getuid() != 0 {
		skipUnlessRequired(t, "running the binary as another user needs root; this test runs as root in CI")
	}
	root, err := os.MkdirTemp("", "devreg-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "devreg")
	build := exec.Command("go", "build", "-o", bin, "../cmd/devreg")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v): it would not start on distroless/static", p.Type)
		}
	}
	f.Close()
	data := filepath.Join(root, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(data, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := []string{"DEVREG_DATA=" + data, "DEVREG_ADDR=" + addr, "HOME=/nonexistent", "TMPDIR=/nonexistent", "PATH=/usr/bin:/bin"}
	asImage := func(ctx context.Context, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env, cmd.Dir = env, "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID}}
		return cmd
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := asImage(ctx, "serve")
	var log bytes.Buffer
	serve.Stdout, serve.Stderr = &log, &log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	// Wait for it to listen: until it answers, or exits.
	for ready := false; !ready; {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("devreg serve exited (%v):\n%s", err, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET /readyz = %d; want 200\n%s", resp.StatusCode, log.String())
			}
			ready = true
		}
	}
	create := asImage(ctx, "accounts", "create", "--name", "Image Co", "--email", "owner@image.example", "--password-stdin")
	create.Stdin = strings.NewReader("a long password for the image\n")
	if out, err := create.CombinedOutput(); err != nil || !bytes.Contains(out, []byte(`"api_key"`)) {
		t.Fatalf("accounts create as the image's user: %v\n%s", err, out)
	}
	for _, dir := range []string{"/tmp", "/var/tmp", "/dev/shm"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid == imageUID && !strings.HasPrefix(data, filepath.Join(dir, e.Name())) {
				t.Errorf("devreg wrote %s outside its data folder", filepath.Join(dir, e.Name()))
			}
		}
	}
	var wrote []string
	filepath.WalkDir(data, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != data {
			wrote = append(wrote, strings.TrimPrefix(p, data+"/"))
		}
		return nil
	})
	if !strings.Contains(strings.Join(wrote, " "), "devreg.db") || !strings.Contains(strings.Join(wrote, " "), "secret.keys") {
		t.Errorf("the data folder holds %v; want the database and the keys", wrote)
	}
}

// TestSystemdUnit checks the unit with systemd-analyze verify (its ExecStart pointed at a binary
// that exists) and that it keeps the hardening the README promises.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("devreg.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=devreg", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
		"CapabilityBoundingSet=\n", "ProtectHome=yes", "DEVREG_DATA=/var/lib/devreg"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("devreg.service lacks %q", want)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipUnlessRequired(t, "systemd-analyze is not installed (apt-get install -y systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "devreg")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit = regexp.MustCompile(`/usr/local/bin/devreg`).ReplaceAll(unit, []byte(bin))
	path := filepath.Join(dir, "devreg.service")
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	// Lines about other units of the machine are not this unit's problems.
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "devreg.service") {
			problems = append(problems, line)
		}
	}
	if err != nil || len(problems) > 0 {
		t.Errorf("systemd-analyze verify devreg.service: %v\n%s", err, out)
	}
}

// skipUnlessRequired skips the test for why, except where every test must run (DEVREG_REQUIRE_ALL,
// set by .ci/run): there it fails.
func skipUnlessRequired(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("DEVREG_REQUIRE_ALL") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}
