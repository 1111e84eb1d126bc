package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg/bulkfile"
	"devreg/credential"
	"devreg/internal/dpstest"
	"devreg/internal/pgtest"
)

// writeGroupKey writes a group key file as a factory would keep it and returns its path.
func writeGroupKey(t *testing.T, dir, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, "group.key")
	os.Remove(path)
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

// parseBulk reads derive's output with the parser the server uses for uploads.
func parseBulk(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	r := bulkfile.NewReader(strings.NewReader(out))
	for {
		e, err := r.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil || e.Problem != "" {
			t.Fatalf("derive's output does not parse as a bulk upload file: entry %+v, %v\n%s", e, err, out)
		}
		if _, dup := got[e.DeviceID]; dup {
			t.Fatalf("derive's output lists %q twice", e.DeviceID)
		}
		got[e.DeviceID] = e.Secret
	}
}

// TestEnrollmentDerive runs "devreg enrollment derive" as a factory line would: IDs from the
// command line, from a file and from stdin, every secret equal to what Azure's documented
// openssl pipeline derives, in a file the upload parser reads as it is.
func TestEnrollmentDerive(t *testing.T) {
	dir := t.TempDir()
	raw, encoded := credential.NewGroupKey()
	keyFile := writeGroupKey(t, dir, encoded+"\n", 0o600)
	c := cli{dir: dir}
	ids := []string{"T1-00A1B2C3D4E5", "AA:BB:CC:DD:EE:FF", "9.a_b-c:d", "x", strings.Repeat("Z", 128)}
	want := map[string]string{}
	for _, id := range ids {
		want[id] = dpstest.OpenSSL(t, encoded, id)
	}

	code, fromArgs, errOut := c.run(t, "", append([]string{"enrollment", "derive", "--group-key-file", keyFile}, ids...)...)
	if code != 0 || errOut != "" {
		t.Fatalf("derive with IDs as arguments = %d, stderr %q", code, errOut)
	}
	if diff := cmp.Diff(want, parseBulk(t, fromArgs)); diff != "" {
		t.Errorf("derived secrets differ from the openssl pipeline's (-openssl +devreg):\n%s", diff)
	}
	lines := strings.Split(strings.TrimSuffix(fromArgs, "\n"), "\n")
	if len(lines) != len(ids) || lines[0] != ids[0]+", "+want[ids[0]]+"," {
		t.Errorf("output lines %q: want one \"id, secret,\" pair a line, in the order given", lines)
	}
	for id, secret := range want {
		if credential.DeriveSecret(raw, id) != secret {
			t.Errorf("credential.DeriveSecret(%q) differs from the openssl pipeline", id)
		}
	}

	list := "\ufeff# lot 42, line 3\r\n" + ids[0] + "\r\n\r\n   " + ids[1] + "  \n\t# a comment\n" + strings.Join(ids[2:], "\n")
	listFile := filepath.Join(dir, "ids.txt")
	os.WriteFile(listFile, []byte(list), 0o644)
	t.Run("from-file", func(t *testing.T) {
		code, out, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", keyFile, "--from", listFile)
		if code != 0 || out != fromArgs {
			t.Errorf("derive --from FILE = %d, stderr %q, output:\n%s\nwant the same as with arguments:\n%s", code, errOut, out, fromArgs)
		}
	})
	t.Run("from-stdin", func(t *testing.T) {
		code, out, errOut := c.run(t, list, "enrollment", "derive", "--group-key-file", keyFile, "--from", "-")
		if code != 0 || out != fromArgs {
			t.Errorf("derive --from - = %d, stderr %q, output:\n%s", code, errOut, out)
		}
	})
	t.Run("output-file", func(t *testing.T) {
		path := filepath.Join(dir, "lot.csv")
		code, out, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", keyFile, "-o", path, "--from", listFile)
		data, _ := os.ReadFile(path)
		fi, err := os.Stat(path)
		if code != 0 || out != "" || string(data) != fromArgs || err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("derive -o = %d, stdout %q, stderr %q; file mode %v (%v), content:\n%s", code, out, errOut, fi.Mode().Perm(), err, data)
		}
		if code, _, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", keyFile, "-o", path, "x"); code != 1 || !strings.Contains(errOut, "must not exist yet") {
			t.Errorf("derive -o over an existing file = %d %q, want a refusal", code, errOut)
		}
		if again, _ := os.ReadFile(path); string(again) != fromArgs {
			t.Error("a refused derive -o changed the existing file")
		}
	})
	t.Run("never-connects", func(t *testing.T) {
		// A server the command could have been pointed at: nothing may arrive there.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		env := cli{dir: dir, env: []string{"DEVREG_SERVER=http://" + ln.Addr().String(), "DEVREG_API_KEY="}}
		if code, out, errOut := env.run(t, "", "enrollment", "derive", "--group-key-file", keyFile, ids[0]); code != 0 || out == "" {
			t.Fatalf("derive without an API key = %d %q", code, errOut)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(200 * time.Millisecond))
		if conn, err := ln.Accept(); err == nil {
			conn.Close()
			t.Error("derive connected to DEVREG_SERVER")
		}
	})
}

