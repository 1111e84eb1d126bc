package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"devreg/credential"
)

// runWithin runs the devreg binary like cli.run, but kills it after d, failing the test: a
// command that waits forever is a finding of its own.
func runWithin(t *testing.T, d time.Duration, dir string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("devreg %s did not end within %v (stderr %q)", strings.Join(args, " "), d, stderr.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestAttack24DeriveKeyFileFIFO: a FIFO given as the group key file made derive open it for
// reading, which waits for a writer: the command hung instead of refusing. Fixed: the path is
// checked to be a regular file before it is opened (and the opened file is the one checked).
func TestAttack24DeriveKeyFileFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "group.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runWithin(t, 20*time.Second, dir, "enrollment", "derive", "--group-key-file", fifo, "T1-0001")
	if code == 0 || out != "" || !strings.Contains(errOut, "is not a regular file") {
		t.Errorf("derive with a FIFO as key file = %d, stdout %q, stderr %q; want a refusal saying it is not a regular file", code, out, errOut)
	}
}

// TestAttack24DeriveDoesNotEchoTheGroupKey: derive reports every bad device ID on stderr with its
// first 40 characters. Given the key file to --from as well (or the key pasted as an argument,
// or a key file of another group), it printed 40 of the key's 44 characters - 30 of its 32 bytes
// - into the terminal or the factory line's build log. Fixed: an entry that holds a group key,
// or 12 characters of the one in use, is reported without its text.
func TestAttack24DeriveDoesNotEchoTheGroupKey(t *testing.T) {
	dir := t.TempDir()
	_, encoded := credential.NewGroupKey()
	keyFile := writeGroupKey(t, dir, encoded+"\n", 0o600)
	_, otherKey := credential.NewGroupKey()
	ids := filepath.Join(dir, "ids.txt")
	if err := os.WriteFile(ids, []byte("T1-0001\n"+otherKey+"\nkey: "+encoded[:20]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--from", keyFile},
		{"--from", ids},
		{"T1-0001", encoded},
	} {
		code, out, errOut := runWithin(t, time.Minute, dir, append([]string{"enrollment", "derive", "--group-key-file", keyFile}, args...)...)
		if code == 0 || out != "" || !strings.Contains(errOut, "(a group key, not shown)") {
			t.Errorf("derive %v = %d, stdout %q, stderr %q; want the bad entries refused, without their text", args, code, out, errOut)
		}
		for _, key := range []string{encoded, otherKey} {
			for i := 0; i+12 <= len(key); i++ {
				if strings.Contains(errOut, key[i:i+12]) {
					t.Errorf("derive %v shows 12 characters of a group key on stderr: %q", args, errOut)
					break
				}
			}
		}
	}
}

// TestAttack24DeriveFileTricks: what held up. A symlink to a key file is followed and judged by
// the file's mode; /dev/stdin (a pipe here) is no key file; -o never writes through an existing
// symlink (to a file or dangling) nor over a file; IDs with CR line ends, a byte order mark and
// NUL are read or refused by line, the refused ones quoted.
func TestAttack24DeriveFileTricks(t *testing.T) {
	dir := t.TempDir()
	_, encoded := credential.NewGroupKey()
	keyFile := writeGroupKey(t, dir, encoded+"\n", 0o600)
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(keyFile, link); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runWithin(t, time.Minute, dir, "enrollment", "derive", "--group-key-file", link, "T1-0001"); code != 0 || !strings.HasPrefix(out, "T1-0001, ") {
		t.Errorf("derive through a symlink to a 0600 key file = %d %q %q", code, out, errOut)
	}
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte(encoded), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644)
	openLink := filepath.Join(dir, "open-link.key")
	os.Symlink(open, openLink)
	if code, out, errOut := runWithin(t, time.Minute, dir, "enrollment", "derive", "--group-key-file", openLink, "T1-0001"); code == 0 || out != "" || !strings.Contains(errOut, "readable by others") {
		t.Errorf("derive through a symlink to a 0644 key file = %d %q %q", code, out, errOut)
	}
	if code, out, errOut := runWithin(t, time.Minute, dir, "enrollment", "derive", "--group-key-file", "/dev/stdin", "T1-0001"); code == 0 || out != "" || !strings.Contains(errOut, "not a regular file") {
		t.Errorf("derive with /dev/stdin as key file = %d %q %q", code, out, errOut)
	}

	victim := filepath.Join(dir, "victim.csv")
	os.WriteFile(victim, []byte("precious\n"), 0o600)
	toVictim, dangling := filepath.Join(dir, "to-victim.csv"), filepath.Join(dir, "dangling.csv")
	os.Symlink(victim, toVictim)
	os.Symlink(filepath.Join(dir, "nowhere.csv"), dangling)
	for _, o := range []string{victim, toVictim, dangling} {
		if code, _, errOut := runWithin(t, time.Minute, dir, "enrollment", "derive", "--group-key-file", keyFile, "-o", o, "T1-0001"); code == 0 || !strings.Contains(errOut, "must not exist yet") {
			t.Errorf("derive -o %s = %d %q; want a refusal", filepath.Base(o), code, errOut)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious\n" {
		t.Errorf("derive -o wrote through a symlink: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere.csv")); err == nil {
		t.Errorf("derive -o created the target of a dangling symlink")
	}

	ids := filepath.Join(dir, "ids.txt")
	os.WriteFile(ids, []byte("\ufeffT1-0001\r\nT1-0002\r\nT1-\x000003\r\n\ufeffT1-0004\n"), 0o600)
	code, out, errOut := runWithin(t, time.Minute, dir, "enrollment", "derive", "--group-key-file", keyFile, "--from", ids)
	if code == 0 || out != "" || !strings.Contains(errOut, `"T1-\x000003"`) || !strings.Contains(errOut, `"\ufeffT1-0004"`) ||
		strings.Contains(errOut, "T1-0001") || strings.Contains(errOut, "T1-0002") {
		t.Errorf("derive of IDs with CR, BOM and NUL = %d, stdout %q, stderr %q; want lines 3 and 4 refused, quoted", code, out, errOut)
	}
}

// TestAttack24DeriveLongLinesAreNotKept: derive kept every line of --from whole until it had
// checked them all, so a file of long lines (each up to 64 KiB, none a device ID) was held in
// memory whole: 1.2 GB of them took 1.8 GB. Fixed: of a line longer than any device ID only the
// start is kept, for the report, which still says how long it was.
func TestAttack24DeriveLongLinesAreNotKept(t *testing.T) {
	const lines, long = 200, 60000
	var b strings.Builder
	for range lines {
		b.WriteString(strings.Repeat("x", long))
		b.WriteString("\n")
	}
	b.WriteString("T1-0001\n")
	ids, err := readIDList(strings.NewReader(b.String()), "ids.txt")
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, e := range ids {
		kept += len(e.id)
	}
	if len(ids) != lines+1 || kept > lines*4*credential.MaxDeviceIDLength+len("T1-0001") {
		t.Errorf("read %d entries keeping %d bytes of IDs; want %d entries and at most %d bytes", len(ids), kept, lines+1, lines*4*credential.MaxDeviceIDLength+7)
	}
	if n := checkIDs(ids, "line"); n != lines || !strings.Contains(ids[0].problem, "60000 characters long") || ids[lines].problem != "" {
		t.Errorf("%d bad IDs, the first %q, the last %q; want %d, saying how long the line was", n, ids[0].problem, ids[lines].problem, lines)
	}
}
