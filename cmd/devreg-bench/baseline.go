package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// smallestSQLite is the smallest table that still enforces devreg's rule: one device ID per
// account, with the secret's hash and the time it was created. The settings are those devreg's
// writer registers with: a write-ahead log, synchronous=NORMAL, a 32 MiB page cache (store.registerCacheSize), and no
// checkpoint until the writer is done.
const smallestSQLite = `PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
PRAGMA cache_size=-32768;
PRAGMA wal_autocheckpoint=0;
CREATE TABLE devices (account_num INTEGER NOT NULL, device_id TEXT NOT NULL, hash BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE UNIQUE INDEX devices_id ON devices (account_num, device_id);
`

// mark makes the sqlite3 shell print the time, in seconds since 1970 to the millisecond.
const mark = "SELECT 'mark', (julianday('now') - 2440587.5) * 86400.0;\n"

// imported is what importSmallest measured.
type imported struct {
	times  []time.Duration // of each file's .import
	toExit time.Duration   // from the shell's start to its end, with its checkpoint on closing
	rssMB  float64         // the sqlite3 shell's peak resident memory
}

// importSmallest times the sqlite3 shell's .import of each of the files, one after another, into
// the smallest table on a new database. The times run from just before each .import to just after
// its commit, as a registration's run from its request to its commit: neither includes copying
// the log into the database, which devreg leaves to a background checkpoint and the shell does on
// closing the database.
func importSmallest(dir string, paths []string) (imported, error) {
	return importInto(dir, smallestSQLite, paths)
}

// importInto is importSmallest into the table (devices) that schema makes.
func importInto(dir, schema string, paths []string) (imported, error) {
	db := filepath.Join(dir, "baseline.db")
	defer removeDB(db)
	var script strings.Builder
	script.WriteString(schema)
	rows := 0
	for _, p := range paths {
		script.WriteString(mark + ".import --csv " + p + " devices\n")
		n, err := countLines(p)
		if err != nil {
			return imported{}, err
		}
		rows += n
	}
	// The shell's parent is this process, whose memory Linux counts into the child's peak in
	// getrusage(2), so the shell reports its own.
	script.WriteString(mark + "SELECT 'count', count(*) FROM devices;\n.shell grep VmHWM /proc/$PPID/status\n")
	syscall.Sync()
	cmd := exec.Command("sqlite3", db)
	cmd.Stdin = strings.NewReader(script.String())
	start := time.Now()
	out, err := cmd.CombinedOutput()
	res := imported{toExit: time.Since(start)}
	if err != nil {
		return imported{}, fmt.Errorf("sqlite3 .import: %v %s", err, out)
	}
	var marks []float64
	count := -1
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "mark|"); ok {
			t, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return imported{}, fmt.Errorf("sqlite3 printed %q", line)
			}
			marks = append(marks, t)
		} else if v, ok := strings.CutPrefix(line, "count|"); ok {
			count, _ = strconv.Atoi(v)
		} else if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			res.rssMB = kb / 1024
		}
	}
	if count != rows || len(marks) != len(paths)+1 {
		return imported{}, fmt.Errorf("sqlite3 .import: imported %d rows of %d: %s", count, rows, out)
	}
	for i := range paths {
		res.times = append(res.times, time.Duration((marks[i+1]-marks[i])*float64(time.Second)))
	}
	return res, nil
}

// importOld times the sqlite3 shell, from its start to its end, importing the rows at path into a
// table keyed by account and device ID with indexes by type and by batch, as devreg's devices
// table was first laid out: the baseline before issue 17, measured as it was then.
func importOld(dir, path string, n int) (time.Duration, error) {
	db := filepath.Join(dir, "baseline-old.db")
	defer removeDB(db)
	script := `PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE devices (account_id TEXT NOT NULL, device_id TEXT NOT NULL, device_type_id TEXT NOT NULL, batch_id TEXT NOT NULL,
  status TEXT NOT NULL, key_id TEXT NOT NULL, secret_hash BLOB NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (account_id, device_id)) WITHOUT ROWID;
CREATE INDEX devices_type ON devices (account_id, device_type_id, device_id);
CREATE INDEX devices_batch ON devices (account_id, batch_id, device_id);
.mode csv
.import ` + path + ` devices
SELECT count(*) FROM devices;
`
	syscall.Sync()
	start := time.Now()
	cmd := exec.Command("sqlite3", db)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil || !bytes.Contains(out, []byte(strconv.Itoa(n))) {
		return 0, fmt.Errorf("sqlite3 .import: %v %s", err, out)
	}
	return elapsed, nil
}

func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		os.Remove(path + suffix)
	}
}

func countLines(path string) (int, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'}), err
}

// sqliteVersion is the sqlite3 shell's version, as it prints it.
func sqliteVersion() string {
	out, err := exec.Command("sqlite3", "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
