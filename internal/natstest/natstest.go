// Package natstest starts a private nats-server with JetStream (-js) for tests and benchmarks:
// its own port on 127.0.0.1 and its own store folder, which outlives a restart. The system's
// server, if any, is never touched. Where nats-server cannot run, Start says so and New fails the
// test: it never skips.
package natstest

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"
)

// Server is a private nats-server -js.
type Server struct {
	bin   string
	port  int
	store string
	cmd   *exec.Cmd
}

// Start starts a nats-server -js that keeps its JetStream store in the folder store.
func Start(store string) (*Server, error) {
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nats-server"); err != nil {
			return nil, fmt.Errorf("nats-server is needed (apt-get install -y nats-server): %w", err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &Server{bin: bin, port: port, store: store}
	return s, s.Restart()
}

// New starts a server for the test, stopped when it ends.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Restart starts the stopped server again, on its port and with its store, and waits until it
// takes connections.
func (s *Server) Restart() error {
	s.cmd = exec.Command(s.bin, "-js", "-a", "127.0.0.1", "-p", fmt.Sprint(s.port), "-sd", s.store)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			return nil
		}
	}
	s.Stop()
	return errors.New("nats-server did not start in 10s")
}

// Stop kills the server (as a crash would); Restart brings it back.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}
