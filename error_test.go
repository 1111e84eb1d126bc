package devreg_test

import (
	"fmt"
	"testing"

	"devreg"
)

// TestProblemGroups: a list of problems counts every problem by its kind's message, however many
// it keeps, says where each kind is as people count, and folds kinds past the limit into one.
func TestProblemGroups(t *testing.T) {
	var l devreg.ProblemList
	var sunk int
	l.Sink = func(devreg.Problem) { sunk++ }
	for i := range 5000 {
		l.Add(devreg.Problem{Index: i, Line: i + 2, Message: "secret is too short"})
	}
	l.Add(devreg.Problem{Index: 5000, Line: 5002, Message: "device ID is listed more than once; first at index 7", Kind: "device ID is listed more than once"})
	l.Add(devreg.Problem{Index: 5003, Line: 5005, Message: "device ID is listed more than once; first at index 9", Kind: "device ID is listed more than once"})
	if l.Count != 5002 || len(l.Items) != devreg.MaxProblems || sunk != 5002 || len(l.Groups) != 2 {
		t.Fatalf("count %d, %d kept, %d sunk, %d groups; want 5002, %d, 5002, 2", l.Count, len(l.Items), sunk, len(l.Groups), devreg.MaxProblems)
	}
	for _, tc := range []struct {
		g     devreg.ProblemGroup
		count int
		where string
	}{
		{l.Groups[0], 5000, "entries 1–5,000 (lines 2–5,001)"},
		{l.Groups[1], 2, "entries 5,001 to 5,004 (lines 5,002 to 5,005), not all between"},
	} {
		if tc.g.Count != tc.count || tc.g.Where() != tc.where {
			t.Errorf("group %q: %d at %q, want %d at %q", tc.g.Message, tc.g.Count, tc.g.Where(), tc.count, tc.where)
		}
	}
	if w := (devreg.ProblemGroup{Count: 1, First: devreg.ProblemAt{Index: 4}, Last: devreg.ProblemAt{Index: 4}}).Where(); w != "entry 5" {
		t.Errorf("one problem of a JSON body is at %q, want entry 5", w)
	}

	// Merging keeps the groups of both, adding up those of one message, in order of their first.
	var m devreg.ProblemList
	m.Add(devreg.Problem{Index: 6000, Message: "secret is too short"})
	m.Add(devreg.Problem{Index: 3, Message: "device ID contains a space"})
	merged := m.Merge(l)
	if merged.Count != 5004 || len(merged.Groups) != 3 || merged.Groups[0].Message != "secret is too short" ||
		merged.Groups[0].Count != 5001 || merged.Groups[0].Last.Index != 6000 || merged.Groups[1].Message != "device ID contains a space" {
		t.Errorf("merged groups: %+v", merged.Groups)
	}

	// Past MaxProblemGroups kinds, the rest share one group.
	var many devreg.ProblemList
	for i := range 2 * devreg.MaxProblemGroups {
		many.Add(devreg.Problem{Index: i, Message: fmt.Sprintf("problem of kind %d", i)})
	}
	last := many.Groups[len(many.Groups)-1]
	if len(many.Groups) != devreg.MaxProblemGroups || last.Message != devreg.OtherProblems || last.Count != devreg.MaxProblemGroups+1 {
		t.Errorf("%d groups, the last %+v; want %d, the last counting %d of other kinds", len(many.Groups), last, devreg.MaxProblemGroups, devreg.MaxProblemGroups+1)
	}
}
