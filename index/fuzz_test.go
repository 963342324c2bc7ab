package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// FuzzLayerPass feeds arbitrary bytes to the layer pass as a layer blob
// (with its true digest, so the bytes themselves are on trial). The pass
// must never panic or hang; when it accepts a layer, the merged view must
// build or refuse cleanly, no recorded path may have a ".wh." directory,
// and every regular file must read through index.ReadFile exactly as
// archive/tar reads that entry from the same stream, sparse files
// expanded.
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
	// PAX-heavy: every xattr encoding, an empty value, long names and
	// links, a global header, and names below a ".wh." directory.
	long := strings.Repeat("long-name/", 20) + "f"
	f.Add(buildTar(f, []tarFile{
		{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "global", PAXRecords: map[string]string{"comment": "g"}, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o4755, Format: tar.FormatPAX, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.empty":          "",
			"LIBARCHIVE.xattr.user.a%20b":      "dmFsdWU=",
			"SCHILY.xattr.user.both":           "s",
			"LIBARCHIVE.xattr.user.both":       "bA==",
		}}, data: []byte("pax data")},
		{hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU}, data: []byte("gnu long")},
		{hdr: tar.Header{Name: "ll", Typeflag: tar.TypeSymlink, Linkname: long + "/target", Format: tar.FormatGNU}},
		{hdr: tar.Header{Name: ".wh.d/child", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatPAX}, data: []byte("ignored")},
		{hdr: tar.Header{Name: "after", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatUSTAR}, data: []byte("after")},
	}))
	// Sparse files in every format, a few of them with a dense file
	// behind, which a wrong map would read.
	for _, seed := range [][]byte{
		sparseTar01("f", 100, "2", "0,10,50,10", 20),
		sparseTar01("f", 100, "0", "", 0),
		sparseTar10("f", 100, "2\n0\n10\n50\n10\n", 20),
		sparseTar10("f", 4096, "3\n0\n1\n1000\n1\n4095\n1\n", 3),
		oldGNUTar("f", 100, [][2]int64{{0, 10}, {50, 10}}, 20),
		oldGNUTar("f", 1<<20, manyPairs(30), 30),
	} {
		f.Add(seed)
		f.Add(compress(f, gzipOne, seed))
	}
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
			if dir, _ := splitDir(e.Path); strings.Contains("/"+dir, "/.wh.") {
				t.Fatalf("%q recorded below a .wh. directory", e.Path)
			}
			if e.Type == index.TypeRegular && e.Sparse == nil && e.Offset+e.Size > info.UncompressedSize {
				t.Fatalf("%q: data [%d,+%d) beyond stream of %d", e.Path, e.Offset, e.Size, info.UncompressedSize)
			}
			for _, fr := range e.Sparse {
				if fr.Data+fr.Length > info.UncompressedSize {
					t.Fatalf("%q: fragment %+v beyond stream of %d", e.Path, fr, info.UncompressedSize)
				}
			}
		}
		if info.UncompressedSize > 8<<20 {
			return
		}
		stream := make([]byte, info.UncompressedSize)
		if n, err := reader.ReadAt(ctx, d, stream, 0); n != len(stream) {
			t.Fatalf("reading the stream: %d of %d bytes: %v", n, len(stream), err)
		}
		compareWithArchiveTar(t, reader, d, stream, entries)
	})
}

// compareWithArchiveTar walks the stream with archive/tar beside the
// recorded entries and checks that each regular file reads the same both
// ways.
func compareWithArchiveTar(t *testing.T, r index.LayerReader, d digest.Digest, stream []byte, entries []index.Entry) {
	ctx := context.Background()
	tr := tar.NewReader(bytes.NewReader(stream))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the pass accepted a stream archive/tar refuses: %v", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		p, err := index.CleanEntryPath(h.Name)
		if err != nil {
			t.Fatalf("the pass accepted %q: %v", h.Name, err)
		}
		if dir, _ := splitDir(p); strings.Contains("/"+dir, "/.wh.") {
			continue
		}
		if len(entries) == 0 {
			t.Fatalf("archive/tar has %q, the pass recorded nothing more", p)
		}
		e := entries[0]
		entries = entries[1:]
		if e.Path != p {
			t.Fatalf("archive/tar has %q where the pass recorded %q", p, e.Path)
		}
		if e.Type != index.TypeRegular || e.Size > 1<<20 {
			continue
		}
		want, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%q: archive/tar cannot read what the pass accepted: %v", p, err)
		}
		got := make([]byte, e.Size)
		in := &index.Inode{Type: index.TypeRegular, Size: e.Size, Offset: e.Offset, Sparse: e.Sparse}
		if n, err := index.ReadFile(ctx, r, d, in, got, 0); n != len(got) || (err != nil && err != io.EOF) {
			t.Fatalf("%q: read %d of %d bytes: %v", p, n, len(got), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%q: %d bytes differ from archive/tar's %d", p, len(got), len(want))
		}
	}
	if len(entries) != 0 {
		t.Fatalf("the pass recorded %q, which archive/tar does not have", entries[0].Path)
	}
}

func splitDir(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	return p[:i+1], p[i+1:]
}

// manyPairs is a GNU map of n one-byte fragments, enough to need
// extension blocks.
func manyPairs(n int) [][2]int64 {
	out := make([][2]int64, n)
	for i := range out {
		out[i] = [2]int64{int64(i) * 1000, 1}
	}
	return out
}
