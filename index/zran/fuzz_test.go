package zran

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"testing"
	"time"
)

// Bounds on one iteration's work: a few bytes of deflate can expand a
// thousandfold, and a tiny spacing makes many checkpoints.
const (
	fuzzMaxOut         = 4 << 20
	fuzzMaxCheckpoints = 24
	fuzzMaxTail        = 256 << 10
	fuzzHang           = 30 * time.Second
)

func gzipBytes(level int, parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		w, _ := gzip.NewWriterLevel(&b, level)
		w.Write(p)
		w.Close()
	}
	return b.Bytes()
}

func FuzzIndexer(f *testing.F) {
	text := mixedData(42, 20000)
	f.Add(gzipBytes(6, nil), uint16(100))
	f.Add(gzipBytes(6, []byte("hello, world\n")), uint16(1))
	f.Add(gzipBytes(1, text[:3000], nil, text[3000:5000]), uint16(500))
	f.Add(gzipBytes(0, text[:9000]), uint16(1000))
	f.Add(gzipBytes(gzip.HuffmanOnly, text), uint16(2000))
	f.Add(append(gzipBytes(9, text), 0, 0, 0), uint16(4096))
	f.Add(gzipBytes(9, bytes.Repeat([]byte{'z'}, 100000)), uint16(3))
	var flushed bytes.Buffer
	w := gzip.NewWriter(&flushed)
	for i := 0; i < len(text); i += 1500 {
		w.Write(text[i:min(len(text), i+1500)])
		w.Flush() // a block boundary, and an empty stored block
	}
	w.Close()
	f.Add(flushed.Bytes(), uint16(2000))

	f.Fuzz(func(t *testing.T, data []byte, spacing16 uint16) {
		spacing := int64(spacing16) + 1
		// A hang must surface as a crash, which the fuzzer records with its
		// input; the work above is bounded far below this.
		watchdog := time.AfterFunc(fuzzHang, func() { panic("zran: fuzz iteration hung") })
		defer watchdog.Stop()
		var cps []Checkpoint
		x, err := NewIndexer(bytes.NewReader(data), spacing, func(c Checkpoint) error {
			cps = append(cps, c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		out, err := io.ReadAll(io.LimitReader(x, fuzzMaxOut+1))
		if err != nil || len(out) > fuzzMaxOut {
			return
		}
		// The Indexer accepted the stream: Go's decoder must agree on the
		// bytes. It is stricter only about zero padding after the stream.
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("Indexer accepted what gzip.NewReader rejects: %v", err)
		}
		want, err := io.ReadAll(io.LimitReader(zr, fuzzMaxOut+1))
		if err != nil && !((errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF)) && hasZeroPadding(data)) {
			t.Fatalf("Indexer accepted what compress/gzip rejects: %v", err)
		}
		if !bytes.Equal(out, want) {
			t.Fatalf("Indexer output (%d bytes) differs from compress/gzip's (%d bytes)", len(out), len(want))
		}
		if len(cps) == 0 || cps[0].Out != 0 || !cps[0].MemberStart {
			t.Fatalf("bad first checkpoint in %+v", cps)
		}
		for i, c := range cps {
			if i > 0 && c.Out <= cps[i-1].Out {
				t.Fatalf("checkpoints out of order: %d then %d", cps[i-1].Out, c.Out)
			}
		}
		// Every checkpoint if there are few, else an even sample; the last
		// one reads to the end, across any later members and padding.
		step := max(1, len(cps)/fuzzMaxCheckpoints)
		for i := len(cps) - 1; i >= 0; i -= step {
			c := cps[i]
			want := out[c.Out:]
			if i != len(cps)-1 {
				want = want[:min(len(want), fuzzMaxTail)]
			}
			r, err := NewReader(bytes.NewReader(data), int64(len(data)), c)
			if err != nil {
				t.Fatalf("NewReader(%+v): %v", c, err)
			}
			tail, err := io.ReadAll(io.LimitReader(r, int64(len(want))+1))
			r.Close()
			if err != nil {
				t.Fatalf("reading from checkpoint out %d in %d bits %d: %v", c.Out, c.In, c.Bits, err)
			}
			if i == len(cps)-1 {
				if !bytes.Equal(tail, want) {
					t.Fatalf("last checkpoint out %d in %d bits %d: tail differs", c.Out, c.In, c.Bits)
				}
			} else if !bytes.Equal(tail[:min(len(tail), len(want))], want) || len(tail) < len(want) {
				t.Fatalf("checkpoint out %d in %d bits %d: tail differs", c.Out, c.In, c.Bits)
			}
		}
	})
}

// hasZeroPadding reports whether data ends in a zero byte, which the
// Indexer may have skipped as padding and compress/gzip takes for a bad or
// truncated header.
func hasZeroPadding(data []byte) bool {
	return len(data) > 0 && data[len(data)-1] == 0
}
