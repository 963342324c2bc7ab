package ostree

import (
	"archive/tar"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// commitLog records what ObserveCommit hears.
type commitLog struct {
	mu   sync.Mutex
	took []time.Duration
	errs []error
}

func (c *commitLog) ObserveCommit(took time.Duration, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.took, c.errs = append(c.took, took), append(c.errs, err)
}

func (c *commitLog) outcomes() (ok, failed int, took []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, err := range c.errs {
		if err == nil {
			ok++
		} else {
			failed++
		}
	}
	return ok, failed, append([]time.Duration(nil), c.took...)
}

// Every finished commit is reported with its outcome, and the queue
// counts the images still waiting: a failed one waits for its retry.
func TestMaterializeObservesCommitsAndQueue(t *testing.T) {
	log := &commitLog{}
	f := newFixtureWith(t, Options{Commits: log})
	good := f.layer([]layerFile{{name: "ok.txt", typ: tar.TypeReg, mode: 0o644, body: "fine"}})
	gone := f.layer([]layerFile{{name: "lost.txt", typ: tar.TypeReg, mode: 0o644, body: "its blob goes away"}})
	delete(f.blobs, gone) // the commit cannot read it
	goodImage, goodView := f.image("good", good)
	badImage, badView := f.image("bad", gone)
	f.wants.images[goodImage], f.wants.images[badImage] = true, true
	f.m.SetStream("ns", "s", map[string]digest.Digest{"good": goodImage, "bad": badImage},
		map[digest.Digest]*index.View{goodImage: goodView, badImage: badView})
	f.waitDone(goodImage)

	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, failed, took := log.outcomes()
		if ok == 1 && failed == 1 && f.m.Queued() == 1 {
			for _, d := range took {
				if d <= 0 {
					t.Errorf("a commit took %v", d)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observed %d commits and %d failures with %d images queued; want 1, 1 and the failed one queued for its retry",
				ok, failed, f.m.Queued())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// With the worker stopped, new images wait in the queue.
	f.stop()
	more, moreView := f.image("more", good)
	other, otherView := f.image("other", good)
	f.m.SetStream("ns", "t", map[string]digest.Digest{"a": more, "b": other},
		map[digest.Digest]*index.View{more: moreView, other: otherView})
	if got := f.m.Queued(); got != 3 {
		t.Errorf("queued = %d, want the failed image and two new ones", got)
	}
	if ok, failed, _ := log.outcomes(); ok != 1 || failed != 1 {
		t.Errorf("observed %d commits and %d failures after the worker stopped, want 1 and 1", ok, failed)
	}
}
