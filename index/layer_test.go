package index_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// tarFile is one entry of a test layer.
type tarFile struct {
	hdr  tar.Header
	data []byte
}

func buildTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if h.Typeflag == tar.TypeReg || h.Typeflag == 0 {
			h.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("writing header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type compression string

const (
	gzipOne   compression = "gzip"
	gzipMulti compression = "gzip-multi"
	plain     compression = "tar"
	zstdC     compression = "zstd"
)

func compress(t testing.TB, c compression, raw []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch c {
	case gzipOne:
		zw, _ := gzip.NewWriterLevel(&out, gzip.DefaultCompression)
		zw.Write(raw)
		zw.Close()
	case gzipMulti:
		for len(raw) > 0 {
			n := min(len(raw), 300_000)
			zw := gzip.NewWriter(&out)
			zw.Write(raw[:n])
			zw.Close()
			raw = raw[n:]
		}
	case plain:
		out.Write(raw)
	case zstdC:
		zw, _ := zstd.NewWriter(&out)
		zw.Write(raw)
		zw.Close()
	}
	return out.Bytes()
}

// textish returns n compressible bytes.
func textish(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"layer ", "image ", "gzip ", "index ", "span ", "window ", "\n", "explode ", "tree "}
	var b bytes.Buffer
	for b.Len() < n {
		if r.IntN(10) == 0 {
			fmt.Fprintf(&b, "%x", r.Uint64())
		}
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

var mtime = time.Date(2024, 3, 4, 5, 6, 7, 123456789, time.UTC)

// sampleLayer exercises every header format the pass must read.
func sampleLayer() []tarFile {
	long := "very/" + string(bytes.Repeat([]byte("long-directory-name/"), 8)) + "file.txt"
	return []tarFile{
		{hdr: tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "./etc/hosts", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}, data: []byte("127.0.0.1 localhost\n")},
		{hdr: tar.Header{Name: "bin/ping", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 0, Gid: 0, ModTime: mtime, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "SCHILY.xattr.user.k": "v"}},
			data: random(1, 70_000)},
		{hdr: tar.Header{Name: "big/text", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 100000, ModTime: mtime, Format: tar.FormatPAX}, data: textish(2, 3_500_000)},
		{hdr: tar.Header{Name: "big/random", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatUSTAR}, data: random(3, 1_300_000)},
		{hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatGNU}, data: []byte("gnu long name")},
		{hdr: tar.Header{Name: "links/hard", Typeflag: tar.TypeLink, Linkname: "./etc/hosts", ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "links/soft", Typeflag: tar.TypeSymlink, Linkname: "../etc/hosts", ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "links/long-target", Typeflag: tar.TypeSymlink, Linkname: long, ModTime: mtime, Format: tar.FormatGNU}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0, ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "héllo wörld 日本語.txt", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}, data: []byte("utf-8")},
		{hdr: tar.Header{Name: "empty", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "/abs/file", Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}, data: []byte("absolute names are made relative")},
	}
}

func indexBytes(t testing.TB, store index.Store, layer []byte, opts index.PassOptions) (digest.Digest, index.LayerInfo, error) {
	t.Helper()
	d := digest.FromBytes(layer)
	info, err := index.IndexLayer(context.Background(), store, indextest.MemBlob(layer), d, opts)
	return d, info, err
}

// indexed is a layer indexed into a memstore, with a reader over it.
type indexed struct {
	store    *memstore.Store
	digest   digest.Digest
	info     index.LayerInfo
	reader   *index.Reader
	blobSize int
}

