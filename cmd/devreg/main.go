// Command devreg is the device registration service and its command line: "devreg serve" runs
// the service; the other subcommands create accounts and, for factory lines, talk to a server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
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
	DiskFree       func(dir string) (int64, error) // the room restore reads; nil reads the file system
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
  devreg serve [flags]                 run the service (API, console, docs, device endpoints)
  devreg accounts create [flags]       create an account, its owner and a first admin API key
  devreg users add|list|set-role|remove [flags]  manage an account's console users (offline, on --data)
  devreg users reset-password [flags]  set a user's password from stdin (a locked-out owner's way back)
  devreg audit verify [flags]          check every account's audit chain (and heads kept elsewhere)
  devreg backup --to FILE [flags]      write a checked copy of the embedded database while it serves
  devreg restore --from FILE [flags]   put a backup in place of the embedded database (server stopped)
  devreg check [flags]                 check that counters, hash keys, audit chains and schema add up

For factory lines (talk to a running server: --server / DEVREG_SERVER, --api-key / DEVREG_API_KEY):
  devreg devicetypes create [flags]    define a device type
  devreg devicetypes list [--json]     list device types
  devreg devices generate [flags]      make device IDs and strong secrets in the bulk upload format
  devreg devices import [flags] FILE   register a bulk upload file (- for stdin)
  devreg devices list [flags]          list devices
  devreg devices export [flags]        write devices as CSV (never secrets)
  devreg batches list [flags]          list batches (lots), newest first
  devreg batches disable|enable ID     stop or let again a whole lot's devices authenticate
  devreg batches delete [--yes] ID     delete a lot with all its devices (asks first)
  devreg device connect [flags]        act as a device: get a token and check in (end-of-line test)
  devreg credentials revoke [flags]    revoke the credentials a device or a batch's devices made themselves
  devreg enrollment derive [flags]     derive devices' secrets from a group key, offline, in the bulk upload format

  devreg completion bash               print a bash completion script
  devreg --version                     print the version

Run "devreg COMMAND -h" for a command's flags and an example. Exit codes: 0 ok, 1 failed or
refused, 2 wrong usage.
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
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(m.Stderr, "devreg: interrupted")
		return exitRefused
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
	if args[0] == "serve" {
		return m.serve(ctx, args[1:])
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	case "-version", "--version", "version":
		fmt.Fprintf(m.Stdout, "devreg %s\n", version())
		return nil
	}
	if cmd, ok := subcommands[args[0]]; ok {
		return cmd(m, ctx, args[1:])
	}
	if len(args) >= 2 {
		if cmd, ok := subcommands[args[0]+" "+args[1]]; ok {
			return cmd(m, ctx, args[2:])
		}
	}
	if lines := groupUsage(args[0]); lines != "" {
		// "devreg devices" alone, or with a command it does not have: its commands.
		fmt.Fprintf(m.Stderr, "Commands of devreg %s:\n%s\nRun \"devreg %s COMMAND -h\" for a command's flags and an example.\n", args[0], lines, args[0])
		if len(args) == 1 {
			return usageError{fmt.Sprintf("devreg %s needs a command", args[0])}
		}
		return usageError{fmt.Sprintf("devreg %s has no command %q", args[0], args[1])}
	}
	fmt.Fprint(m.Stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", strings.Join(args[:min(2, len(args))], " "))}
}

