package registry

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/internal/pgtest"
)

// TestDeviceListingOrders: each order lists every device once, in its order, page after page of
// its own cursors, alone and with a type's filter and a restricted key; a cursor of another order
// is refused, and so is an order a search cannot walk.
func TestDeviceListingOrders(t *testing.T) { pgtest.Each(t, testDeviceListingOrders) }

func testDeviceListingOrders(t *testing.T, url string) {
	e := newListingEnv(t, url, 3)
	// 30 devices in three types and six lots, their IDs in the reverse of their registration.
	var all []string
	for lot := range 6 {
		var ids []string
		for j := range 5 {
			ids = append(ids, fmt.Sprintf("d-%02d", 29-lot*5-j))
		}
		e.register(t, e.types[lot%3], ids...)
		all = append(all, ids...)
	}
	// Seen: d-29 first, then every third device of the last lots, at times that tie in pairs.
	t1 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	seen := map[string]time.Time{"d-29": t1}
	if err := e.svc.store.MarkSeen(e.admin, e.acc, []string{"d-29"}, t1); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"d-03", "d-06", "d-09", "d-12", "d-15", "d-18"} {
		at := t1.Add(time.Duration(1+i/2) * time.Minute)
		if err := e.svc.store.MarkSeen(e.admin, e.acc, []string{id}, at); err != nil {
			t.Fatal(err)
		}
		seen[id] = at
	}
	typeOf := map[string]string{}
	for i, id := range all {
		typeOf[id] = e.types[i/5%3]
	}
	registered := func(ids []string) []string { return ids }
	byID := func(ids []string) []string { return slices.Sorted(slices.Values(ids)) }
	newest := func(ids []string) []string { r := slices.Clone(ids); slices.Reverse(r); return r }
	lastSeen := func(ids []string) []string {
		r := newest(ids) // registration order breaks ties, newest first
		slices.SortStableFunc(r, func(a, b string) int {
			ta, oka := seen[a]
			tb, okb := seen[b]
			switch {
			case oka && okb:
				return tb.Compare(ta)
			case oka:
				return -1
			case okb:
				return 1
			}
			return 0
		})
		return r
	}
	keep := func(ids []string, ok func(string) bool) []string {
		var r []string
		for _, id := range ids {
			if ok(id) {
				r = append(r, id)
			}
		}
		return r
	}
	of := func(types ...string) func(string) bool {
		return func(id string) bool { return slices.Contains(types, typeOf[id]) }
	}
	ptr := func(b bool) *bool { return &b }
	for _, c := range []struct {
		name  string
		as    string // "" admin, else a key restricted to types 0 and 2
		f     devreg.DeviceFilter
		order func([]string) []string
		keep  func(string) bool
	}{
		{"registered", "", devreg.DeviceFilter{}, registered, nil},
		{"newest", "", devreg.DeviceFilter{Sort: devreg.SortNewest}, newest, nil},
		{"id", "", devreg.DeviceFilter{Sort: devreg.SortID}, byID, nil},
		{"last-seen", "", devreg.DeviceFilter{Sort: devreg.SortLastSeen}, lastSeen, nil},
		{"newest-of-a-type", "", devreg.DeviceFilter{Sort: devreg.SortNewest, DeviceTypeID: e.types[1]}, newest, of(e.types[1])},
		{"id-of-a-type", "", devreg.DeviceFilter{Sort: devreg.SortID, DeviceTypeID: e.types[1]}, byID, of(e.types[1])},
		{"last-seen-of-a-type", "", devreg.DeviceFilter{Sort: devreg.SortLastSeen, DeviceTypeID: e.types[0]}, lastSeen, of(e.types[0])},
		{"last-seen-connected", "", devreg.DeviceFilter{Sort: devreg.SortLastSeen, Connected: ptr(true)}, lastSeen, func(id string) bool { _, ok := seen[id]; return ok }},
		{"last-seen-never", "", devreg.DeviceFilter{Sort: devreg.SortLastSeen, Connected: ptr(false)}, lastSeen, func(id string) bool { _, ok := seen[id]; return !ok }},
		{"newest-restricted", "restricted", devreg.DeviceFilter{Sort: devreg.SortNewest}, newest, of(e.types[0], e.types[2])},
		{"last-seen-restricted", "restricted", devreg.DeviceFilter{Sort: devreg.SortLastSeen}, lastSeen, of(e.types[0], e.types[2])},
		{"id-prefix", "", devreg.DeviceFilter{Sort: devreg.SortID, Prefix: "d-1"}, byID, func(id string) bool { return strings.HasPrefix(id, "d-1") }},
		{"contains", "", devreg.DeviceFilter{Contains: "-2"}, byID, func(id string) bool { return strings.Contains(id, "-2") }},
		{"contains-of-a-type", "", devreg.DeviceFilter{Contains: "1", DeviceTypeID: e.types[2]}, byID, func(id string) bool { return strings.Contains(id, "1") && typeOf[id] == e.types[2] }},
	} {
		ctx := e.admin
		if c.as != "" {
			ctx = e.reader([]string{e.types[0], e.types[2]})
		}
		want := c.order(all)
		if c.keep != nil {
			want = keep(want, c.keep)
		}
		for _, size := range []int{1, 4, 100} {
			f := c.f
			f.Limit = size
			var got []string
			for pages := 0; ; pages++ {
				page, next, err := e.svc.ListDevices(ctx, f)
				if err != nil {
					t.Fatalf("%s by %d: %v", c.name, size, err)
				}
				for _, d := range page {
					got = append(got, d.DeviceID)
				}
				if next.IsZero() || pages > 40 {
					break
				}
				if f.After, err = devreg.ParseCursor(next.String()); err != nil {
					t.Fatalf("%s: the cursor %q does not parse: %v", c.name, next, err)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s, pages of %d (-want +got):\n%s", c.name, size, diff)
			}
		}
	}

	for name, f := range map[string]devreg.DeviceFilter{
		"seq-cursor-in-id-order":       {Sort: devreg.SortID, After: devreg.Cursor{Seq: 3}},
		"id-cursor-newest":             {Sort: devreg.SortNewest, After: devreg.Cursor{DeviceID: "d-03"}},
		"seen-cursor-registered":       {After: devreg.Cursor{SeenAt: 5, Seq: 3}},
		"seq-cursor-in-last-seen":      {Sort: devreg.SortLastSeen, After: devreg.Cursor{Seq: 3}},
		"seen-cursor-in-a-search":      {Contains: "1", After: devreg.Cursor{SeenAt: -1, Seq: 3}},
		"prefix-newest":                {Prefix: "d", Sort: devreg.SortNewest},
		"contains-last-seen":           {Contains: "d", Sort: devreg.SortLastSeen},
		"unknown-sort":                 {Sort: "random"},
		"unknown-sort-with-a-good-one": {Sort: "id;drop"},
	} {
		f.Limit = 10
		_, _, err := e.svc.ListDevices(e.admin, f)
		if code := devreg.ErrorCode(err); code != devreg.EINVALIDCURSOR && code != devreg.EBADREQUEST {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
}

// TestSubstringSearchIsBounded: a page of a substring search reads at most SearchWindow
// devices; one that found too few stops there with a cursor to search on, and the pages that
// follow find the rest.
func TestSubstringSearchIsBounded(t *testing.T) { pgtest.Each(t, testSubstringSearchIsBounded) }

func testSubstringSearchIsBounded(t *testing.T, url string) {
	e := newListingEnv(t, url, 1)
	n := devreg.SearchWindow + 500
	// Two matches, one in the first window and one after it.
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("dev-%07d", i))
	}
	ids[10], ids[n-10] = ids[10]+"-needle", ids[n-10]+"-needle"
	if _, err := e.svc.Register(e.admin, e.types[0], &idsOnly{ids: ids}, devreg.RegisterOptions{}); err != nil {
		t.Fatal(err)
	}
	f := devreg.DeviceFilter{Contains: "needle", Limit: 10}
	page, next, err := e.svc.ListDevices(e.admin, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 1 || page[0].DeviceID != ids[10] || next.DeviceID == "" {
		t.Fatalf("first window: %d devices, next %+v; want %s and a cursor to search on", len(page), next, ids[10])
	}
	// The window is SearchWindow devices in ID order: dev-0000000 … ending before the last 500.
	sorted := slices.Sorted(slices.Values(ids))
	if want := sorted[devreg.SearchWindow-1]; next.DeviceID != want {
		t.Errorf("the search stopped at %q, want %q", next.DeviceID, want)
	}
	f.After = next
	page, next, err = e.svc.ListDevices(e.admin, f)
	if err != nil || len(page) != 1 || page[0].DeviceID != ids[n-10] || !next.IsZero() {
		t.Fatalf("second window: %v, %+v, %v; want %s and the end", page, next, err, ids[n-10])
	}
}

// idsOnly registers devices with one secret each, made from the ID.
type idsOnly struct {
	ids []string
	i   int
}

func (s *idsOnly) Next() (devreg.DeviceEntry, error) {
	if s.i == len(s.ids) {
		return devreg.DeviceEntry{}, io.EOF
	}
	s.i++
	return devreg.DeviceEntry{Index: s.i - 1, DeviceID: s.ids[s.i-1], Secret: "secret-of-the-device"}, nil
}
