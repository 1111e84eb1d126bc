// Command devreg is the device registration service and its command line: "devreg serve" runs
// the service; the other subcommands create accounts and, for factory lines, talk to a server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"devreg"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	os.Exit(m.Run(ctx, os.Args[1:]))
}

// Main is the devreg program, with its surroundings made explicit for tests.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

// Exit codes.
const (
	exitOK      = 0
	exitRefused = 1 // the work failed or was refused
	exitUsage   = 2 // the command line was wrong
)

// usageError marks an error in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `devreg registers connected devices before they ship.

Usage:
  devreg serve [flags]              run the service (API, docs, console)
  devreg accounts create [flags]    create an account, its owner and a first admin API key
  devreg device connect [flags]     act as a device: get a token and check in (end-of-line test)

Run "devreg COMMAND -h" for a command's flags.
`

// Run runs the command line args and returns the exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	err := m.run(ctx, args)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(m.Stderr, "devreg: %s\n", ue.msg)
		return exitUsage
	default:
		fmt.Fprintf(m.Stderr, "devreg: %s\n", devreg.ErrorMessageOrText(err))
		return exitRefused
	}
}

func (m *Main) run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(m.Stderr, usage)
		return usageError{"no command given"}
	}
	switch cmd, rest := args[0], args[1:]; {
	case cmd == "serve":
		return m.serve(ctx, rest)
	case cmd == "accounts" && len(rest) > 0 && rest[0] == "create":
		return m.createAccount(ctx, rest[1:])
	case cmd == "device" && len(rest) > 0 && rest[0] == "connect":
		return m.deviceConnect(ctx, rest[1:])
	case cmd == "-h" || cmd == "--help" || cmd == "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	default:
		fmt.Fprint(m.Stderr, usage)
		return usageError{fmt.Sprintf("unknown command %q", strings.Join(args[:min(2, len(args))], " "))}
	}
}

// flagSet returns a FlagSet that reports errors as usage errors.
func (m *Main) flagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(m.Stderr, "Usage: devreg %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

// env returns the environment variable name, or def when it is unset.
func (m *Main) env(name, def string) string {
	if v := m.Getenv(name); v != "" {
		return v
	}
	return def
}

// parseSize reads a size such as 1GiB, 512MiB, 100MB or 1048576.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q is not a size such as 1GiB, 512MiB or 1000000", s)
	}
	return int64(n * float64(mult)), nil
}
