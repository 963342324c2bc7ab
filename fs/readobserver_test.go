package fs

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// readTimes records what ObserveRead hears.
type readTimes struct {
	mu   sync.Mutex
	took []time.Duration
}

func (r *readTimes) ObserveRead(took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.took = append(r.took, took)
}

func (r *readTimes) get() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.took...)
}

// slowReader makes every layer read take at least delay.
type slowReader struct {
	ContentReader
	delay time.Duration
}

func (r slowReader) ReadAt(ctx context.Context, layer digest.Digest, p []byte, off int64) (int, error) {
	time.Sleep(r.delay)
	return r.ContentReader.ReadAt(ctx, layer, p, off)
}

// Every READ the daemon answers is timed, with the time the layer read
// took; a read the page cache answers never reaches the observer.
func TestReadObserverTimesLazyReads(t *testing.T) {
	requireFUSE(t)
	const delay = 30 * time.Millisecond
	im := newTestImages(t)
	times := &readTimes{}
	opts := DefaultOptions()
	opts.Logger, opts.Reads = testLogger(t), times
	root := NewRoot(slowReader{im.reader, delay}, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ := mountForTest(t, root, opts)
	passwd := filepath.Join(mnt, "ns", "app", imageDirName(im.a), "etc", "passwd")

	if got, err := os.ReadFile(passwd); err != nil || string(got) != passwdContent {
		t.Fatalf("reading etc/passwd: %q, %v", got, err)
	}
	took := times.get()
	if len(took) == 0 {
		t.Fatal("a READ the daemon answered was not observed")
	}
	if reads := root.Stats().Reads; uint64(len(took)) != reads {
		t.Errorf("%d reads observed, the mount answered %d", len(took), reads)
	}
	for _, d := range took {
		if d < delay || d > time.Minute {
			t.Errorf("a read of a layer that takes %v was observed as %v", delay, d)
		}
	}
	// Again: the kernel keeps the file's pages, so the daemon hears nothing.
	if _, err := os.ReadFile(passwd); err != nil {
		t.Fatal(err)
	}
	if again := times.get(); len(again) != len(took) {
		t.Errorf("a read served from the page cache was observed: %d observations, had %d", len(again), len(took))
	}
}
