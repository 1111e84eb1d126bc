package registry

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"devreg"
)

// spoolMemory is how much of a spool stays in memory before the rest goes to a temporary file:
// about twenty thousand entries, so that a small request never touches the disk.
const spoolMemory = 1 << 20

// Bounds of what a spooled entry can hold, so that a damaged spool file reads as an error.
const (
	maxSpooledID     = 64 << 10
	maxSpooledHashes = 64 << 10
)

// entrySpool holds the checked entries of a registration request until the request has arrived
// whole, so that no database connection waits on a slow upload. The first spoolMemory bytes stay
// in memory; the rest go to a temporary file, unlinked as soon as it is made where the system
// allows it, so it vanishes even if the process dies, and removed by Close where it does not.
// Each entry takes its device ID, its hashes and a few bytes, so a spool is about the size of the
// body it came from: the body limit bounds it.
type entrySpool struct {
	mem     []byte
	memMax  int
	file    *os.File
	w       *bufio.Writer
	removed bool // the file's name is gone already

	count               int
	lastIndex, lastLine int
	scratch             [3 * binary.MaxVarintLen64]byte
}

// newEntrySpool returns an empty spool that keeps its first memMax bytes in memory.
func newEntrySpool(memMax int) *entrySpool { return &entrySpool{memMax: memMax} }

// Len returns how many entries the spool holds.
func (s *entrySpool) Len() int { return s.count }

// Add appends e. Entries are added in the order of their index.
func (s *entrySpool) Add(e devreg.StagedEntry) error {
	// Index and line as differences from the entry before, which are a byte or two each.
	b := binary.AppendVarint(s.scratch[:0], int64(e.Index-s.lastIndex))
	b = binary.AppendVarint(b, int64(e.Line-s.lastLine))
	b = binary.AppendUvarint(b, uint64(len(e.DeviceID)))
	s.lastIndex, s.lastLine = e.Index, e.Line
	s.count++
	if s.w == nil && len(s.mem)+len(b)+len(e.DeviceID)+binary.MaxVarintLen64+len(e.Hashes) <= s.memMax {
		s.mem = append(s.mem, b...)
		s.mem = append(s.mem, e.DeviceID...)
		s.mem = binary.AppendUvarint(s.mem, uint64(len(e.Hashes)))
		s.mem = append(s.mem, e.Hashes...)
		return nil
	}
	if s.w == nil {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.w.Write(b)
	s.w.WriteString(e.DeviceID)
	s.w.Write(binary.AppendUvarint(s.scratch[:0], uint64(len(e.Hashes))))
	_, err := s.w.Write(e.Hashes) // a bufio.Writer keeps its first error
	return err
}

// spill moves the spool to a temporary file.
func (s *entrySpool) spill() error {
	f, err := os.CreateTemp("", "devreg-register-*")
	if err != nil {
		return fmt.Errorf("spool a registration: %w", err)
	}
	s.file = f
	s.removed = os.Remove(f.Name()) == nil
	s.w = bufio.NewWriterSize(f, 256<<10)
	return nil
}

// Replay hands the entries to fn in order, at most chunk at a time. fn may keep the slices it
// is given.
func (s *entrySpool) Replay(chunk int, fn func([]devreg.StagedEntry) error) error {
	r := io.Reader(bytes.NewReader(s.mem))
	if s.w != nil {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("spool a registration: %w", err)
		}
		if _, err := s.file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("spool a registration: %w", err)
		}
		r = io.MultiReader(r, bufio.NewReaderSize(s.file, 256<<10))
	}
	br := bufio.NewReader(r)
	var index, line int
	var id []byte
	out := make([]devreg.StagedEntry, 0, chunk)
	for n := 0; n < s.count; n++ {
		di, err1 := binary.ReadVarint(br)
		dl, err2 := binary.ReadVarint(br)
		idLen, err3 := binary.ReadUvarint(br)
		if err := errors.Join(err1, err2, err3); err != nil {
			return fmt.Errorf("read back spooled entry %d: %w", n, err)
		}
		if idLen > maxSpooledID {
			return fmt.Errorf("read back spooled entry %d: a device ID of %d bytes", n, idLen)
		}
		id = slices.Grow(id[:0], int(idLen))[:idLen]
		if _, err := io.ReadFull(br, id); err != nil {
			return fmt.Errorf("read back spooled entry %d: %w", n, err)
		}
		hashLen, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("read back spooled entry %d: %w", n, err)
		}
		var hashes []byte
		if hashLen > maxSpooledHashes {
			return fmt.Errorf("read back spooled entry %d: hashes of %d bytes", n, hashLen)
		}
		if hashLen > 0 {
			hashes = make([]byte, hashLen)
			if _, err := io.ReadFull(br, hashes); err != nil {
				return fmt.Errorf("read back spooled entry %d: %w", n, err)
			}
		}
		index += int(di)
		line += int(dl)
		out = append(out, devreg.StagedEntry{Index: index, Line: line, DeviceID: string(id), Hashes: hashes})
		if len(out) == chunk {
			if err := fn(out); err != nil {
				return err
			}
			out = make([]devreg.StagedEntry, 0, chunk)
		}
	}
	if len(out) > 0 {
		return fn(out)
	}
	return nil
}

// Release implements devreg.RegistrationEntries: it closes the spool.
func (s *entrySpool) Release() { s.Close() }

// Close discards the spool and its file.
func (s *entrySpool) Close() error {
	s.mem = nil
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	if !s.removed {
		if rerr := os.Remove(s.file.Name()); err == nil {
			err = rerr
		}
	}
	s.file, s.w = nil, nil
	return err
}
