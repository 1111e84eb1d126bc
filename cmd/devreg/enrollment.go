package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"devreg/credential"
)

// maxGroupKeyFile is the most a group key file may hold: one key of 44 characters and room for
// line breaks and spaces. A larger file is the wrong file, and is not read whole.
const maxGroupKeyFile = 1024

// maxIDLine is the longest line of an ID list that is read; a device ID has at most 128 characters.
const maxIDLine = 64 << 10

// keptIDBytes is how much of a line longer than any device ID readIDList keeps, for the report.
const keptIDBytes = 4 * credential.MaxDeviceIDLength

func (m *Main) enrollmentDerive(ctx context.Context, args []string) error {
	fs := m.flagSet("enrollment derive", "enrollment derive --group-key-file FILE [-o FILE] (ID... | --from FILE)\n\n"+
		"Derives the secret each device of an enrollment group presents at its first connection,\n"+
		"base64(HMAC-SHA256(group key, device ID)) - Azure DPS's derived device key - and prints one\n"+
		"\"id, secret,\" pair a line: the bulk upload format, to flash into devices (or to import).\n"+
		"It works offline and never connects to a server. Every device ID is checked first: if any is\n"+
		"invalid or repeated, each one is reported with its line and nothing is printed.\n\n"+
		"The key file holds the group key in base64, as the API showed it when the group was created,\n"+
		"and must be readable by its owner alone (chmod 600).\n\n"+
		"Example:\n"+
		"  devreg enrollment derive --group-key-file t1-group.key --from lot-0042-ids.txt -o lot-0042.csv\n"+
		"  devreg enrollment derive --group-key-file t1-group.key T1-00A1B2C3D4E5 T1-00A1B2C3D4E6")
	keyFile := fs.String("group-key-file", "", "`FILE` holding the group key in base64 (required; mode 0600)")
	from := fs.String("from", "", "read device IDs from `FILE`, one a line (- for stdin; blank lines and lines starting with # are skipped)")
	out := fs.String("o", "", "write to `FILE` (created with mode 0600, since it holds secrets) instead of stdout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	for _, a := range fs.Args() {
		if strings.HasPrefix(a, "-") { // no device ID starts with '-'
			return usageError{fmt.Sprintf("%s: flags go before the device IDs", a)}
		}
	}
	switch {
	case *keyFile == "":
		return usageError{"--group-key-file is required"}
	case *from != "" && fs.NArg() > 0:
		return usageError{"give device IDs as arguments or --from FILE, not both"}
	case *from == "" && fs.NArg() == 0:
		return usageError{"give device IDs as arguments, or --from FILE (- for stdin)"}
	}
	key, err := readGroupKeyFile(*keyFile)
	if err != nil {
		return err
	}

	var ids []listedID
	where := "argument"
	if *from != "" {
		where = "line"
		in, name := m.Stdin, "stdin"
		if *from != "-" {
			f, err := os.Open(*from)
			if err != nil {
				return err
			}
			defer f.Close()
			in, name = f, *from
		}
		if ids, err = readIDList(in, name); err != nil {
			return err
		}
		if len(ids) == 0 {
			return refused{fmt.Sprintf("%s holds no device IDs; nothing was derived", name)}
		}
	} else {
		for i, a := range fs.Args() {
			ids = append(ids, listedID{pos: i + 1, id: a})
		}
	}
	if n := checkIDs(ids, where); n > 0 {
		m.reportBadIDs(where, ids, base64.StdEncoding.EncodeToString(key))
		return refused{fmt.Sprintf("%d of %d device IDs are invalid or repeated; nothing was derived", n, len(ids))}
	}

	w, closeOut, err := m.secretsOutput(*out)
	if err != nil {
		return err
	}
	defer closeOut()
	bw := bufio.NewWriter(w)
	for i, e := range ids {
		if i%4096 == 0 && ctx.Err() != nil {
			break
		}
		fmt.Fprintf(bw, "%s, %s,\n", e.id, credential.DeriveSecret(key, e.id))
	}
	err = bw.Flush()
	if err == nil {
		err = ctx.Err()
	}
	if *out != "" {
		if err != nil {
			os.Remove(*out) // half a lot is worse than none: it would be flashed as if whole
			return err
		}
		fmt.Fprintf(m.Stderr, "wrote %d devices to %s\n", len(ids), *out)
	}
	return err
}

