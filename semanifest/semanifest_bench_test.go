package semanifest

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// cycler streams a manifest of n entries cut from a pool, as a large upload arrives.
type cycler struct {
	pool [][]byte
	n, i int
	buf  []byte
	end  bool
}

func (c *cycler) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		switch {
		case c.end:
			return 0, io.EOF
		case c.i == c.n:
			c.buf, c.end = []byte("]"), true
		case c.i == 0:
			c.buf = append([]byte("["), c.pool[0]...)
			c.i++
		default:
			c.buf = append([]byte(","), c.pool[c.i%len(c.pool)]...)
			c.i++
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// BenchmarkReader reads a manifest of b.N entries of real size (about 2.9 KB each): the cost per
// part of checking a signature, decoding a payload and parsing two certificates.
func BenchmarkReader(b *testing.B) {
	f := newFake(&testing.T{})
	pool := make([][]byte, 256)
	for i := range pool {
		m := manifest(&testing.T{}, f.entry(&testing.T{}, fmt.Sprintf("0123%012x01", i), nil, nil))
		pool[i] = bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSpace(m), []byte("[")), []byte("]"))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pool[0]) + 1))
	b.ResetTimer()
	mr, err := NewReader(&cycler{pool: pool, n: b.N}, f.signer.Cert, Limits{})
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := mr.Next(); err == io.EOF {
			break
		} else if err != nil {
			b.Fatal(err)
		}
	}
}
