package ostree

import (
	"archive/tar"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/test/procself"
)

func openFiles(t *testing.T) []string {
	t.Helper()
	files, err := procself.OpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func rssKiB(t *testing.T) int {
	t.Helper()
	n, err := procself.RSSKiB()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHundredImagesKeepDescriptorsAndMemoryFlat runs one materializer, as
// the daemon does, through 100 images that each replace the previous one
// in a stream, with a GC after each, and checks that open descriptors and
// RSS do not grow.
func TestHundredImagesKeepDescriptorsAndMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("commits 110 images")
	}
	f := newFixture(t)
	base := f.layer(baseFiles)
	round := func(i int) {
		body := strings.Repeat(fmt.Sprintf("image %d\n", i), 1+i%3*40000) // some streamed, some inline
		top := f.layer([]layerFile{{name: "etc/version", typ: tar.TypeReg, mode: 0o644, body: body}})
		d, view := f.image("image-"+strconv.Itoa(i), base, top)
		f.wants.mu.Lock()
		f.wants.images = map[digest.Digest]bool{d: true}
		f.wants.tags = map[string]bool{"ns/s/latest": true}
		f.wants.mu.Unlock()
		f.m.SetStream("ns", "s", map[string]digest.Digest{"latest": d}, map[digest.Digest]*index.View{d: view})
		f.waitDone(d)
		if _, err := f.m.GC(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		if err := f.store.DeleteLayer(context.Background(), top); err != nil {
			t.Fatal(err)
		}
		delete(f.blobs, top)
		f.reader.Release(top)
	}
	for i := range 10 {
		round(i)
	}
	runtime.GC()
	fds, rss := openFiles(t), rssKiB(t)
	for i := 10; i < 110; i++ {
		round(i)
	}
	runtime.GC()
	t.Logf("after 10 images: %d descriptors, %d KiB RSS; after 110: %d, %d KiB", len(fds), rss, len(openFiles(t)), rssKiB(t))
	if got := openFiles(t); len(got) > len(fds)+2 {
		t.Errorf("open descriptors grew from %d to %d over 100 images:\nbefore: %s\nafter: %s",
			len(fds), len(got), strings.Join(fds, ", "), strings.Join(got, ", "))
	}
	if got := rssKiB(t); got > rss+24<<10 {
		t.Errorf("RSS grew from %d KiB to %d KiB over 100 images", rss, got)
	}
	refs, err := f.m.repo.ListRefs("explodefs")
	if err != nil || len(refs) != 2 {
		t.Errorf("refs after 110 images = %v, %v; want the last image's and its tag's", refs, err)
	}
	f.ostree("fsck")
}
