package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"devreg"
	"devreg/store"
)

// testListSetOfTypes: a filter by a set of types (a restricted key's) lists the devices and
// batches of those types only, in the order and pages of an unfiltered listing, whichever way
// the types' devices interleave in ID and registration order.
func testListSetOfTypes(t *testing.T, db *store.DB) {
	ctx := context.Background()
	acc := newAccount(t, db, "a")
	for i := 1; i <= 4; i++ {
		newType(t, db, acc, fmt.Sprintf("dt_%d", i))
	}
	// One device per batch, types in turn, registered in the reverse of their IDs' order: the
	// types interleave both ways, and one prefix range holds all four.
	for i := range 24 {
		typ := fmt.Sprintf("dt_%d", i%4+1)
		stage(t, db, acc, []entry{{fmt.Sprintf("p-%02d", 23-i), "secret-x"}, {fmt.Sprintf("q-%02d", i), "secret-x"}},
			regPlan{DeviceTypeID: typ, Batch: devreg.Batch{ID: fmt.Sprintf("bat_%02d", i), CreatedAt: t0}})
	}
	if err := db.SetDeviceStatus(ctx, acc, "p-19", devreg.StatusDisabled); err != nil { // of dt_1
		t.Fatal(err)
	}
	set := []string{"dt_3", "dt_1", "dt_none"}
	// want lists, through the filter without the set, the devices of the set's types.
	want := func(f devreg.DeviceFilter) []string {
		f.Limit = 1000
		all, err := db.ListDevices(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range all {
			if slices.Contains(set, d.DeviceTypeID) {
				ids = append(ids, d.DeviceID)
			}
		}
		return ids
	}
	// paged lists, with the set, page by page of three.
	paged := func(f devreg.DeviceFilter) []string {
		f.DeviceTypeIDs, f.Limit = set, 3
		var ids []string
		for {
			page, err := db.ListDevices(ctx, acc, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range page {
				if !slices.Contains(set, d.DeviceTypeID) {
					t.Errorf("%+v: device %s of type %s listed", f, d.DeviceID, d.DeviceTypeID)
				}
				ids = append(ids, d.DeviceID)
			}
			if len(page) < f.Limit {
				return ids
			}
			if f.Prefix != "" {
				f.After = devreg.Cursor{DeviceID: page[len(page)-1].DeviceID}
			} else {
				f.After = devreg.Cursor{Seq: page[len(page)-1].Seq}
			}
		}
	}
	for name, f := range map[string]devreg.DeviceFilter{
		"registration-order":     {},
		"prefix":                 {Prefix: "p-"},
		"prefix-enabled":         {Prefix: "p", Status: devreg.StatusEnabled},
		"registration-disabled":  {Status: devreg.StatusDisabled},
		"never-connected":        {Connected: ptr(false)},
		"type-in-the-set":        {DeviceTypeID: "dt_3"},
		"type-in-the-set-prefix": {DeviceTypeID: "dt_3", Prefix: "q-1"},
		"type-not-in-the-set":    {DeviceTypeID: "dt_2"},
		"batch-in-the-set":       {BatchID: "bat_02"},
		"batch-not-in-the-set":   {BatchID: "bat_01", Prefix: "p"},
	} {
		w, got := want(f), paged(f)
		if !cmp.Equal(w, got) {
			t.Errorf("%s: %v, want %v", name, got, w)
		}
	}
	if got := want(devreg.DeviceFilter{Prefix: "p-"}); len(got) != 12 {
		t.Fatalf("the set's devices of prefix p-: %v, want 12", got)
	}
	for _, f := range []devreg.DeviceFilter{{DeviceTypeIDs: []string{}}, {DeviceTypeIDs: []string{}, Prefix: "p"}} {
		f.Limit = 10
		if got, err := db.ListDevices(ctx, acc, f); err != nil || len(got) != 0 {
			t.Errorf("an empty set of types, %+v: %d devices, %v", f, len(got), err)
		}
	}

	var batches, wantBatches []string
	all, _, err := db.ListBatches(ctx, acc, devreg.BatchFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		if slices.Contains(set, b.DeviceTypeID) {
			wantBatches = append(wantBatches, b.ID)
		}
	}
	f := devreg.BatchFilter{DeviceTypeIDs: set, Limit: 5}
	for {
		page, seqs, err := db.ListBatches(ctx, acc, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page {
			batches = append(batches, b.ID)
		}
		if len(page) < f.Limit {
			break
		}
		f.After = devreg.Cursor{Seq: seqs[len(seqs)-1]}
	}
	if len(wantBatches) != 12 || !cmp.Equal(wantBatches, batches) {
		t.Errorf("batches of the set, by 5: %v, want %v", batches, wantBatches)
	}
	for name, f := range map[string]devreg.BatchFilter{
		"type-not-in-the-set": {DeviceTypeIDs: set, DeviceTypeID: "dt_2", Limit: 10},
		"empty-set":           {DeviceTypeIDs: []string{}, Limit: 10},
	} {
		if got, _, err := db.ListBatches(ctx, acc, f); err != nil || len(got) != 0 {
			t.Errorf("batches, %s: %+v, %v", name, got, err)
		}
	}
}