// TestEnrollmentDeriveBadIDs: every bad line is reported with its number, and nothing is printed,
// so that a half-derived lot never reaches the flashing station.
func TestEnrollmentDeriveBadIDs(t *testing.T) {
	dir := t.TempDir()
	_, encoded := credential.NewGroupKey()
	keyFile := writeGroupKey(t, dir, encoded, 0o600)
	c := cli{dir: dir}
	list := strings.Join([]string{
		"# lot 43",               // 1
		"T1-0001",                // 2
		"T1 0002",                // 3
		"",                       // 4
		"T1-0003",                // 5
		"_T1-0004",               // 6
		"T1-0001",                // 7
		"T1-dévice",              // 8
		strings.Repeat("a", 129), // 9
		"T1/0005",                // 10
		"T1-0006",                // 11
	}, "\n") + "\n"
	listFile := filepath.Join(dir, "ids.txt")
	os.WriteFile(listFile, []byte(list), 0o644)
	wantLines := map[string]string{
		"3":  "device ID contains a space",
		"6":  "device ID starts with '_'",
		"7":  "device ID is listed more than once; first on line 2",
		"8":  "device ID contains the non-ASCII character 'é'",
		"9":  "device ID is 129 characters long",
		"10": "device ID contains '/'",
	}
	for _, from := range []string{listFile, "-"} {
		t.Run("from-"+map[bool]string{true: "stdin", false: "file"}[from == "-"], func(t *testing.T) {
			code, out, errOut := c.run(t, list, "enrollment", "derive", "--group-key-file", keyFile, "--from", from)
			if code != 1 || out != "" {
				t.Fatalf("derive with bad IDs = %d, stdout %q; want 1 and nothing on stdout", code, out)
			}
			reported := map[string]string{}
			for _, l := range strings.Split(errOut, "\n")[1:] {
				if f := strings.Fields(l); len(f) > 1 && f[0] != "devreg:" {
					reported[f[0]] = l
				}
			}
			for line, problem := range wantLines {
				if !strings.Contains(reported[line], problem) {
					t.Errorf("line %s: reported %q, want %q", line, reported[line], problem)
				}
			}
			if len(reported) != len(wantLines) || !strings.HasPrefix(errOut, "LINE") ||
				!strings.Contains(errOut, "devreg: 6 of 9 device IDs are invalid or repeated; nothing was derived") {
				t.Errorf("stderr:\n%s\nwant exactly lines %v reported, and a summary", errOut, wantLines)
			}
		})
	}
	t.Run("arguments", func(t *testing.T) {
		code, out, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", keyFile, "ok-1", "bad id", "ok-1")
		if code != 1 || out != "" || !strings.HasPrefix(errOut, "ARGUMENT") ||
			!regexp.MustCompile(`(?m)^2 +"bad id" +device ID contains a space$`).MatchString(errOut) ||
			!strings.Contains(errOut, "device ID is listed more than once; first on argument 1") {
			t.Errorf("derive with bad arguments = %d, stdout %q, stderr:\n%s", code, out, errOut)
		}
	})
	t.Run("only-comments", func(t *testing.T) {
		code, out, errOut := c.run(t, "# nothing yet\n\n", "enrollment", "derive", "--group-key-file", keyFile, "--from", "-")
		if code != 1 || out != "" || !strings.Contains(errOut, "stdin holds no device IDs") {
			t.Errorf("derive from a list without IDs = %d %q %q", code, out, errOut)
		}
	})
	t.Run("endless-line", func(t *testing.T) {
		code, out, errOut := c.run(t, "ok-1\n"+strings.Repeat("a", 100<<10)+"\n", "enrollment", "derive", "--group-key-file", keyFile, "--from", "-")
		if code != 1 || out != "" || !strings.Contains(errOut, "stdin, line 2: the line is longer than 65536 bytes") {
			t.Errorf("derive with a 100 KiB line = %d %q %q", code, out, errOut)
		}
	})
}

