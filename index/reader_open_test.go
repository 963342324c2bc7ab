package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// scriptedOpener opens layers from memory, except that opens of a layer
// listed in hang block until release is closed, and opens of a layer in
// fail fail.
type scriptedOpener struct {
	blobs   indextest.MemBlobs
	hang    map[digest.Digest]bool
	release chan struct{}
	mu      sync.Mutex
	fail    map[digest.Digest]error
	opens   atomic.Int64
}

func (o *scriptedOpener) OpenLayer(ctx context.Context, d digest.Digest) (index.Blob, error) {
	o.opens.Add(1)
	if o.hang[d] {
		<-o.release // ignores ctx, as a stuck open(2) would
	}
	o.mu.Lock()
	err := o.fail[d]
	o.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return o.blobs.OpenLayer(ctx, d)
}

func indexTwoLayers(t *testing.T) (store index.Store, a, b digest.Digest, blobs indextest.MemBlobs) {
	t.Helper()
	store = memstore.New()
	blobs = indextest.MemBlobs{}
	for _, name := range []string{"a", "b"} {
		raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(7, 300_000)}})
		d, _, err := indexBytes(t, store, raw, index.PassOptions{})
		if err != nil {
			t.Fatal(err)
		}
		blobs[d] = raw
		if name == "a" {
			a = d
		} else {
			b = d
		}
	}
	return store, a, b, blobs
}

