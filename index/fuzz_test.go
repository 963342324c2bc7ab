package index_test

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// FuzzLayerPass feeds arbitrary bytes to the layer pass as a layer blob
// (with its true digest, so the bytes themselves are on trial). The pass
// must never panic or hang; when it accepts a layer, the merged view must
// build or refuse cleanly, and every regular file must read back exactly
// what archive/tar reads from the same stream.
func FuzzLayerPass(f *testing.F) {
	small := []tarFile{
		{hdr: tar.Header{Name: "a/b", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.user.x": "1"}}, data: []byte("hello")},
		{hdr: tar.Header{Name: "a/l", Typeflag: tar.TypeLink, Linkname: "a/b"}},
		{hdr: tar.Header{Name: "a/.wh.z", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "a"}},
	}
	raw := buildTar(f, small)
	for _, c := range []compression{gzipOne, gzipMulti, plain, zstdC} {
		f.Add(compress(f, c, raw))
	}
	f.Add(compress(f, gzipOne, raw)[:40])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blobBytes []byte) {
		ctx := context.Background()
		store := memstore.New()
		cacheDir := t.TempDir()
		d := digest.FromBytes(blobBytes)
		info, err := index.IndexLayer(ctx, store, indextest.MemBlob(blobBytes), d, index.PassOptions{SpanSize: 4096, CacheDir: cacheDir})
		if err != nil {
			var le *index.LayerError
			var ee *index.EntryError
			if !errors.As(err, &le) && !errors.As(err, &ee) {
				t.Fatalf("error %v names no layer", err)
			}
			return
		}
		if _, err := index.BuildView(ctx, store, []digest.Digest{d}); err != nil {
			var ee *index.EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("view error %v names no entry", err)
			}
		}
		reader := index.NewReader(store, indextest.MemBlobs{d: blobBytes}, index.ReaderOptions{CacheDir: cacheDir, CacheBytes: 1 << 20})
		defer reader.Close()
		var entries []index.Entry
		if err := store.Entries(ctx, d, func(e index.Entry) error { entries = append(entries, e); return nil }); err != nil {
			t.Fatal(err)
		}
		if int64(len(entries)) != info.Entries {
			t.Fatalf("%d entries stored, info says %d", len(entries), info.Entries)
		}
		for _, e := range entries {
			if e.Type != index.TypeRegular || e.Size > 1<<20 {
				continue
			}
			if e.Offset+e.Size > info.UncompressedSize {
				t.Fatalf("%q: data [%d,+%d) beyond stream of %d", e.Path, e.Offset, e.Size, info.UncompressedSize)
			}
			buf := make([]byte, e.Size)
			if _, err := reader.ReadAt(ctx, d, buf, e.Offset); err != nil && !errors.Is(err, io.EOF) {
				t.Fatalf("%q: %v", e.Path, err)
			}
		}
	})
}
