package console

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"devreg"
)

// problemFile keeps every problem of a refused upload on disk, for the download of all of them
// (a page lists the first devreg.MaxProblems): a registration reports its problems kind by kind,
// each kind in index order, so the file holds a few sorted runs, and WriteCSV merges them. Memory
// stays a buffer per run however many problems there are; the disk it takes stops at
// maxProblemFile, the disk of all of them at maxProblemDisk, and Close removes it.
type problemFile struct {
	f       *os.File
	size    countingWriter
	w       *csv.Writer
	runs    []int64 // where each run starts in f
	last    int     // the index of the problem written last
	dropped int     // problems past maxProblemFile, or past maxProblemDisk
	crowded bool    // problems were dropped for other downloads' files (maxProblemDisk)
	held    int64   // the bytes of f counted in problemDisk
	err     error
}

// maxProblemFile bounds the disk a download of problems takes: some 2 million problems.
const maxProblemFile = 256 << 20

// problemDisk is the disk all problem files of this process take together, which stops at
// maxProblemDisk: a client that does not read its download holds the file open for as long as it
// likes, so each download's bound alone would let a few connections fill the temporary directory
// (a tmpfs, that is memory, in the compose file).
var problemDisk atomic.Int64

const maxProblemDisk = maxProblemFile

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func newProblemFile() (*problemFile, error) {
	f, err := os.CreateTemp("", "devreg-problems-*.csv")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // the open file is all this needs; nothing is left behind if the process dies
	p := &problemFile{f: f, size: countingWriter{w: f}}
	p.w = csv.NewWriter(&p.size)
	return p, nil
}

// Add records a problem; it is the registration's devreg.RegisterOptions.Problems.
func (p *problemFile) Add(pr devreg.Problem) {
	if p.err != nil {
		return
	}
	if p.size.n >= maxProblemFile {
		p.dropped++
		return
	}
	if problemDisk.Load() >= maxProblemDisk {
		p.dropped++
		p.crowded = true
		return
	}
	if len(p.runs) == 0 || pr.Index < p.last {
		p.w.Flush()
		p.runs = append(p.runs, p.size.n)
	}
	p.last = pr.Index
	p.err = p.w.Write([]string{strconv.Itoa(pr.Index), strconv.Itoa(pr.Line), pr.DeviceID, pr.Message})
	if grown := p.size.n - p.held; grown > 0 {
		problemDisk.Add(grown)
		p.held = p.size.n
	}
}

// WriteCSV writes every problem recorded, in index order, as CSV with a header: entries and
// lines counted from 1, as the console shows them.
func (p *problemFile) WriteCSV(w io.Writer) error {
	if p.w.Flush(); p.err == nil {
		p.err = p.w.Error()
	}
	if p.err != nil {
		return p.err
	}
	type run struct {
		r    *csv.Reader
		head []string
		idx  int
	}
	runs := make([]*run, 0, len(p.runs))
	for i, start := range p.runs {
		end := p.size.n
		if i+1 < len(p.runs) {
			end = p.runs[i+1]
		}
		r := csv.NewReader(bufio.NewReader(io.NewSectionReader(p.f, start, end-start)))
		r.FieldsPerRecord = 4
		runs = append(runs, &run{r: r})
	}
	next := func(r *run) error {
		rec, err := r.r.Read()
		if errors.Is(err, io.EOF) {
			r.head = nil
			return nil
		}
		if err != nil {
			return err
		}
		r.head = rec
		r.idx, err = strconv.Atoi(rec[0])
		return err
	}
	for _, r := range runs {
		if err := next(r); err != nil {
			return err
		}
	}
	out := csv.NewWriter(w)
	if err := out.Write([]string{"entry", "line", "device_id", "problem"}); err != nil {
		return err
	}
	for {
		var low *run
		for _, r := range runs {
			if r.head != nil && (low == nil || r.idx < low.idx) {
				low = r
			}
		}
		if low == nil {
			break
		}
		line := low.head[1]
		if line == "0" {
			line = "" // a JSON body has no lines
		}
		if err := out.Write([]string{strconv.Itoa(low.idx + 1), line, cell(low.head[2]), cell(low.head[3])}); err != nil {
			return err
		}
		if err := next(low); err != nil {
			return fmt.Errorf("read the problems back: %w", err)
		}
	}
	if p.dropped > 0 {
		why := fmt.Sprintf("this download stops at %d MiB", maxProblemFile>>20)
		if p.crowded {
			why = fmt.Sprintf("other downloads of problems under way take the server's room for them (%d MiB); download again later for all", maxProblemDisk>>20)
		}
		if err := out.Write([]string{"", "", "", fmt.Sprintf("and %s more problems: %s", devreg.Thousands(int64(p.dropped)), why)}); err != nil {
			return err
		}
	}
	out.Flush()
	return out.Error()
}

// Close removes the file, and gives back the room it took.
func (p *problemFile) Close() error {
	problemDisk.Add(-p.held)
	p.held = 0
	return p.f.Close()
}

// cell keeps a spreadsheet from reading a value of the upload as a formula. No valid device ID
// starts with these characters, so a cell that does is a refused ID, shown with a leading "'".
func cell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