// A blob open that hangs fails its own readers after the timeout, and
// never holds up reads of other layers.
func TestReaderStuckOpenBlocksOnlyItsLayer(t *testing.T) {
	store, stuck, fine, blobs := indexTwoLayers(t)
	opener := &scriptedOpener{blobs: blobs, hang: map[digest.Digest]bool{stuck: true}, release: make(chan struct{})}
	defer close(opener.release)
	r := index.NewReader(store, opener, index.ReaderOptions{OpenTimeout: 300 * time.Millisecond})
	defer r.Close()

	stuckErr := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := r.ReadAt(context.Background(), stuck, make([]byte, 10), 1024)
			stuckErr <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // the stuck open has begun
	start := time.Now()
	if _, err := r.ReadAt(context.Background(), fine, make([]byte, 10), 1024); err != nil {
		t.Fatalf("read of another layer: %v", err)
	}
	if took := time.Since(start); took > 200*time.Millisecond {
		t.Errorf("read of another layer waited %s behind a stuck open", took)
	}
	for range 3 {
		select {
		case err := <-stuckErr:
			if err == nil || !strings.Contains(err.Error(), "longer than") || !strings.Contains(err.Error(), stuck.String()) {
				t.Errorf("read of the stuck layer: %v; want a timeout naming the layer", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a read of the stuck layer did not give up")
		}
	}
	// Concurrent readers shared one open.
	if n := opener.opens.Load(); n != 2 {
		t.Errorf("%d opens; want one per layer", n)
	}
}

// A failed open is not remembered: the next read tries again.
func TestReaderRetriesFailedOpen(t *testing.T) {
	store, a, _, blobs := indexTwoLayers(t)
	opener := &scriptedOpener{blobs: blobs, fail: map[digest.Digest]error{a: errors.New("registry down")}}
	r := index.NewReader(store, opener, index.ReaderOptions{})
	defer r.Close()
	if _, err := r.ReadAt(context.Background(), a, make([]byte, 10), 0); err == nil || !strings.Contains(err.Error(), "registry down") {
		t.Fatalf("first read: %v", err)
	}
	opener.mu.Lock()
	delete(opener.fail, a)
	opener.mu.Unlock()
	if _, err := r.ReadAt(context.Background(), a, make([]byte, 10), 0); err != nil {
		t.Fatalf("read after the source recovered: %v", err)
	}
}

// flakyBlob fails reads after a number of bytes, as a disk or a network
// would.
type flakyBlob struct {
	index.Blob
	failing *atomic.Bool
}

func (b flakyBlob) ReadAt(p []byte, off int64) (int, error) {
	if b.failing.Load() {
		return 0, fmt.Errorf("input/output error")
	}
	return b.Blob.ReadAt(p, off)
}

// A read that fails on the blob drops that open blob and its span, so the
// next read opens the layer again (perhaps from another source) instead
// of failing forever.
func TestReaderReopensAfterReadError(t *testing.T) {
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(3, 3_000_000)}})
	blobBytes := compress(t, gzipOne, raw)
	store := memstore.New()
	d, _, err := indexBytes(t, store, blobBytes, index.PassOptions{SpanSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	var opens atomic.Int64
	opener := index.BlobOpenerFunc(func(ctx context.Context, l digest.Digest) (index.Blob, error) {
		opens.Add(1)
		return flakyBlob{indextest.MemBlob(blobBytes), &failing}, nil
	})
	r := index.NewReader(store, opener, index.ReaderOptions{})
	defer r.Close()
	failing.Store(true)
	if _, err := r.ReadAt(context.Background(), d, make([]byte, 100), 1_000_000); err == nil {
		t.Fatal("read through a failing blob succeeded")
	}
	failing.Store(false)
	buf := make([]byte, 100)
	if _, err := r.ReadAt(context.Background(), d, buf, 1_000_000); err != nil {
		t.Fatalf("read after the blob recovered: %v", err)
	}
	if !bytes.Equal(buf, raw[1_000_000:1_000_100]) {
		t.Error("wrong bytes after the reopen")
	}
	if n := opens.Load(); n != 2 {
		t.Errorf("%d opens; want a second one after the failure", n)
	}
}

// Release closes a layer's blob; a later read opens it again.
func TestReaderRelease(t *testing.T) {
	store, a, _, blobs := indexTwoLayers(t)
	var closed atomic.Int64
	opener := index.BlobOpenerFunc(func(ctx context.Context, d digest.Digest) (index.Blob, error) {
		b, err := blobs.OpenLayer(ctx, d)
		return closeCounter{b, &closed}, err
	})
	r := index.NewReader(store, opener, index.ReaderOptions{})
	defer r.Close()
	if _, err := r.ReadAt(context.Background(), a, make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	if got := r.OpenLayers(); len(got) != 1 || got[0] != a {
		t.Fatalf("open layers %v; want %s", got, a)
	}
	if err := r.Release(a); err != nil {
		t.Fatal(err)
	}
	if closed.Load() != 1 || len(r.OpenLayers()) != 0 {
		t.Fatalf("after Release: %d closes, open %v", closed.Load(), r.OpenLayers())
	}
	if _, err := r.ReadAt(context.Background(), a, make([]byte, 10), 0); err != nil && err != io.EOF {
		t.Fatalf("read after Release: %v", err)
	}
}

type closeCounter struct {
	index.Blob
	n *atomic.Int64
}

func (c closeCounter) Close() error { c.n.Add(1); return c.Blob.Close() }

// A blob that changed after indexing is not served, and the damage is
// reported to OnCorrupt with the layer.
func TestReaderRejectsChangedBlob(t *testing.T) {
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(1, 100_000)}})
	store := memstore.New()
	d, _, err := indexBytes(t, store, raw, index.PassOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Clone(raw)
	changed[2000] ^= 0xff
	var reported []digest.Digest
	var mu sync.Mutex
	r := index.NewReader(store, indextest.MemBlobs{d: changed}, index.ReaderOptions{OnCorrupt: func(l digest.Digest, err error) {
		mu.Lock()
		defer mu.Unlock()
		reported = append(reported, l)
	}})
	defer r.Close()
	if _, err := r.ReadAt(context.Background(), d, make([]byte, 10), 1024); !errors.Is(err, index.ErrSpanCorrupt) || !strings.Contains(err.Error(), d.String()) {
		t.Fatalf("read of a changed blob: %v; want ErrSpanCorrupt naming the layer", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || reported[0] != d {
		t.Errorf("OnCorrupt heard %v; want %s once", reported, d)
	}
}

// sizedBlob is a blob that asks for reads of a given size, as a registry's
// does, and records the reads it gets.
type sizedBlob struct {
	index.Blob
	size  int
	mu    sync.Mutex
	reads []int
}

func (b *sizedBlob) ReadSize() int { return b.size }

func (b *sizedBlob) ReadAt(p []byte, off int64) (int, error) {
	b.mu.Lock()
	b.reads = append(b.reads, len(p))
	b.mu.Unlock()
	return b.Blob.ReadAt(p, off)
}

// A blob that prefers big reads gets its compressed input in pieces of
// that size, so a cold read costs one round trip.
func TestReaderHonoursReadSize(t *testing.T) {
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(5, 4_000_000)}})
	blobBytes := compress(t, gzipOne, raw)
	store := memstore.New()
	d, _, err := indexBytes(t, store, blobBytes, index.PassOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := &sizedBlob{Blob: indextest.MemBlob(blobBytes), size: 256 << 10}
	r := index.NewReader(store, index.BlobOpenerFunc(func(context.Context, digest.Digest) (index.Blob, error) { return b, nil }), index.ReaderOptions{})
	defer r.Close()
	buf := make([]byte, 4096)
	if _, err := r.ReadAt(context.Background(), d, buf, 2_500_000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, raw[2_500_000:2_504_096]) {
		t.Fatal("wrong bytes")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Max(b.reads) != 256<<10 {
		t.Errorf("reads of %v bytes; want pieces of 256 KiB", b.reads)
	}
}
