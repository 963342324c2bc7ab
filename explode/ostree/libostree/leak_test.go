package libostree

import (
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/explodefs/explodefs/test/procself"
)

func openFDs(t *testing.T) int {
	t.Helper()
	files, err := procself.OpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

func rssKiB(t *testing.T) int {
	t.Helper()
	n, err := procself.RSSKiB()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRepeatedUseDoesNotLeak opens a repository, commits, lists refs,
// prunes and closes it 100 times. ostree-go grows from 8 to 460 open
// descriptors over 50 such rounds; this binding must stay flat.
func TestRepeatedUseDoesNotLeak(t *testing.T) {
	path := filepath.Join(t.TempDir(), "repo")
	round := func(i int) {
		r, err := Create(path, BareUser)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		commitSample(t, r, "round/"+strconv.Itoa(i%3))
		if _, err := r.ListRefs("round"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Prune(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // warm up caches and GLib's one-time allocations
		round(i)
	}
	runtime.GC()
	fds, rss := openFDs(t), rssKiB(t)
	for i := range 100 {
		round(i)
	}
	runtime.GC()
	if got := openFDs(t); got > fds+2 {
		t.Errorf("open descriptors grew from %d to %d over 100 rounds", fds, got)
	}
	if got := rssKiB(t); got > rss+16<<10 {
		t.Errorf("RSS grew from %d KiB to %d KiB over 100 rounds", rss, got)
	}
}