// readGroupKeyFile reads a group key file. Like ssh with a private key, it refuses a file that
// others may read: whoever reads the group key can make every device's secret.
func readGroupKeyFile(path string) ([]byte, error) {
	// Stat before opening: opening a FIFO for reading waits for a writer, so the command would
	// hang instead of saying that this is not a key file. The opened file is checked again.
	before, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("group key file: %w", err)
	}
	if !before.Mode().IsRegular() {
		return nil, fmt.Errorf("group key file %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("group key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("group key file: %w", err)
	}
	if !fi.Mode().IsRegular() || !os.SameFile(before, fi) {
		return nil, fmt.Errorf("group key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("group key file %s is readable by others (mode %04o); run: chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxGroupKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("group key file %s: %w", path, err)
	}
	if len(data) > maxGroupKeyFile {
		return nil, fmt.Errorf("group key file %s is larger than %d bytes; it should hold one group key of 44 base64 characters", path, maxGroupKeyFile)
	}
	key, err := credential.ParseGroupKey(string(data))
	if err != nil {
		return nil, fmt.Errorf("group key file %s: %w", path, err)
	}
	return key, nil
}

// listedID is a device ID at its place in the input: its line, or its argument's position.
type listedID struct {
	pos     int
	id      string
	problem string
}

// readIDList reads device IDs one a line, skipping blank lines and lines starting with '#'. Spaces
// around an ID and a byte order mark at the start (as spreadsheet programs write) are ignored.
func readIDList(r io.Reader, name string) ([]listedID, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxIDLine)
	var ids []listedID
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			text = strings.TrimPrefix(text, "\ufeff")
		}
		text = strings.TrimSpace(text)
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		e := listedID{pos: line, id: text}
		if len(text) > keptIDBytes {
			// Too long for a device ID, so refused; the report shows its start only, and a file
			// of long lines must not be held whole in memory.
			e.problem, e.id = credential.CheckDeviceID(text), strings.Clone(text[:keptIDBytes])
		}
		ids = append(ids, e)
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return nil, refused{fmt.Sprintf("%s, line %d: the line is longer than %d bytes; a device ID has at most %d characters", name, line+1, maxIDLine, credential.MaxDeviceIDLength)}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return ids, nil
}

// checkIDs sets the problem of every invalid or repeated device ID and returns how many there are;
// where says what an ID's position counts ("line" or "argument"). A repeated ID is refused, as a
// registration refuses it, so that the output imports as it is.
func checkIDs(ids []listedID, where string) int {
	bad := 0
	first := make(map[string]int, len(ids))
	for i := range ids {
		e := &ids[i]
		if e.problem != "" { // found while reading
			bad++
			continue
		}
		if e.problem = credential.CheckDeviceID(e.id); e.problem == "" {
			if p, ok := first[e.id]; ok {
				e.problem = fmt.Sprintf("device ID is listed more than once; first on %s %d", where, p)
			} else {
				first[e.id] = e.pos
			}
		}
		if e.problem != "" {
			bad++
		}
	}
	return bad
}

// reportBadIDs prints every refused device ID on stderr, with its place (where names it).
// keyText is the group key in base64, which the report does not show even in part.
func (m *Main) reportBadIDs(where string, ids []listedID, keyText string) {
	bw := bufio.NewWriter(m.Stderr)
	defer bw.Flush()
	tw := tabwriter.NewWriter(bw, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tDEVICE ID\tPROBLEM\n", strings.ToUpper(where))
	n := 0
	for _, e := range ids {
		if e.problem == "" {
			continue
		}
		id := e.id
		if len(id) > 40 {
			id = id[:40] + "..."
		}
		if showsKey(e.id, keyText) {
			// The key file given to --from as well, or the key pasted as an argument: the
			// report goes to stderr, often into a build log, and must not show the key.
			id = "(a group key, not shown)"
		} else {
			id = strconv.Quote(id)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strconv.Itoa(e.pos), id, e.problem)
		if n++; n%1000 == 0 {
			tw.Flush()
		}
	}
	tw.Flush()
}

// showsKey reports whether text holds a group key, or 12 characters in a row of keyText (9 bytes
// of the key), which the report of bad IDs must not show.
func showsKey(text, keyText string) bool {
	for _, w := range strings.Fields(strings.NewReplacer(`"`, " ", "'", " ", ",", " ", ";", " ", ":", " ").Replace(text)) {
		if _, err := credential.ParseGroupKey(w); err == nil {
			return true
		}
	}
	const window = 12
	for i := 0; i+window <= len(keyText); i++ {
		if strings.Contains(text, keyText[i:i+window]) {
			return true
		}
	}
	return false
}
