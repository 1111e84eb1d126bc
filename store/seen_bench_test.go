package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"devreg/internal/pgtest"
)

// BenchmarkMarkSeen measures what the index of last sightings (devices_seen, migration 0017)
// costs the batched writer of broker logins: a chunk of seenChunk devices spread over an
// account of planDevices marked seen again, in a database with the index and, as the baseline
// measured in the same run, one without it: go test ./store -run '^$' -bench MarkSeen (the
// PostgreSQL runs need DEVREG_TEST_POSTGRES, as the tests do).
func BenchmarkMarkSeen(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		for _, index := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/index=%v", kind, index), func(b *testing.B) {
				ctx := context.Background()
				url := "sqlite:" + filepath.Join(b.TempDir(), "devreg.db")
				if kind == "postgres" {
					url = pgtest.NewDatabase(b)
				}
				s, err := Open(ctx, url)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				acc := fillForPlans(b, s)
				if !index {
					if _, err := s.db.ExecContext(ctx, `DROP INDEX devices_seen`); err != nil {
						b.Fatal(err)
					}
				}
				var ids []string
				for i := 1; i <= planDevices; i += planDevices / seenChunk {
					id := fmt.Sprintf("big-%07d", i)
					if i%3 == 2 {
						id = fmt.Sprintf("oth-%07d", i)
					}
					ids = append(ids, id)
				}
				at := time.Now()
				b.ResetTimer()
				for b.Loop() {
					at = at.Add(time.Second) // every write moves every row
					if err := s.MarkSeen(ctx, acc, ids, at); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(ids)), "µs/device")
			})
		}
	}
}
