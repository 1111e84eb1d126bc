package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"devreg"
	"devreg/client"
	"devreg/credential"
)

// clientFlags adds --server and --api-key, with their environment fallbacks.
func (m *Main) clientFlags(fs *flag.FlagSet) (server, apiKey *string) {
	server = fs.String("server", m.env("DEVREG_SERVER", "http://localhost:8080"), "the devreg server's `URL` (env DEVREG_SERVER)")
	apiKey = fs.String("api-key", "", "API `key` (env DEVREG_API_KEY; prefer the variable: arguments show in process lists)")
	return server, apiKey
}

func (m *Main) newClient(server, apiKey string) (*client.Client, error) {
	if apiKey == "" {
		apiKey = m.Getenv("DEVREG_API_KEY")
	}
	if apiKey == "" {
		return nil, usageError{"no API key: set DEVREG_API_KEY or pass --api-key (create one in the console under API Keys)"}
	}
	c := client.New(server, apiKey)
	c.Retries = client.Retries{Max: maxRetries, Notify: func(wait time.Duration, retry int, _ *client.Error) {
		fmt.Fprintf(m.Stderr, "devreg: the server is rate-limiting this API key (HTTP 429); sending the request again in %s (retry %d of %d)\n",
			wait, retry, maxRetries)
	}}
	return c, nil
}

// maxRetries is how many times a command sends a request again that the server refused for the
// API key's rate limit (429); each waits as long as the server's Retry-After says, at most
// client.DefaultMaxWait. A refused request did nothing, so sending it again is safe.
const maxRetries = 5

// explain turns a client error into one sentence for the operator.
func explain(server string, err error) error {
	var ce *client.Error
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.As(err, &ce) && ce.Code == devreg.EKEYEXPIRED:
		return fmt.Errorf("the API key has expired (key_expired): %s", ce.Message)
	case errors.As(err, &ce) && ce.Status == 401:
		return fmt.Errorf("the server refused the API key: %s", ce.Message)
	case errors.As(err, &ce) && ce.Status == 403:
		return fmt.Errorf("the API key may not do this: %s", ce.Message)
	case errors.As(err, &ce) && ce.Status == 429:
		return fmt.Errorf("the server is rate-limiting this API key (HTTP 429; each server allows a key a number of requests a minute): %s", ce.Message)
	case errors.As(err, &ce):
		return errors.New(ce.Message)
	case errors.As(err, &ne), errors.As(err, &ue):
		return fmt.Errorf("cannot reach the devreg server at %s (is it running, and is --server right?): %v", server, rootCause(err))
	default:
		return err
	}
}

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

