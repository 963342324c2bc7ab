package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
	"github.com/explodefs/explodefs/test/imagegen"
)

// wantRefusedLayer checks a failure that is the layer's own fault, found
// below the tar reader: reported for the layer, not for the entry that was
// being read when it was found, and not as a failure of the state
// directory (which the controller would retry).
func wantRefusedLayer(t *testing.T, err error, target error, layer digest.Digest, words ...string) {
	t.Helper()
	wantLayerError(t, err, layer, words...)
	if !errors.Is(err, target) {
		t.Errorf("error %v does not wrap %v", err, target)
	}
	var entryErr *index.EntryError
	if errors.As(err, &entryErr) {
		t.Errorf("reported as a fault of entry %q: %v", entryErr.Path, err)
	}
	var storeErr *index.StoreError
	if errors.As(err, &storeErr) {
		t.Errorf("reported as a failure of the state directory: %v", err)
	}
}

// A zstd frame may declare any window up to 2 GiB (3.75 TB in theory) and
// the decoder keeps that much history: a blob of a few KiB costs hundreds
// of MiB per pass. The pass refuses it at the frame header.
func TestPassRefusesZstdWindowBomb(t *testing.T) {
	blob, _, err := imagegen.ZstdWindowBomb(512<<20, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	cacheDir := t.TempDir()
	store := memstore.New()
	d, _, err := indexBytes(t, store, blob, index.PassOptions{CacheDir: cacheDir})
	wantRefusedLayer(t, err, index.ErrZstdWindowTooLarge, d, "512 MiB", "8 MiB")
	if _, err := store.Layer(context.Background(), d); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("refused layer is visible: %v", err)
	}
	if left, _ := os.ReadDir(cacheDir); len(left) != 0 {
		t.Errorf("refused layer left %d files in the cache directory", len(left))
	}

	// The bound is the operator's to raise.
	if _, _, err := indexBytes(t, memstore.New(), blob, index.PassOptions{CacheDir: cacheDir, MaxZstdWindow: 512 << 20}); err != nil {
		t.Errorf("with the window allowed: %v", err)
	}
}

// Layers as real tools write them pass under the default bound.
func TestPassAcceptsCommonZstdWindows(t *testing.T) {
	raw := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "text", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(1, 1<<20)},
		{hdr: tar.Header{Name: "random", Typeflag: tar.TypeReg, Mode: 0o644}, data: random(2, 1<<20)},
	})
	blobs := map[string][]byte{}
	for name, opts := range map[string][]zstd.EOption{
		"klauspost-default": nil,
		"klauspost-best":    {zstd.WithEncoderLevel(zstd.SpeedBestCompression)},
		"klauspost-8MiB":    {zstd.WithWindowSize(8 << 20)},
	} {
		var out bytes.Buffer
		zw, err := zstd.NewWriter(&out, opts...)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(raw)
		zw.Close()
		blobs[name] = out.Bytes()
	}
	// The zstd tool, when it is installed: -19 is the highest level
	// without --ultra, and --long asks for a 128 MiB window.
	cli := map[string][]string{"zstd-19": {"-19"}, "zstd-3": {"-3"}}
	refused := map[string][]string{"zstd--long": {"-3", "--long"}, "zstd--ultra-22": {"--ultra", "-22"}}
	_, err := exec.LookPath("zstd")
	if err != nil && os.Getenv("CI") == "true" {
		t.Fatal("the zstd tool is missing (apt-get install zstd)")
	}
	if err == nil {
		for name, args := range mergeArgs(cli, refused) {
			cmd := exec.Command("zstd", append(args, "-c", "-q")...)
			cmd.Stdin = bytes.NewReader(raw)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("zstd %v: %v", args, err)
			}
			blobs[name] = out
		}
	} else {
		t.Log("zstd tool not installed; checking klauspost's encoder only")
	}
	for name, blob := range blobs {
		t.Run(name, func(t *testing.T) {
			d, info, err := indexBytes(t, memstore.New(), blob, index.PassOptions{CacheDir: t.TempDir()})
			if _, isRefused := refused[name]; isRefused {
				wantRefusedLayer(t, err, index.ErrZstdWindowTooLarge, d, "--long")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.UncompressedSize != int64(len(raw)) {
				t.Errorf("%d bytes uncompressed, want %d", info.UncompressedSize, len(raw))
			}
		})
	}
}

