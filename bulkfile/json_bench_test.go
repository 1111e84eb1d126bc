package bulkfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"devreg"
	"devreg/internal/reqbody"
)

// benchDevices is how many devices the parsing benchmarks read: the size of issue 17's request.
const benchDevices = 1_000_000

// benchBodies returns the same devices as a JSON registration body (compact, as the Go client's
// json.Marshal writes it) and as a bulk upload file.
func benchBodies() (jsonBody, csvBody []byte) {
	var j, c bytes.Buffer
	j.WriteString(`{"devices":[`)
	for i := range benchDevices {
		id := fmt.Sprintf("dev-%07d", i+1)
		secret := fmt.Sprintf("s3cr3t-%017d", i*7919) // 24 characters
		if i > 0 {
			j.WriteByte(',')
		}
		fmt.Fprintf(&j, `{"device_id":%q,"secret":%q}`, id, secret)
		fmt.Fprintf(&c, "%s,%s\n", id, secret)
	}
	j.WriteString("]}")
	return j.Bytes(), c.Bytes()
}

// BenchmarkParseRegistration reads a million devices from a registration body, JSON and CSV, as
// the handler does (through reqbody.Entries), and reports the time per entry: issue 17 asks the
// JSON parser to be about as fast as the CSV one.
func BenchmarkParseRegistration(b *testing.B) {
	jsonBody, csvBody := benchBodies()
	for _, bm := range []struct {
		name string
		body []byte
		open func(io.Reader) devreg.EntrySource
	}{
		{"JSON", jsonBody, NewJSONReader},
		{"CSV", csvBody, func(r io.Reader) devreg.EntrySource { return reqbody.Entries(NewReader(r)) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(bm.body)))
			b.ReportAllocs()
			for b.Loop() {
				src := bm.open(bytes.NewReader(bm.body))
				n := 0
				for {
					e, err := src.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil || e.Problem != "" {
						b.Fatalf("entry %d: %+v, %v", n, e, err)
					}
					n++
				}
				if n != benchDevices {
					b.Fatalf("read %d entries; want %d", n, benchDevices)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchDevices, "ns/entry")
		})
	}
}
