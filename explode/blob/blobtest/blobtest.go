// Package blobtest is the conformance suite of blob.Source: every
// implementation runs Run against a source holding the suite's blobs, so
// that all of them keep the contract the index and the controller rely on.
package blobtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// NewSource returns a source that holds exactly blobs (each under its
// digest) for the suite to read. It may start servers and register their
// cleanup with t.
type NewSource func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source

// Blobs returns the suite's blobs: empty, one byte, small text, an odd
// size and one of several MiB, so that reads cross every boundary an
// implementation may have (chunked requests, the 1 MiB spans the index
// reads). The same seed gives the same blobs.
func Blobs(seed uint64) map[digest.Digest][]byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	out := map[digest.Digest][]byte{}
	for _, b := range [][]byte{
		{},
		{0x42},
		[]byte(strings.Repeat("explodefs blob conformance\n", 40)),
		random(70_001),
		random(5<<20 + 123),
	} {
		out[digest.FromBytes(b)] = b
	}
	return out
}

// Run checks the source newSource returns against the blob.Source
// contract: opening, sizes, io.ReaderAt semantics at any offset and
// length, missing and invalid digests, concurrent reads and Close.
func Run(t *testing.T, newSource NewSource) {
	t.Helper()
	blobs := Blobs(1)
	src := newSource(t, blobs)
	ctx := t.Context()

	t.Run("String", func(t *testing.T) {
		// The controller keys what it learns about a source by its name.
		if first, again := src.String(), src.String(); first == "" || first != again {
			t.Fatalf("String() = %q, then %q; want a stable non-empty name", first, again)
		}
	})
	t.Run("OpenAndSize", func(t *testing.T) {
		for d, want := range blobs {
			b := open(t, src, d)
			if b.Size() != int64(len(want)) {
				t.Errorf("blob %s: Size() = %d, want %d", short(d), b.Size(), len(want))
			}
		}
	})
	t.Run("ReadAtEdges", func(t *testing.T) {
		for d, want := range blobs {
			b := open(t, src, d)
			size := int64(len(want))
			checkRead(t, d, b, want, 0, len(want))
			checkRead(t, d, b, want, 0, len(want)+10)
			checkRead(t, d, b, want, size, 1)
			checkRead(t, d, b, want, size+4096, 7)
			if size > 0 {
				checkRead(t, d, b, want, size-1, 1)
				checkRead(t, d, b, want, size-1, 2)
				checkRead(t, d, b, want, 0, 1)
			}
			if n, err := b.ReadAt(make([]byte, 1), -1); err == nil {
				t.Errorf("blob %s: ReadAt at offset -1 = %d, nil; want an error", short(d), n)
			}
		}
	})
	t.Run("ReadAtRandom", func(t *testing.T) {
		r := rand.New(rand.NewPCG(2, 3))
		for d, want := range blobs {
			b := open(t, src, d)
			for range 40 {
				off := r.Int64N(int64(len(want)) + 2)
				n := 1 + r.IntN(min(2<<20, len(want)+16))
				checkRead(t, d, b, want, off, n)
			}
		}
	})
	t.Run("Missing", func(t *testing.T) {
		d := digest.FromString("no such blob in the conformance suite")
		b, err := src.Open(ctx, d)
		if err == nil {
			b.Close()
			t.Fatalf("Open(missing %s) succeeded", short(d))
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open(missing): %v, want an error wrapping fs.ErrNotExist", err)
		}
		if !strings.Contains(err.Error(), d.Encoded()) {
			t.Errorf("Open(missing): %q does not name the blob %s", err, d)
		}
	})
	t.Run("InvalidDigest", func(t *testing.T) {
		valid := digest.FromString("x").Encoded()
		for _, d := range []digest.Digest{
			"", "sha256", "sha256:", "sha256:" + digest.Digest(valid[:63]),
			"sha256:" + digest.Digest(strings.ToUpper(valid)),
			"sha256:../../../../../../etc/passwd",
			"sha256:" + digest.Digest(valid) + "/../" + digest.Digest(valid),
			"../sha256:" + digest.Digest(valid),
			"md5:d41d8cd98f00b204e9800998ecf8427e",
		} {
			b, err := src.Open(ctx, d)
			if err == nil {
				b.Close()
				t.Errorf("Open(%q) succeeded, want it refused", d)
				continue
			}
			// A hostile manifest's digest is refused for good, not
			// waited for as a blob that may still arrive.
			if errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Open(%q): %v, want a refusal, not fs.ErrNotExist", d, err)
			}
		}
	})
	t.Run("SequentialReads", func(t *testing.T) {
		// Readers going through a blob in order, as the layer pass and
		// the lazy reader do, several at once in different places, in
		// the read sizes they use.
		d, want := largest(blobs)
		b := open(t, src, d)
		var wg sync.WaitGroup
		for i, chunk := range []int{4 << 10, 64 << 10, 256 << 10, 1000 << 10} {
			wg.Go(func() {
				start := int64(i) * int64(len(want)) / 5
				for off := start; off < int64(len(want)); off += int64(chunk) {
					checkRead(t, d, b, want, off, chunk)
				}
			})
		}
		wg.Wait()
	})
	t.Run("ConcurrentReadAt", func(t *testing.T) {
		d, want := largest(blobs)
		b := open(t, src, d)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), 7))
				for range 25 {
					off := r.Int64N(int64(len(want)))
					checkRead(t, d, b, want, off, 1+r.IntN(256<<10))
				}
			})
		}
		wg.Wait()
	})
	t.Run("IndependentOpens", func(t *testing.T) {
		d, want := largest(blobs)
		first, second := open(t, src, d), open(t, src, d)
		if err := first.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		checkRead(t, d, second, want, int64(len(want))/2, 4096)
		if v1, v2 := blob.VersionOf(first), blob.VersionOf(second); v1 != v2 {
			t.Errorf("two opens of an unchanged blob have versions %q and %q", v1, v2)
		}
	})
	t.Run("Close", func(t *testing.T) {
		d, _ := largest(blobs)
		b, err := src.Open(ctx, d)
		if err != nil {
			t.Fatalf("Open(%s): %v", short(d), err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if n, err := b.ReadAt(make([]byte, 16), 0); err == nil {
			t.Errorf("ReadAt after Close = %d, nil; want an error", n)
		}
	})
}

// checkRead reads n bytes at off and checks them against want as
// io.ReaderAt specifies: all of them, or fewer only at the end with io.EOF.
func checkRead(t *testing.T, d digest.Digest, b blob.Blob, want []byte, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	got, err := b.ReadAt(p, off)
	wantN := int(max(0, min(int64(n), int64(len(want))-off)))
	switch {
	case got != wantN:
		t.Errorf("blob %s: ReadAt(%d bytes at %d) = %d, %v; want %d bytes", short(d), n, off, got, err, wantN)
	case got < n && err != io.EOF:
		t.Errorf("blob %s: ReadAt(%d bytes at %d) = %d, %v; a short read must end with io.EOF", short(d), n, off, got, err)
	case got == n && err != nil && (err != io.EOF || off+int64(n) != int64(len(want))):
		t.Errorf("blob %s: ReadAt(%d bytes at %d) = %d, %v; want no error", short(d), n, off, got, err)
	case got > 0 && !bytes.Equal(p[:got], want[off:off+int64(got)]):
		t.Errorf("blob %s: ReadAt(%d bytes at %d) returned wrong bytes", short(d), n, off)
	}
}

func open(t *testing.T, src blob.Source, d digest.Digest) blob.Blob {
	t.Helper()
	b, err := src.Open(t.Context(), d)
	if err != nil {
		t.Fatalf("Open(%s) from %s: %v", short(d), src, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func largest(blobs map[digest.Digest][]byte) (digest.Digest, []byte) {
	var d digest.Digest
	for k, v := range blobs {
		if d == "" || len(v) > len(blobs[d]) {
			d = k
		}
	}
	return d, blobs[d]
}

func short(d digest.Digest) string {
	return fmt.Sprintf("%.19s", d)
}