func mergeArgs(a, b map[string][]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// MaxLayerSize bounds the uncompressed stream of every compression, so a
// gzip bomb stops as early as a zstd one, and the zstd copy never grows
// beyond it.
func TestPassStopsAtMaxLayerSize(t *testing.T) {
	raw := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(1, 600_000)},
		{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}, data: make([]byte, 2_000_000)},
	})
	const limit = 1 << 20
	for _, c := range []compression{gzipOne, gzipMulti, plain, zstdC} {
		t.Run(string(c), func(t *testing.T) {
			blob := compress(t, c, raw)
			cacheDir := t.TempDir()
			store := memstore.New()
			d := digest.FromBytes(blob)
			var observed int64
			opts := index.WithSyncObserver(index.PassOptions{CacheDir: cacheDir, MaxLayerSize: limit}, func(step, path string) error {
				if step == "sync" {
					fi, err := os.Stat(path)
					if err == nil {
						observed = fi.Size()
					}
				}
				return nil
			})
			_, err := index.IndexLayer(context.Background(), store, sizeWatchingBlob(t, blob, cacheDir, &observed), d, opts)
			wantRefusedLayer(t, err, index.ErrLayerTooLarge, d, "1 MiB")
			if observed > limit {
				t.Errorf("the zstd copy reached %d bytes, beyond the %d limit", observed, limit)
			}
			if left, _ := os.ReadDir(cacheDir); len(left) != 0 {
				t.Errorf("refused layer left %d files in the cache directory", len(left))
			}
			if _, err := store.Layer(context.Background(), d); !errors.Is(err, index.ErrNotFound) {
				t.Errorf("refused layer is visible: %v", err)
			}
			// A layer exactly at the limit passes.
			if _, err := index.IndexLayer(context.Background(), memstore.New(), indextest.MemBlob(blob), d, index.PassOptions{CacheDir: cacheDir, MaxLayerSize: int64(len(raw))}); err != nil {
				t.Errorf("layer of exactly MaxLayerSize bytes: %v", err)
			}
		})
	}
}

// sizeWatchingBlob records, on every read of the blob, the largest size
// the zstd copy in cacheDir reached so far.
func sizeWatchingBlob(t *testing.T, b []byte, cacheDir string, largest *int64) index.Blob {
	t.Helper()
	return watchedBlob{Blob: indextest.MemBlob(b), watch: func() {
		matches, _ := filepath.Glob(filepath.Join(cacheDir, "*"))
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil && fi.Size() > *largest {
				*largest = fi.Size()
			}
		}
	}}
}

type watchedBlob struct {
	index.Blob
	watch func()
}

func (w watchedBlob) ReadAt(p []byte, off int64) (int, error) {
	w.watch()
	return w.Blob.ReadAt(p, off)
}

func TestDefaultLimits(t *testing.T) {
	if index.DefaultMaxLayerSize != 64<<30 {
		t.Errorf("DefaultMaxLayerSize = %d, want 64 GiB", index.DefaultMaxLayerSize)
	}
	if index.DefaultMaxZstdWindow < 8<<20 {
		t.Errorf("DefaultMaxZstdWindow = %d refuses what zstd -19 writes", index.DefaultMaxZstdWindow)
	}
	if !strings.Contains(index.ErrLayerTooLarge.Error(), "larger") {
		t.Errorf("ErrLayerTooLarge says %q", index.ErrLayerTooLarge)
	}
}
