package zran

import (
	"bytes"
	"io"
	"slices"
	"sync"
	"testing"
)

// readLog records the reads a reader makes of a blob.
type readLog struct {
	io.ReaderAt
	mu    sync.Mutex
	sizes []int
}

func (r *readLog) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	r.sizes = append(r.sizes, len(p))
	r.mu.Unlock()
	return r.ReaderAt.ReadAt(p, off)
}

// A restart inside a byte fetches that byte with its first input, not on
// its own: over HTTP each read is a round trip.
func TestRestartIsOneRead(t *testing.T) {
	plain := mixedData(3, 2<<20)
	blob := systemGzip(t, "-6", plain)
	_, cps, err := runIndexer(t, blob, 256<<10, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	restarts := 0
	for _, c := range cps {
		if c.Bits == 0 || c.MemberStart {
			continue
		}
		restarts++
		log := &readLog{ReaderAt: bytes.NewReader(blob)}
		r, err := NewReader(log, int64(len(blob)), c)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4096)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !bytes.Equal(got, plain[c.Out:c.Out+4096]) {
			t.Fatalf("checkpoint at %d: wrong bytes", c.In)
		}
		if len(log.sizes) != 1 {
			t.Errorf("checkpoint at %d/%d bits: reads of %v bytes; want one", c.In, c.Bits, log.sizes)
		}
	}
	if restarts == 0 {
		t.Fatal("no checkpoint inside a byte to test")
	}
}

// NewReaderSize fetches input in pieces of the size asked for, within
// bounds, and inflates the same bytes as NewReader.
func TestNewReaderSize(t *testing.T) {
	plain := mixedData(3, 4<<20)
	blob := systemGzip(t, "-6", plain)
	_, cps, err := runIndexer(t, blob, 1<<20, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	c := cps[1] // far enough from the end for a 1 MiB read
	for _, tc := range []struct{ asked, want int }{
		{0, readerInputSize}, {256 << 10, 256 << 10}, {64 << 20, maxReaderInputSize},
	} {
		log := &readLog{ReaderAt: bytes.NewReader(blob)}
		r, err := NewReaderSize(log, int64(len(blob)), c, tc.asked)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 100_000)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !bytes.Equal(got, plain[c.Out:c.Out+int64(len(got))]) {
			t.Fatalf("input size %d: wrong bytes", tc.asked)
		}
		if got := slices.Max(log.sizes); got != tc.want {
			t.Errorf("asked for %d: reads of %v bytes, want pieces of %d", tc.asked, log.sizes, tc.want)
		}
	}
}
