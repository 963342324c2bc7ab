package index_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// faultStore wraps a store so a test can fail span writes and see when a
// writer commits.
type faultStore struct {
	index.Store
	failSpan func(n int) error // called before span n (from 0) is added
	onCommit func()
}

func (s *faultStore) NewLayerWriter(ctx context.Context, d digest.Digest) (index.LayerWriter, error) {
	w, err := s.Store.NewLayerWriter(ctx, d)
	if err != nil {
		return nil, err
	}
	return &faultWriter{LayerWriter: w, s: s}, nil
}

type faultWriter struct {
	index.LayerWriter
	s     *faultStore
	spans int
}

func (w *faultWriter) AddSpan(sp index.Span) error {
	if w.s.failSpan != nil {
		if err := w.s.failSpan(w.spans); err != nil {
			return err
		}
	}
	w.spans++
	return w.LayerWriter.AddSpan(sp)
}

func (w *faultWriter) Commit(info index.LayerInfo) error {
	if w.s.onCommit != nil {
		w.s.onCommit()
	}
	return w.LayerWriter.Commit(info)
}

var errDiskFull = &os.PathError{Op: "write", Path: "state/000001.mem", Err: syscall.ENOSPC}

// wantDiskFull checks a failure of the state directory: retryable, said
// to be a full disk, and not blamed on the layer or one of its entries.
func wantDiskFull(t *testing.T, err error, layer digest.Digest) {
	t.Helper()
	if err == nil {
		t.Fatal("pass succeeded; want it to fail")
	}
	// The controller retries a StoreError; one wrapped in a fault of the
	// layer would fail the layer for good.
	if _, ok := err.(*index.StoreError); !ok {
		t.Errorf("a %T, not a StoreError: %v", err, err)
	}
	if !errors.Is(err, index.ErrStateDiskFull) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("error %v does not wrap ErrStateDiskFull and ENOSPC", err)
	}
	var entryErr *index.EntryError
	if errors.As(err, &entryErr) {
		t.Errorf("blamed on entry %q: %v", entryErr.Path, err)
	}
	for _, w := range []string{"disk is full", layer.String()} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func stateDirLayer(t *testing.T) []byte {
	return buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "one", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(1, 900_000)},
		{hdr: tar.Header{Name: "two", Typeflag: tar.TypeReg, Mode: 0o644}, data: random(2, 900_000)},
		{hdr: tar.Header{Name: "three", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(3, 900_000)},
	})
}

// Spans are recorded from inside the stream the tar reader reads, so a
// store that cannot record one must not make the pass blame the entry
// being read.
func TestPassReportsSpanStoreFailureAsDiskFull(t *testing.T) {
	raw := stateDirLayer(t)
	for _, c := range []compression{gzipOne, plain, zstdC} {
		t.Run(string(c), func(t *testing.T) {
			blob := compress(t, c, raw)
			d := digest.FromBytes(blob)
			store := &faultStore{Store: memstore.New(), failSpan: func(n int) error {
				if n == 1 {
					return errDiskFull
				}
				return nil
			}}
			_, err := index.IndexLayer(context.Background(), store, indextest.MemBlob(blob), d, index.PassOptions{SpanSize: 256 << 10, CacheDir: t.TempDir()})
			wantDiskFull(t, err, d)
		})
	}
}

// The zstd copy is written from inside the stream too; a full disk there
// is the state directory's fault.
func TestPassReportsZstdCopyFailureAsDiskFull(t *testing.T) {
	blob := compress(t, zstdC, stateDirLayer(t))
	d := digest.FromBytes(blob)
	cacheDir := t.TempDir()
	// os.Create follows the link, so every write of the copy fails with
	// ENOSPC, as on a full disk.
	if err := os.Symlink("/dev/full", index.CachePath(cacheDir, d)+".partial"); err != nil {
		t.Fatal(err)
	}
	_, err := index.IndexLayer(context.Background(), memstore.New(), indextest.MemBlob(blob), d, index.PassOptions{CacheDir: cacheDir})
	wantDiskFull(t, err, d)
	if !strings.Contains(err.Error(), "decompressed copy") {
		t.Errorf("error %q does not say what could not be written", err)
	}
}

// A zstd layer may be committed only once its copy is durable under its
// final name: the copy's bytes are synced, then it is renamed, then its
// directory is synced, and only then is the layer committed. A failure of
// any step leaves no committed layer and no copy.
func TestZstdCopyIsDurableBeforeCommit(t *testing.T) {
	raw := stateDirLayer(t)
	blob := compress(t, zstdC, raw)
	d := digest.FromBytes(blob)

	run := func(cacheDir string, failAt string) ([]string, index.Store, error) {
		var steps []string
		store := &faultStore{Store: memstore.New()}
		final := index.CachePath(cacheDir, d)
		store.onCommit = func() {
			fi, err := os.Stat(final)
			steps = append(steps, fmt.Sprintf("commit (copy in place: %v, %d bytes)", err == nil, sizeOf(fi)))
		}
		opts := index.WithSyncObserver(index.PassOptions{CacheDir: cacheDir}, func(step, path string) error {
			rel, _ := filepath.Rel(cacheDir, path)
			steps = append(steps, step+" "+rel)
			if step == failAt {
				return &os.PathError{Op: "fsync", Path: path, Err: syscall.EIO}
			}
			return nil
		})
		_, err := index.IndexLayer(context.Background(), store, indextest.MemBlob(blob), d, opts)
		return steps, store, err
	}

	cacheDir := t.TempDir()
	steps, _, err := run(cacheDir, "")
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(index.CachePath(cacheDir, d))
	want := []string{"sync " + name + ".partial", "rename " + name, "syncdir .", fmt.Sprintf("commit (copy in place: true, %d bytes)", len(raw))}
	if !reflect.DeepEqual(steps, want) {
		t.Errorf("steps:\n got %q\nwant %q", steps, want)
	}

	for _, failAt := range []string{"sync", "rename", "syncdir"} {
		t.Run("failing "+failAt, func(t *testing.T) {
			cacheDir := t.TempDir()
			steps, store, err := run(cacheDir, failAt)
			var storeErr *index.StoreError
			if !errors.As(err, &storeErr) || !errors.Is(err, syscall.EIO) {
				t.Errorf("pass: %v, want a StoreError wrapping the injected EIO", err)
			}
			for _, s := range steps {
				if strings.HasPrefix(s, "commit") {
					t.Errorf("committed after %s failed: %q", failAt, steps)
				}
			}
			if _, err := store.Layer(context.Background(), d); !errors.Is(err, index.ErrNotFound) {
				t.Errorf("layer visible after %s failed: %v", failAt, err)
			}
			if left, _ := os.ReadDir(cacheDir); len(left) != 0 {
				t.Errorf("%s failed and %d files were left in the cache directory", failAt, len(left))
			}
		})
	}
}

func sizeOf(fi os.FileInfo) int64 {
	if fi == nil {
		return -1
	}
	return fi.Size()
}
