package fs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// TestCatalogChurnUnderLoad moves a tag back and forth while readers go
// through it. Every read must see one image or the other, and nothing may
// deadlock between invalidations and lookups.
func TestCatalogChurnUnderLoad(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	opts := Options{Logger: testLogger(t)}
	root := NewRoot(im.reader, opts)
	both := map[digest.Digest]*index.View{im.a: im.viewA, im.b: im.viewB}
	root.SetStream("ns", "app", map[string]digest.Digest{"latest": im.a}, both)
	mnt, _ := mountForTest(t, root, opts)
	stream := filepath.Join(mnt, "ns", "app")

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				data, err := os.ReadFile(filepath.Join(stream, "latest", "etc", "os-release"))
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					errs <- err
					return
				}
				if err == nil && string(data) != osReleaseA && string(data) != osReleaseB {
					errs <- errors.New("read " + string(data))
					return
				}
				if _, err := os.ReadDir(stream); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	moves := 0
	for ctx.Err() == nil {
		target := im.a
		if moves%2 == 0 {
			target = im.b
		}
		tags := map[string]digest.Digest{"latest": target}
		if moves%7 == 0 {
			tags = nil // the tag disappears for a moment
		}
		root.SetStream("ns", "app", tags, both)
		moves++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d tag moves under load", moves)
}
