package zran

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"testing"
)

// benchBlob returns the gzip blob to benchmark with: the file named by
// ZRAN_BENCH_GZ (to compare with zcat on the same data), or 32 MiB of
// generated mixed data compressed by compress/gzip.
func benchBlob(b *testing.B) []byte {
	if name := os.Getenv("ZRAN_BENCH_GZ"); name != "" {
		blob, err := os.ReadFile(name)
		if err != nil {
			b.Fatal(err)
		}
		return blob
	}
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(mixedData(77, 32<<20))
	w.Close()
	return buf.Bytes()
}

// BenchmarkIndexer reports uncompressed MB/s. The read size matters: each
// Read is at least one inflate call, and zlib copies up to 32 KiB of every
// call's output into its window.
func BenchmarkIndexer(b *testing.B) {
	blob := benchBlob(b)
	for _, size := range []int{512, 32 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("read=%d", size), func(b *testing.B) {
			buf := make([]byte, size)
			var total int64
			for b.Loop() {
				x, err := NewIndexer(bytes.NewReader(blob), 1<<20, func(Checkpoint) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				total = 0
				for {
					n, err := x.Read(buf)
					total += int64(n)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				x.Close()
			}
			b.SetBytes(total)
		})
	}
}

// BenchmarkReader measures resuming at a mid-stream checkpoint and reading
// one span, the lazy read path.
func BenchmarkReader(b *testing.B) {
	blob := benchBlob(b)
	var cps []Checkpoint
	x, err := NewIndexer(bytes.NewReader(blob), 1<<20, func(c Checkpoint) error {
		cps = append(cps, c)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, x); err != nil {
		b.Fatal(err)
	}
	x.Close()
	c := cps[len(cps)/2]
	buf := make([]byte, 1<<20)
	b.SetBytes(1 << 20)
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(blob), int64(len(blob)), c)
		if err != nil {
			b.Fatal(err)
		}
		// Not io.Copy: io.Discard would read through its own 8 KiB buffer.
		if _, err := io.ReadFull(r, buf[:1<<20]); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
