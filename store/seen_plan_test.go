package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"devreg"
)

// TestSeenWritesReadTheirRowsPostgres: the batched writes of broker logins look their devices up
// in the index, once PostgreSQL plans their statements generically (as it does after five runs of
// a prepared statement), and not by reading every device of the account for each chunk: 9,000
// devices of 20,000 took 4-7 s a flush that way, and last_seen_at showed 13-17 s after the
// logins under load. Counted by the database itself, with and without its statistics.
func TestSeenWritesReadTheirRowsPostgres(t *testing.T) {
	ctx := context.Background()
	s, acc := planPostgres(t)
	read := rowsRead(t, s)
	if _, err := s.db.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var uses []devreg.CredentialUse
	for i := 1; i <= planDevices; i += planDevices / seenChunk { // one chunk, spread over the account
		id := fmt.Sprintf("big-%07d", i)
		if i%3 == 2 {
			id = fmt.Sprintf("oth-%07d", i)
		}
		ids = append(ids, id)
		uses = append(uses, devreg.CredentialUse{DeviceID: id, InDevice: true})
	}
	for _, analyzed := range []bool{false, true} {
		if analyzed {
			if _, err := s.db.ExecContext(ctx, `ANALYZE`); err != nil {
				t.Fatal(err)
			}
		}
		for round := range 2 { // the first sighting, then a later one
			at := time.Now().Add(time.Duration(round) * time.Second)
			before := read("devices")
			if err := s.MarkSeen(ctx, acc, ids, at); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkCredentialsUsed(ctx, acc, uses, at); err != nil {
				t.Fatal(err)
			}
			// Each statement reads the chunk's rows: two to mark them seen, two to mark their
			// credentials used.
			if n, most := read("devices")-before, int64(4*len(ids)+10); n > most {
				t.Errorf("analyzed %v, round %d: marking %d devices seen and used read %d rows of %d devices; want at most %d",
					analyzed, round, len(ids), n, planDevices, most)
			}
		}
	}
}