// indexLayer compresses raw with c, runs the pass, and opens a reader with
// a span cache of cacheBytes. A failed pass fails the test.
func indexLayer(t *testing.T, c compression, raw []byte, spanSize, cacheBytes int64) indexed {
	t.Helper()
	store := memstore.New()
	cacheDir := t.TempDir()
	blobBytes := compress(t, c, raw)
	d, info, err := indexBytes(t, store, blobBytes, index.PassOptions{SpanSize: spanSize, CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	reader := index.NewReader(store, indextest.MemBlobs{d: blobBytes}, index.ReaderOptions{CacheDir: cacheDir, CacheBytes: cacheBytes})
	t.Cleanup(func() { reader.Close() })
	return indexed{store: store, digest: d, info: info, reader: reader, blobSize: len(blobBytes)}
}

func TestLayerPassAllCompressions(t *testing.T) {
	files := sampleLayer()
	raw := buildTar(t, files)
	for _, c := range []compression{gzipOne, gzipMulti, plain, zstdC} {
		t.Run(string(c), func(t *testing.T) {
			ctx := context.Background()
			l := indexLayer(t, c, raw, 256<<10, 1<<20)
			d, info, reader := l.digest, l.info, l.reader
			if info.UncompressedSize != int64(len(raw)) || info.CompressedSize != int64(l.blobSize) || info.Entries != int64(len(files)) {
				t.Errorf("info = %+v; want %d uncompressed, %d compressed, %d entries", info, len(raw), l.blobSize, len(files))
			}
			if info.Spans < int64(len(raw)/(256<<10)) {
				t.Errorf("%d spans for %d bytes at 256 KiB spacing", info.Spans, len(raw))
			}
			var got []index.Entry
			if err := l.store.Entries(ctx, d, func(e index.Entry) error { got = append(got, e); return nil }); err != nil {
				t.Fatal(err)
			}
			for i, e := range got {
				f := files[i]
				wantPath, _ := index.CleanEntryPath(f.hdr.Name)
				if e.Path != wantPath || e.Mode != uint32(f.hdr.Mode) || e.UID != uint32(f.hdr.Uid) || e.GID != uint32(f.hdr.Gid) {
					t.Errorf("entry %d = %q mode %o uid %d gid %d; want %q %o %d %d", i, e.Path, e.Mode, e.UID, e.GID, wantPath, f.hdr.Mode, f.hdr.Uid, f.hdr.Gid)
				}
				if f.hdr.Format == tar.FormatPAX && !e.ModTime.Equal(f.hdr.ModTime) {
					t.Errorf("%s: mtime %v, want %v", e.Path, e.ModTime, f.hdr.ModTime)
				}
				if e.Type != index.TypeRegular {
					continue
				}
				buf := make([]byte, e.Size)
				if _, err := reader.ReadAt(ctx, d, buf, e.Offset); err != nil && err != io.EOF {
					t.Fatalf("%s: reading %d bytes at %d: %v", e.Path, e.Size, e.Offset, err)
				}
				if !bytes.Equal(buf, f.data) {
					t.Errorf("%s: content differs from the tar", e.Path)
				}
			}
			ping := got[2]
			if len(ping.Xattrs) != 2 || ping.Xattrs[0].Name != "security.capability" || len(ping.Xattrs[0].Value) != 20 {
				t.Errorf("bin/ping xattrs = %+v", ping.Xattrs)
			}
			if hl := got[6]; hl.Type != index.TypeHardlink || hl.Linkname != "etc/hosts" {
				t.Errorf("hard link = %+v", hl)
			}
			if dev := got[9]; dev.Type != index.TypeChar || dev.DevMajor != 1 || dev.DevMinor != 3 {
				t.Errorf("char device = %+v", dev)
			}
		})
	}
}

// Random reads across span boundaries must return exactly the tar's bytes.
func TestReaderRandomAccess(t *testing.T) {
	raw := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(7, 5_000_000)},
		{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}, data: random(8, 2_000_000)},
	})
	for _, c := range []compression{gzipOne, gzipMulti, plain, zstdC} {
		t.Run(string(c), func(t *testing.T) {
			ctx := context.Background()
			l := indexLayer(t, c, raw, 128<<10, 512<<10)
			d, reader := l.digest, l.reader
			r := rand.New(rand.NewPCG(9, 9))
			for range 200 {
				off := r.Int64N(int64(len(raw)))
				n := r.IntN(300_000)
				buf := make([]byte, n)
				got, err := reader.ReadAt(ctx, d, buf, off)
				want := raw[off:min(off+int64(n), int64(len(raw)))]
				if got != len(want) || !bytes.Equal(buf[:got], want) {
					t.Fatalf("ReadAt(%d, %d) = %d bytes, err %v; want %d matching bytes", off, n, got, err, len(want))
				}
				if off+int64(n) > int64(len(raw)) && err != io.EOF {
					t.Fatalf("ReadAt past the end: err %v, want io.EOF", err)
				}
			}
		})
	}
}

// Concurrent sequential and random readers share spans, prefetch and a
// cache too small to hold them all; every byte must still be right.
func TestReaderConcurrentReaders(t *testing.T) {
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(11, 6_000_000)}})
	ctx := context.Background()
	l := indexLayer(t, gzipOne, raw, 256<<10, 700<<10)
	d, reader := l.digest, l.reader
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(w), 3))
			buf := make([]byte, 128<<10)
			off := int64(0)
			for range 150 {
				if w%2 == 1 {
					off = r.Int64N(int64(len(raw)))
				}
				n, err := reader.ReadAt(ctx, d, buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], raw[off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: wrong bytes at %d", w, off)
					return
				}
				off = (off + int64(n)) % int64(len(raw))
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