// TestEnrollmentDeriveKeyFile: a key file that is not a group key, or that others may read, is
// refused with what is wrong and what to do, and the key never appears in the message.
func TestEnrollmentDeriveKeyFile(t *testing.T) {
	dir := t.TempDir()
	raw, encoded := credential.NewGroupKey()
	c := cli{dir: dir}
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"world-readable", encoded, 0o644, "is readable by others (mode 0644); run: chmod 600 "},
		{"group-readable", encoded, 0o640, "is readable by others (mode 0640); run: chmod 600 "},
		{"16-bytes", base64.StdEncoding.EncodeToString(raw[:16]), 0o600, "group key holds 16 bytes; a group key holds 32"},
		{"not-base64", "this is not a key at all!", 0o600, "group key is not standard base64"},
		{"url-safe", base64.URLEncoding.EncodeToString(append([]byte{0xfb, 0xff}, raw[2:]...)), 0o600, "URL-safe base64"},
		{"empty", "\n", 0o600, "group key is empty"},
		{"json", `{"id": "eg_1", "group_key": "` + encoded + `"}`, 0o600, "group key is not standard base64"},
		{"huge", strings.Repeat(encoded+"\n", 100), 0o600, "is larger than 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeGroupKey(t, dir, tt.content, tt.mode)
			code, out, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", path, "dev-1")
			if code != 1 || out != "" || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, path) {
				t.Errorf("derive = %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, tt.want)
			}
			if strings.Contains(errOut, encoded[:12]) {
				t.Errorf("the error shows the key: %q", errOut)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		code, _, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", filepath.Join(dir, "nope.key"), "dev-1")
		if code != 1 || !strings.Contains(errOut, "nope.key: no such file") {
			t.Errorf("derive with a missing key file = %d %q", code, errOut)
		}
	})
	t.Run("directory", func(t *testing.T) {
		sub := filepath.Join(dir, "keys")
		os.Mkdir(sub, 0o700)
		code, _, errOut := c.run(t, "", "enrollment", "derive", "--group-key-file", sub, "dev-1")
		if code != 1 || !strings.Contains(errOut, "is not a regular file") {
			t.Errorf("derive with a directory as key file = %d %q", code, errOut)
		}
	})
	t.Run("usage", func(t *testing.T) {
		path := writeGroupKey(t, dir, encoded, 0o600)
		for _, args := range [][]string{
			{"dev-1"},
			{"--group-key-file", path},
			{"--group-key-file", path, "--from", "-", "dev-1"},
			{"--group-key-file", path, "dev-1", "--from", "ids.txt"},
		} {
			if code, out, errOut := c.run(t, "", append([]string{"enrollment", "derive"}, args...)...); code != 2 || out != "" || errOut == "" {
				t.Errorf("derive %q = %d, stdout %q, stderr %q; want 2 with a message", args, code, out, errOut)
			}
		}
		if code, _, errOut := c.run(t, "", "enrollment", "derive", "-h"); code != 0 || !strings.Contains(errOut, "Example:\n  devreg enrollment derive --group-key-file") {
			t.Errorf("derive -h = %d %q", code, errOut)
		}
		if code, out, _ := c.run(t, "", "completion", "bash"); code != 0 || !strings.Contains(out, `enrollment) COMPREPLY=($(compgen -W "derive"`) {
			t.Errorf("completion bash does not offer enrollment derive")
		}
		if code, out, _ := c.run(t, "", "--help"); code != 0 || !strings.Contains(out, "devreg enrollment derive [flags]") {
			t.Errorf("--help does not list enrollment derive")
		}
	})
}

// TestEnrollmentDeriveImports: what derive prints is a bulk upload file the server registers as
// it is, under a device type that demands long secrets, on each database.
func TestEnrollmentDeriveImports(t *testing.T) {
	pgtest.Each(t, func(t *testing.T, url string) { testEnrollmentDeriveImports(t, "--database", url) })
}

func testEnrollmentDeriveImports(t *testing.T, dbArgs ...string) {
	dir := t.TempDir()
	acme := createAccount(t, dir, "Acme", "ops@acme.test", dbArgs...)
	url, _ := serve(t, dir, dbArgs...)
	c := cli{dir: dir, env: []string{"DEVREG_SERVER=" + url, "DEVREG_API_KEY=" + acme.APIKey}}
	code, out, errOut := c.run(t, "", "devicetypes", "create", "--name", "Zero-touch T1", "--min-secret-length", "32")
	var dt struct{ ID string }
	if code != 0 || json.Unmarshal([]byte(out), &dt) != nil || dt.ID == "" {
		t.Fatalf("devicetypes create = %d %s %s", code, out, errOut)
	}
	_, encoded := credential.NewGroupKey()
	keyFile := writeGroupKey(t, dir, encoded+"\n", 0o600)
	var ids strings.Builder
	for i := range 300 {
		fmt.Fprintf(&ids, "T1-00A1B2%06X\n", i)
	}
	// Derived twice, the same lot: the second import finds every device unchanged.
	for i, want := range []string{`"created": 300`, `"unchanged": 300`} {
		lot := filepath.Join(dir, fmt.Sprintf("lot-%d.csv", i))
		if code, _, errOut := c.run(t, ids.String(), "enrollment", "derive", "--group-key-file", keyFile, "--from", "-", "-o", lot); code != 0 {
			t.Fatalf("derive = %d %s", code, errOut)
		}
		if code, out, errOut := c.run(t, "", "devices", "import", "--device-type", dt.ID, lot); code != 0 || !strings.Contains(out, want) {
			t.Errorf("devices import of derive's output = %d, want %s:\n%s%s", code, want, out, errOut)
		}
	}
}
