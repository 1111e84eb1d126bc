package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"time"
)

// The sampling of the block and mutex profiles while a debug listener is open: on average one
// blocking event per debugBlockRate nanoseconds spent blocked, and one in debugMutexFraction
// contended mutex events. Both cost time on every event they look at, so they are off unless
// someone asked for the profiles.
const (
	debugBlockRate     = 10_000
	debugMutexFraction = 10
)

// DebugServer serves the runtime profiles of net/http/pprof (CPU, heap, goroutines, block,
// mutex, execution trace) on a listener of its own, never the main one: they tell a lot about
// the process and cost CPU, so only those who can reach that address (loopback, normally) get
// them. It leaves out /debug/pprof/cmdline, whose arguments may hold a database password.
type DebugServer struct {
	ln   net.Listener
	http *http.Server
}

// ListenDebug starts serving the profiles at addr (host:port) and turns on the sampling of the
// block and mutex profiles until Close.
func ListenDebug(addr string, log *slog.Logger) (*DebugServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/debug/pprof/cmdline" {
			http.NotFound(w, r)
			return
		}
		pprof.Index(w, r) // the index, and every named profile: heap, goroutine, block, mutex, ...
	})
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	if log == nil {
		log = slog.Default()
	}
	d := &DebugServer{ln: ln, http: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	runtime.SetBlockProfileRate(debugBlockRate)
	runtime.SetMutexProfileFraction(debugMutexFraction)
	go func() {
		if err := d.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("debug listener stopped", "err", err)
		}
	}()
	return d, nil
}

// URL returns the address of the profiles' index.
func (d *DebugServer) URL() string { return "http://" + d.ln.Addr().String() + "/debug/pprof/" }

// Close stops serving the profiles, at once (a CPU profile being taken ends with it), and turns
// the block and mutex sampling off again.
func (d *DebugServer) Close() error {
	err := d.http.Close()
	runtime.SetBlockProfileRate(0)
	runtime.SetMutexProfileFraction(0)
	return err
}
