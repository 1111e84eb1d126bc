package registry

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
)

func someEntries(n int) []devreg.StagedEntry {
	out := make([]devreg.StagedEntry, n)
	for i := range out {
		out[i] = devreg.StagedEntry{Index: 2 * i, Line: 1 + i/3, DeviceID: fmt.Sprintf("dev-%06d", i), Hashes: []byte(fmt.Sprintf("%064d", i))}
	}
	out[n/2].Hashes = nil // a request already refused spools no hashes
	return out
}

func replay(t *testing.T, s *entrySpool) []devreg.StagedEntry {
	t.Helper()
	var got []devreg.StagedEntry
	if err := s.Replay(100, func(chunk []devreg.StagedEntry) error {
		if len(chunk) > 100 {
			t.Fatalf("chunk of %d entries, want at most 100", len(chunk))
		}
		got = append(got, chunk...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// A small request stays in memory: with no usable temporary directory it still spools.
func TestSpoolKeepsSmallRequestsInMemory(t *testing.T) {
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	want := someEntries(1000)
	s := newEntrySpool(spoolMemory)
	defer s.Close()
	for _, e := range want {
		if err := s.Add(e); err != nil {
			t.Fatalf("Add: %v (a small request must not touch the disk)", err)
		}
	}
	if diff := cmp.Diff(want, replay(t, s)); diff != "" {
		t.Errorf("replayed (-want +got):\n%s", diff)
	}
}

// A large request goes to a temporary file that no one can see by name, gives its entries back
// in order, and is gone after Close.
func TestSpoolSpillsToAFileItRemoves(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	want := someEntries(20000)
	s := newEntrySpool(64 << 10)
	for _, e := range want {
		if err := s.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if s.file == nil {
		t.Fatalf("%d entries stayed in %d bytes of memory", len(want), 64<<10)
	}
	if leftovers, _ := os.ReadDir(dir); len(leftovers) != 0 {
		t.Errorf("the spool file can be seen by name: %v", leftovers)
	}
	if diff := cmp.Diff(want, replay(t, s)); diff != "" {
		t.Errorf("replayed (-want +got):\n%s", diff)
	}
	if s.Len() != len(want) {
		t.Errorf("Len = %d, want %d", s.Len(), len(want))
	}
	name := s.file.Name()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("spool file %s after Close: %v", name, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