// groupUsage returns the usage lines of the two-word commands whose first word is group, or ""
// if there are none.
func groupUsage(group string) string {
	var b strings.Builder
	for _, line := range strings.Split(usage, "\n") {
		if strings.HasPrefix(line, "  devreg "+group+" ") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// subcommands are the commands besides serve: two words, or one.
var subcommands = map[string]func(m *Main, ctx context.Context, args []string) error{
	"backup":               (*Main).backup,
	"restore":              (*Main).restore,
	"check":                (*Main).check,
	"accounts create":      (*Main).createAccount,
	"users add":            (*Main).usersAdd,
	"users list":           (*Main).usersList,
	"users set-role":       (*Main).usersSetRole,
	"users remove":         (*Main).usersRemove,
	"users reset-password": (*Main).usersResetPassword,
	"audit verify":         (*Main).auditVerify,
	"device connect":       (*Main).deviceConnect,
	"devicetypes create":   (*Main).deviceTypesCreate,
	"devicetypes list":     (*Main).deviceTypesList,
	"devices generate":     (*Main).devicesGenerate,
	"devices import":       (*Main).devicesImport,
	"devices list":         (*Main).devicesList,
	"devices export":       (*Main).devicesExport,
	"batches list":         (*Main).batchesList,
	"batches disable":      (*Main).batchesDisable,
	"batches enable":       (*Main).batchesEnable,
	"batches delete":       (*Main).batchesDelete,
	"completion bash":      (*Main).completionBash,
	"credentials revoke":   (*Main).credentialsRevoke,
	"enrollment derive":    (*Main).enrollmentDerive,
}

// version is the module version, or the VCS revision of a development build.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return "devel " + s.Value[:min(12, len(s.Value))]
		}
	}
	return "devel"
}

func (m *Main) completionBash(ctx context.Context, args []string) error {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(m.Stderr, "Usage: devreg completion bash\n\nPrints a bash completion script for devreg.\n\nExample:\n  source <(devreg completion bash)\n")
		return flag.ErrHelp
	}
	if len(args) > 0 {
		return usageError{"completion bash takes no arguments"}
	}
	fmt.Fprint(m.Stdout, `# bash completion for devreg; load with: source <(devreg completion bash)
_devreg() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  case $COMP_CWORD in
    1) COMPREPLY=($(compgen -W "serve accounts users audit backup restore check device devicetypes devices batches credentials enrollment completion --version --help" -- "$cur")) ;;
    2) case ${COMP_WORDS[1]} in
         accounts) COMPREPLY=($(compgen -W "create" -- "$cur")) ;;
         users) COMPREPLY=($(compgen -W "add list set-role remove reset-password" -- "$cur")) ;;
         audit) COMPREPLY=($(compgen -W "verify" -- "$cur")) ;;
         device) COMPREPLY=($(compgen -W "connect" -- "$cur")) ;;
         credentials) COMPREPLY=($(compgen -W "revoke" -- "$cur")) ;;
         enrollment) COMPREPLY=($(compgen -W "derive" -- "$cur")) ;;
         devicetypes) COMPREPLY=($(compgen -W "create list" -- "$cur")) ;;
         devices) COMPREPLY=($(compgen -W "generate import list export" -- "$cur")) ;;
         batches) COMPREPLY=($(compgen -W "list disable enable delete" -- "$cur")) ;;
         completion) COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
         *) COMPREPLY=($(compgen -f -- "$cur")) ;;
       esac ;;
    *) if [[ $cur == -* ]]; then
         COMPREPLY=($(compgen -W "$(devreg ${COMP_WORDS[1]} ${COMP_WORDS[2]} -h 2>&1 | grep -oE '^  -[a-z-]+' | sed 's/^  -/--/')" -- "$cur"))
       else
         COMPREPLY=($(compgen -f -- "$cur"))
       fi ;;
  esac
}
complete -F _devreg devreg
`)
	return nil
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
	bad := fmt.Errorf("size %q is not a size such as 1GiB, 512MiB or 1000000 (whole bytes, at least 1, at most 1TiB)", s)
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(strings.ToUpper(t), strings.ToUpper(u.suffix)) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	// Only plain decimals: ParseFloat alone would also take NaN, Inf, hex and exponents.
	whole, frac, _ := strings.Cut(t, ".")
	if whole == "" || strings.Trim(whole, "0123456789") != "" || strings.Trim(frac, "0123456789") != "" || len(whole) > 16 {
		return 0, bad
	}
	n, err := strconv.ParseFloat(t, 64)
	size := n * float64(mult)
	if err != nil || size < 1 || size > 1<<40 || size != math.Trunc(size) {
		return 0, bad
	}
	return int64(size), nil
}
