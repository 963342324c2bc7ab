package badgerstore_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

// mountTmpfs mounts a tmpfs of the given size on a new directory. It needs
// root; without it the test is skipped, or fails under CI=true, where a
// skip would hide that the disk-full behaviour was never tried.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "mounting a small tmpfs for a full disk needs root"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mounting a %s tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillTo grows the filler file until the filesystem has about free bytes
// left.
func fillTo(t *testing.T, filler *os.File, free int64) {
	t.Helper()
	grow := freeBytes(t, filepath.Dir(filler.Name())) - free
	if grow <= 0 {
		return
	}
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for ; grow > 0; grow -= int64(len(chunk)) {
		if _, err := filler.Write(chunk[:min(grow, int64(len(chunk)))]); err != nil {
			t.Fatalf("filling the disk: %v", err)
		}
	}
}

// manyEntriesLayer is a gzip layer of n tiny files: few bytes of blob, and
// about 160 bytes of index records per file.
func manyEntriesLayer(t *testing.T, seed, n int) []byte {
	t.Helper()
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	tw := tar.NewWriter(zw)
	for i := range n {
		data := []byte(fmt.Sprintf("layer %d file %d\n", seed, i))
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%03d/f%06d", i%500, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return blob.Bytes()
}

// zerosZstdLayer is a zstd layer of one file of n zeros: a small blob whose
// decompressed copy takes n bytes of the state directory.
func zerosZstdLayer(t *testing.T, n int64) []byte {
	t.Helper()
	var blob bytes.Buffer
	zw, err := zstd.NewWriter(&blob)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: n}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(tw, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return blob.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func wantDiskFull(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded on a full disk", what)
	}
	if _, ok := err.(*index.StoreError); !ok {
		t.Errorf("%s: a %T, not a StoreError the controller retries: %v", what, err, err)
	}
	if !errors.Is(err, index.ErrStateDiskFull) || !strings.Contains(err.Error(), "disk is full") {
		t.Errorf("%s: %v; want an error that says the disk is full", what, err)
	}
}

type passResult struct {
	d   digest.Digest
	err error
}

// On a real full filesystem a pass fails with an error that says so, the
// process survives (Badger writes through memory maps, and a page fault
// on a full disk kills the process with SIGBUS), layers indexed before
// still read, and once space is freed a new pass succeeds. The store runs
// with its default options, as the daemon does.
func TestDiskFullFailsPassesAndRecovers(t *testing.T) {
	root := mountTmpfs(t, "420m")
	ctx := context.Background()
	s, err := badgerstore.Open(filepath.Join(root, "index"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cacheDir := filepath.Join(root, "cache")
	pass := func(blob []byte) passResult {
		d := digest.FromBytes(blob)
		_, err := index.IndexLayer(ctx, s, indextest.MemBlob(blob), d, index.PassOptions{CacheDir: cacheDir})
		return passResult{d, err}
	}

	var earlier []digest.Digest
	for i := range 3 {
		r := pass(manyEntriesLayer(t, i, 2000))
		if r.err != nil {
			t.Fatal(r.err)
		}
		earlier = append(earlier, r.d)
	}
	filler, err := os.Create(filepath.Join(root, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()

	// A zstd copy would leave too little room for the index.
	fillTo(t, filler, 230<<20)
	wantDiskFull(t, "zstd pass", pass(zerosZstdLayer(t, 100<<20)).err)

	// Passes run side by side and run out of room halfway through
	// recording their entries.
	fillTo(t, filler, 168<<20)
	results := make(chan passResult, 4)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() { defer wg.Done(); results <- pass(manyEntriesLayer(t, 10+i, 60000)) }()
	}
	wg.Wait()
	close(results)
	var failed []digest.Digest
	for r := range results {
		if r.err != nil {
			wantDiskFull(t, "pass with many entries", r.err)
			failed = append(failed, r.d)
		}
	}
	if len(failed) == 0 {
		t.Fatal("no pass ran out of room; the test did not fill the disk")
	}
	t.Logf("%d of 4 concurrent passes ran out of room; %d MiB free", len(failed), freeBytes(t, root)>>20)

	// No new pass starts, whatever it is.
	fillTo(t, filler, 100<<20)
	wantDiskFull(t, "gzip pass on a full disk", pass(manyEntriesLayer(t, 20, 10)).err)
	wantDiskFull(t, "zstd pass on a full disk", pass(zerosZstdLayer(t, 1<<20)).err)

	for _, d := range earlier {
		n := 0
		if err := s.Entries(ctx, d, func(index.Entry) error { n++; return nil }); err != nil || n != 2000 {
			t.Errorf("earlier layer %s on a full disk: %d entries, %v", d, n, err)
		}
	}

	if err := filler.Truncate(0); err != nil {
		t.Fatal(err)
	}
	for _, blob := range [][]byte{manyEntriesLayer(t, 10, 60000), zerosZstdLayer(t, 100<<20)} {
		r := pass(blob)
		if r.err != nil {
			t.Fatalf("pass after space was freed: %v", r.err)
		}
		if info, err := s.Layer(ctx, r.d); err != nil || info.Entries == 0 {
			t.Errorf("layer %s passed after space was freed: %+v, %v", r.d, info, err)
		}
	}
}
