package ostree

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// openFiles lists what the process's descriptors point at, at the
// quietest of a few looks: the worker opens directories of refs/ for a
// moment when it brings refs up to date after each change.
func openFiles(t *testing.T) []string {
	t.Helper()
	var least []string
	for i := range 20 {
		if got := lookAtFiles(t); i == 0 || len(got) < len(least) {
			least = got
		}
		time.Sleep(10 * time.Millisecond)
	}
	return least
}

func lookAtFiles(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink("/proc/self/fd/" + e.Name())
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}

func rssKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
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
		if _, err := f.m.GC(context.Background()); err != nil {
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