func (m *Main) printJSON(v any) error {
	enc := json.NewEncoder(m.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (m *Main) deviceTypesCreate(ctx context.Context, args []string) error {
	fs := m.flagSet("devicetypes create", "devicetypes create --name NAME [--description TEXT] [--min-secret-length N] [--rotation-grace D] [--max-rotations-per-hour N]\n\n"+
		"Defines a device type and prints it as JSON.\n\nExample:\n  devreg devicetypes create --name \"Thermostat T1\" --min-secret-length 16 --rotation-grace 72h")
	server, apiKey := m.clientFlags(fs)
	name := fs.String("name", "", "the device type's `name` (required, unique in the account)")
	desc := fs.String("description", "", "a `description`")
	minLen := fs.Int("min-secret-length", 0, "the shortest secret its devices may have (8 to 256; default 8)")
	// A flag.Value rather than fs.Duration: a sentinel default would show as a second "(default ...)".
	var grace optionalDuration
	fs.Var(&grace, "rotation-grace", "how long a secret a device rotates away from keeps working: a `duration` such as \"7 days\", \"36 hours\" or 72h, up to 30 days; 0 ends it at once (default 7 days)")
	rotations := fs.Int("max-rotations-per-hour", 0, "how many times a device may rotate its secret itself in an hour (1 to 1000; default 5)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usageError{"--name is required"}
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	in := client.DeviceTypeInput{Name: name, Description: desc}
	if *minLen != 0 {
		in.MinSecretLength = minLen
	}
	if grace.set {
		seconds := int(grace.d.Seconds())
		in.RotationGraceSeconds = &seconds
	}
	fs.Visit(func(f *flag.Flag) { // sent when given, so that a 0 is refused rather than taken for the default
		if f.Name == "max-rotations-per-hour" {
			in.MaxRotationsPerHour = rotations
		}
	})
	t, err := c.CreateDeviceType(ctx, in)
	if err != nil {
		return explain(*server, err)
	}
	return m.printJSON(t)
}

func (m *Main) deviceTypesList(ctx context.Context, args []string) error {
	fs := m.flagSet("devicetypes list", "devicetypes list [--json]\n\nLists the account's device types.\n\nExample:\n  devreg devicetypes list")
	server, apiKey := m.clientFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	types, err := c.ListDeviceTypes(ctx)
	if err != nil {
		return explain(*server, err)
	}
	if *asJSON {
		return m.printJSON(map[string]any{"device_types": types})
	}
	tw := tabwriter.NewWriter(m.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tMIN SECRET\tDEVICES\tCREATED")
	for _, t := range types {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.ID, t.Name, t.MinSecretLength, t.DeviceCount, t.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func (m *Main) devicesGenerate(ctx context.Context, args []string) error {
	fs := m.flagSet("devices generate", "devices generate --count N [--prefix PREFIX] [--start N] [--width W] [--secret-length L] [-o FILE]\n\n"+
		"Makes N device IDs (prefix and a zero-padded number) with strong random secrets, one\n"+
		"\"id, secret,\" pair a line: the bulk upload format, to flash into devices and to import.\n"+
		"Give --width so that every lot of a line numbers the same way (lot 1 of 1000 devices\n"+
		"and lot 2 of 100,000 both as 000001).\n\n"+
		"Example:\n  devreg devices generate --count 1000 --prefix T1-2026-11- --width 6 -o lot-0042.csv")
	count := fs.Int("count", 0, "how many devices (required)")
	prefix := fs.String("prefix", "device-", "the device ID `prefix`")
	start := fs.Int("start", 1, "the first sequence number")
	widthFlag := fs.Int("width", 0, "`digits` of the sequence number, zero-padded (1 to 18); 0 (the default) for as many as the largest number has")
	secretLen := fs.Int("secret-length", 24, "secret `length`, letters and digits from a cryptographic source")
	out := fs.String("o", "", "write to `FILE` (created with mode 0600, since it holds secrets) instead of stdout")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *count < 1 {
		return usageError{"--count must be at least 1"}
	}
	if *secretLen < credential.MinSecretLength || *secretLen > credential.MaxSecretLength {
		return usageError{fmt.Sprintf("--secret-length must be %d to %d", credential.MinSecretLength, credential.MaxSecretLength)}
	}
	if *start < 0 {
		return usageError{"--start must not be negative"}
	}
	width := len(strconv.Itoa(*start + *count - 1))
	if *widthFlag < 0 || *widthFlag > 18 {
		return usageError{"--width must be 1 to 18 digits, or 0 for as many as the largest number has"}
	}
	if *widthFlag > 0 && *widthFlag < width {
		return usageError{fmt.Sprintf("--width %d is too narrow: the last number, %d, has %d digits", *widthFlag, *start+*count-1, width)}
	}
	width = max(width, *widthFlag)
	if first := fmt.Sprintf("%s%0*d", *prefix, width, *start); credential.CheckDeviceID(first) != "" {
		return usageError{fmt.Sprintf("--prefix makes device IDs such as %q: %s", first, credential.CheckDeviceID(first))}
	}
	w, closeOut, err := m.secretsOutput(*out)
	if err != nil {
		return err
	}
	defer closeOut()
	bw := bufio.NewWriter(w)
	for i := range *count {
		fmt.Fprintf(bw, "%s%0*d, %s,\n", *prefix, width, *start+i, credential.RandomString(*secretLen))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if *out != "" {
		fmt.Fprintf(m.Stderr, "wrote %d devices to %s\n", *count, *out)
	}
	return ctx.Err()
}

func (m *Main) devicesImport(ctx context.Context, args []string) error {
	fs := m.flagSet("devices import", "devices import --device-type ID [--on-conflict fail|skip|replace [--credentials keep|reset]] [--dry-run] [--batch-name NAME] FILE\n\n"+
		"Streams a bulk upload file (- for stdin) to the server and prints the result as JSON. When\n"+
		"the server refuses the file, prints every problem it found and exits 1: nothing is registered.\n"+
		"When the API key's rate limit is used up (429), it waits as long as the server says and sends\n"+
		"the file again (at most 5 times); from stdin, which it cannot read twice, it says how long to wait.\n\n"+
		"Example:\n  devreg devices import --device-type dt_abc123 lot-0042.csv")
	server, apiKey := m.clientFlags(fs)
	typeID := fs.String("device-type", "", "the device type `ID` (required; see devreg devicetypes list)")
	onConflict := fs.String("on-conflict", "fail", "what to do with device IDs already registered differently: fail, skip or replace (admin keys only)")
	credentials := fs.String("credentials", "", "with --on-conflict replace: keep (default) or reset the credentials the replaced devices made themselves")
	dryRun := fs.Bool("dry-run", false, "check the file and count what it would do, registering nothing")
	batchName := fs.String("batch-name", "", "the `name` of the batch (lot) the file makes; default: the file's name without its folder, cut to 100 characters")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() != 1 {
		return usageError{"give exactly one FILE (or - for stdin)"}
	}
	if *batchName == "" && fs.Arg(0) != "-" {
		base := []rune(filepath.Base(fs.Arg(0)))
		*batchName = string(base[:min(len(base), devreg.MaxBatchName)])
	}
	if *typeID == "" {
		return usageError{"--device-type is required"}
	}
	oc := devreg.OnConflict(*onConflict)
	if !oc.Valid() {
		return usageError{"--on-conflict must be fail, skip or replace"}
	}
	if *credentials != "" && (!devreg.CredentialsOnReplace(*credentials).Valid() || oc != devreg.ConflictReplace) {
		return usageError{"--credentials takes keep or reset, with --on-conflict replace"}
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	name := fs.Arg(0)
	send := func() (devreg.RegisterResult, error) {
		var in io.Reader = m.Stdin
		var size int64 = -1
		if name != "-" {
			f, err := os.Open(name)
			if err != nil {
				// Said as what it is: explain would read a local file's error as the server's.
				return devreg.RegisterResult{}, refused{fmt.Sprintf("cannot read the bulk upload file %s: %v; nothing was sent to the server", name, rootCause(err))}
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil {
				size = fi.Size()
			}
			in = f
		}
		stopProgress := func() {}
		if f, ok := m.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			p := newProgress(in, size, m.Stderr)
			stopProgress, in = p.stop, p
		}
		defer stopProgress()
		return c.RegisterCSV(ctx, *typeID, in, client.RegisterOptions{OnConflict: oc, DryRun: *dryRun,
			Credentials: devreg.CredentialsOnReplace(*credentials), BatchName: *batchName})
	}
	// A registration is atomic and a resend is idempotent, so a file refused for the key's rate
	// limit is sent again whole; the client cannot do that itself, since it streams the file.
	retries := c.Retries
	retries.Notify = func(wait time.Duration, retry int, _ *client.Error) {
		fmt.Fprintf(m.Stderr, "devreg: the server is rate-limiting this API key (HTTP 429) and registered nothing; sending %s again in %s (retry %d of %d)\n",
			name, wait, retry, retries.Max)
	}
	res, err := send()
	for retry := 1; ; retry++ {
		wait, limited := client.RateLimited(err)
		if !limited {
			break
		}
		if name == "-" {
			return refused{fmt.Sprintf("the server is rate-limiting this API key (HTTP 429) and registered nothing; "+
				"the file came from stdin, which devreg cannot send again: try again in %d s (or import from a file, which devreg sends again by itself)",
				devreg.RetryAfterSeconds(wait))}
		}
		again, werr := retries.Wait(ctx, err, retry)
		if werr != nil {
			return werr
		}
		if !again {
			break
		}
		res, err = send()
	}
	var ce *client.Error
	if errors.As(err, &ce) && len(ce.Problems) > 0 {
		fmt.Fprintf(m.Stderr, "%s\n", ce.Message)
		tw := tabwriter.NewWriter(m.Stderr, 2, 4, 2, ' ', 0)
		if len(ce.Groups) > 0 && len(ce.Groups) < ce.ProblemCount {
			// Many problems of a few kinds: the kinds first, each once.
			fmt.Fprintln(tw, "COUNT\tPROBLEM\tWHERE")
			for _, g := range ce.Groups {
				fmt.Fprintf(tw, "%s ×\t%s\t%s\n", devreg.Thousands(int64(g.Count)), g.Message, g.Where())
			}
			fmt.Fprintln(tw)
		}
		// Entries and lines counted from 1, as in the console (the API's index counts from 0).
		fmt.Fprintln(tw, "ENTRY\tLINE\tDEVICE ID\tPROBLEM")
		for _, p := range ce.Problems {
			line := ""
			if p.Line > 0 {
				line = strconv.Itoa(p.Line)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.Index+1, line, p.DeviceID, p.Message)
		}
		tw.Flush()
		if ce.ProblemCount > len(ce.Problems) {
			fmt.Fprintf(m.Stderr, "(the first %d of %d problems)\n", len(ce.Problems), ce.ProblemCount)
		}
		return refused{"the server refused the file; nothing was registered"}
	}
	if err != nil {
		return explain(*server, err)
	}
	return m.printJSON(res)
}

// refused is a refusal already explained to the user in full.
// optionalDuration is a duration flag that knows whether it was given, and shows no default.
type optionalDuration struct {
	d   time.Duration
	set bool
}

func (o *optionalDuration) String() string {
	if o == nil || !o.set {
		return ""
	}
	return devreg.FormatDuration(o.d)
}

// Set takes a duration as devreg.ParseDuration reads it ("7 days", "72h"), not a negative one.
func (o *optionalDuration) Set(s string) error {
	d, err := devreg.ParseDuration(s)
	if err == nil && d < 0 {
		err = fmt.Errorf("%q is negative", s)
	}
	if err != nil {
		return err
	}
	o.d, o.set = d, true
	return nil
}

type refused struct{ msg string }

func (r refused) Error() string { return r.msg }

// eachDevice calls fn for every device that q selects, page by page.
func eachDevice(ctx context.Context, c *client.Client, q client.DeviceQuery, fn func(devreg.Device) error) error {
	q.Limit = devreg.MaxPageSize
	for {
		page, next, err := c.ListDevices(ctx, q)
		if err != nil {
			return err
		}
		for _, d := range page {
			if err := fn(d); err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		q.Cursor = next
	}
}

func formatTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (m *Main) devicesList(ctx context.Context, args []string) error {
	fs := m.flagSet("devices list", "devices list [--device-type ID] [--limit N [--cursor C]] [--json]\n\n"+
		"Lists devices in registration order, with their device type's name: every page, or with\n"+
		"--limit one page of at most N devices, and on stderr the command for the next.\n\n"+
		"Example:\n  devreg devices list --device-type dt_abc123 --limit 100")
	server, apiKey := m.clientFlags(fs)
	typeID := fs.String("device-type", "", "only devices of this device type `ID`")
	asJSON := fs.Bool("json", false, "print JSON lines, one device each, instead of a table")
	limit := fs.Int("limit", 0, fmt.Sprintf("list one page of at most `N` devices (1 to %d); 0 (the default) for every page", devreg.MaxPageSize))
	cursor := fs.String("cursor", "", "with --limit, the page to list: the `cursor` the previous page printed")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *limit < 0 || *limit > devreg.MaxPageSize {
		return usageError{fmt.Sprintf("--limit must be 1 to %d, or 0 for every page", devreg.MaxPageSize)}
	}
	if *cursor != "" && *limit == 0 {
		return usageError{"--cursor goes with --limit: give the page size too"}
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	typeNames := map[string]string{}
	if !*asJSON {
		types, err := c.ListDeviceTypes(ctx)
		if err != nil {
			return explain(*server, err)
		}
		for _, t := range types {
			typeNames[t.ID] = t.Name
		}
	}
	bw := bufio.NewWriter(m.Stdout)
	defer bw.Flush()
	var tw *tabwriter.Writer
	enc := json.NewEncoder(bw)
	if !*asJSON {
		tw = tabwriter.NewWriter(bw, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEVICE ID\tTYPE\tTYPE ID\tSTATUS\tBATCH\tCREATED\tLAST SEEN")
	}
	n := 0
	show := func(d devreg.Device) error {
		n++
		if *asJSON {
			return enc.Encode(d)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.DeviceID, typeNames[d.DeviceTypeID], d.DeviceTypeID, d.Status, d.BatchID,
			d.CreatedAt.Format(time.RFC3339), formatTime(d.LastSeenAt))
		if n%1000 == 0 {
			return tw.Flush()
		}
		return nil
	}
	q := client.DeviceQuery{DeviceTypeID: *typeID}
	next := ""
	if *limit > 0 {
		q.Limit, q.Cursor = *limit, *cursor
		var page []devreg.Device
		if page, next, err = c.ListDevices(ctx, q); err == nil {
			for _, d := range page {
				if err = show(d); err != nil {
					break
				}
			}
		}
	} else {
		err = eachDevice(ctx, c, q, show)
	}
	if tw != nil {
		tw.Flush()
	}
	if err != nil {
		return explain(*server, err)
	}
	if next != "" {
		bw.Flush()
		typeArg := ""
		if *typeID != "" {
			typeArg = " --device-type " + *typeID
		}
		fmt.Fprintf(m.Stderr, "next page: devreg devices list%s --limit %d --cursor %s\n", typeArg, *limit, next)
	}
	return nil
}

func (m *Main) devicesExport(ctx context.Context, args []string) error {
	fs := m.flagSet("devices export", "devices export [--device-type ID]\n\n"+
		"Writes the devices as CSV with a header row (never secrets), streamed through all pages.\n\n"+
		"Example:\n  devreg devices export --device-type dt_abc123 > thermostats.csv")
	server, apiKey := m.clientFlags(fs)
	typeID := fs.String("device-type", "", "only devices of this device type `ID`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	w := csv.NewWriter(m.Stdout)
	w.Write(devreg.DeviceExportColumns)
	err = eachDevice(ctx, c, client.DeviceQuery{DeviceTypeID: *typeID}, func(d devreg.Device) error {
		return w.Write(devreg.DeviceExportRecord(d))
	})
	w.Flush()
	if err != nil {
		return explain(*server, err)
	}
	return w.Error()
}

// progress reports an upload's progress on a terminal: bytes and lines sent, rate and time left.
type progress struct {
	r            io.Reader
	total        int64
	out          io.Writer
	sent, lines  atomic.Int64
	start        time.Time
	done, closed chan struct{}
}

func newProgress(r io.Reader, total int64, out io.Writer) *progress {
	p := &progress{r: r, total: total, out: out, start: time.Now(), done: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(p.closed)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.print(false)
			case <-p.done:
				p.print(true)
				return
			}
		}
	}()
	return p
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.sent.Add(int64(n))
	p.lines.Add(int64(bytes.Count(b[:n], []byte{'\n'})))
	return n, err
}

func (p *progress) print(final bool) {
	sent, lines := p.sent.Load(), p.lines.Load()
	elapsed := time.Since(p.start).Seconds()
	rate := float64(sent) / max(elapsed, 0.001)
	line := fmt.Sprintf("\rsent %.1f MB, %d lines, %.1f MB/s", float64(sent)/1e6, lines, rate/1e6)
	if p.total > 0 {
		left := time.Duration(float64(p.total-sent) / max(rate, 1) * float64(time.Second)).Round(time.Second)
		line = fmt.Sprintf("\r%3.0f%%  sent %.1f of %.1f MB, %d lines, %.1f MB/s, %s left", 100*float64(sent)/float64(p.total), float64(sent)/1e6, float64(p.total)/1e6, lines, rate/1e6, left)
		if sent >= p.total {
			line = fmt.Sprintf("\r100%%  sent %.1f MB, %d lines; the server is checking and registering...", float64(sent)/1e6, lines)
		}
	}
	if final {
		line = fmt.Sprintf("\rsent %.1f MB, %d lines; the server answered after %s", float64(sent)/1e6, lines, time.Since(p.start).Round(100*time.Millisecond))
	}
	fmt.Fprintf(p.out, "%-100s", line)
}

func (p *progress) stop() {
	close(p.done)
	<-p.closed
	fmt.Fprintln(p.out)
}

// secretsOutput is where a command that prints secrets writes them: stdout, or the file out,
// which it creates readable by its owner only and which must not exist yet (never a file, or a
// link, that something else put there).
func (m *Main) secretsOutput(out string) (io.Writer, func() error, error) {
	if out == "" {
		return m.Stdout, func() error { return nil }, nil
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w (it must not exist yet)", out, err)
	}
	return f, f.Close, nil
}
