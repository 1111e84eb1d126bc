package registry

import (
	"fmt"
	"testing"

	"devreg"
	"devreg/internal/certtest"
	"devreg/internal/pgtest"
)

// TestProblemsInIndexOrder: a request refused for a mix of problems found by different checks in
// one chunk of entries (a bad device ID late in the chunk, a secret where the first entry has a
// certificate early in it) reports them in index order: the console's download of every problem
// merges one sorted run per disorder, so a file that broke the order in every chunk of 256 made a
// run per chunk (a reader and its buffer each, some 200,000 for a 1 GiB upload, merged at a cost
// of runs × problems), and the first devreg.MaxProblems the refusal lists are the first by index.
func TestProblemsInIndexOrder(t *testing.T) { pgtest.Each(t, testProblemsInIndexOrder) }

func testProblemsInIndexOrder(t *testing.T, url string) {
	e := newCertEnv(t, url)
	ca := certtest.NewCA(t, "Factory CA")
	src := certSource{{Index: 0, DeviceID: "p0", Certificate: string(ca.Issue(t, "p0").PEM)}}
	const n = 1100
	for i := 1; i < n; i++ {
		entry := devreg.DeviceEntry{Index: i, DeviceID: fmt.Sprintf("p%d", i), Secret: "a-secret-long-enough"}
		if i%checkChunk == checkChunk-1 {
			entry.DeviceID = fmt.Sprintf("bad id %d", i) // refused by the check of its chunk
		}
		src = append(src, entry)
	}
	var sunk []int
	_, err := e.svc.Register(e.admin, e.dt.ID, &src, devreg.RegisterOptions{DryRun: true, Problems: func(p devreg.Problem) { sunk = append(sunk, p.Index) }})
	de, ok := err.(*devreg.Error)
	if !ok || de.Code != devreg.EINVALIDROWS || de.ProblemCount != n-1 {
		t.Fatalf("register = %v, want every entry but the first invalid", err)
	}
	if len(sunk) != n-1 {
		t.Errorf("%d problems came, want %d", len(sunk), n-1)
	}
	for i := 1; i < len(sunk); i++ {
		if sunk[i] < sunk[i-1] {
			t.Errorf("the problem of index %d came after that of %d", sunk[i], sunk[i-1])
			break
		}
	}
	var listed []int
	for _, p := range de.Problems {
		listed = append(listed, p.Index)
	}
	if len(listed) != devreg.MaxProblems || listed[0] != 1 || listed[len(listed)-1] != devreg.MaxProblems {
		t.Errorf("the refusal lists %d problems, from index %d to %d; want the first %d, 1 to %d",
			len(listed), listed[0], listed[len(listed)-1], devreg.MaxProblems, devreg.MaxProblems)
	}
}
