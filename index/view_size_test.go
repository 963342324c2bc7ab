package index_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
)

// Views of every shown image stay in memory, so their size per entry is
// what a daemon with big images costs (issue 5 point 6). The packed form
// takes about 64 bytes plus the name per inode; the bound leaves room for
// the runtime's size classes, and the form it replaced took over 200.
func TestViewBytesPerEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a view of 200,000 entries")
	}
	const dirs, files = 200, 1000
	ctx := context.Background()
	store := memstore.New()
	d := digest.FromString(t.Name())
	w, err := store.NewLayerWriter(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	for i := range dirs {
		if err := w.AddEntry(index.Entry{Path: fmt.Sprintf("dir%04d", i), Type: index.TypeDir, Mode: 0o755}); err != nil {
			t.Fatal(err)
		}
		for j := range files {
			e := index.Entry{Path: fmt.Sprintf("dir%04d/file%04d", i, j), Type: index.TypeRegular, Mode: 0o644, Size: 10, Offset: int64(j) << 10}
			if err := w.AddEntry(e); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Commit(index.LayerInfo{WhiteoutFree: true}); err != nil {
		t.Fatal(err)
	}

	v, err := index.BuildView(ctx, store, []digest.Digest{d})
	if err != nil {
		t.Fatal(err)
	}
	inodes := v.Len()
	// What the view holds is what goes when it goes; measuring it that
	// way leaves out whatever building it left behind.
	with := heapInUse()
	runtime.KeepAlive(v)
	v = nil
	without := heapInUse()
	runtime.KeepAlive(store)
	perEntry := float64(with-without) / float64(inodes)
	t.Logf("%d inodes, %.1f bytes each with its name", inodes, perEntry)
	// Names here are 7 and 8 bytes.
	if perEntry > 90 {
		t.Errorf("view takes %.1f bytes per inode, want at most 90", perEntry)
	}
}

// heapInUse returns the bytes of live heap objects after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
