package index_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
	"github.com/explodefs/explodefs/test/imagegen"
)

// requireGNUTar fails in CI, and skips elsewhere, without GNU tar: only it
// writes every sparse format.
func requireGNUTar(t *testing.T) {
	t.Helper()
	out, err := exec.Command("tar", "--version").Output()
	if err == nil && bytes.Contains(out, []byte("GNU tar")) {
		return
	}
	msg := "this test needs GNU tar (apt-get install tar)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// expandTar reads every regular file of raw with archive/tar, which
// expands sparse files: the reference the pass must agree with.
func expandTar(t testing.TB, raw []byte) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatalf("archive/tar: %v", err)
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeGNUSparse {
			continue
		}
		p, err := index.CleanEntryPath(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if files[p], err = io.ReadAll(tr); err != nil {
			t.Fatalf("archive/tar reading %s: %v", p, err)
		}
	}
}

// checkFilesRead reads every regular entry of a layer through
// index.ReadFile, whole and in random pieces, and compares with want.
// It returns how many entries were sparse with at least one hole.
func checkFilesRead(t *testing.T, store index.Store, r index.LayerReader, d digest.Digest, want map[string][]byte) int {
	t.Helper()
	ctx := context.Background()
	holey, seen := 0, 0
	rng := rand.New(rand.NewPCG(1, 2))
	err := store.Entries(ctx, d, func(e index.Entry) error {
		if e.Type != index.TypeRegular {
			return nil
		}
		seen++
		w, ok := want[e.Path]
		if !ok {
			return fmt.Errorf("%s: archive/tar has no such file", e.Path)
		}
		if e.Size != int64(len(w)) {
			return fmt.Errorf("%s: size %d, archive/tar expands it to %d", e.Path, e.Size, len(w))
		}
		if e.Sparse != nil {
			var data int64
			for _, f := range e.Sparse {
				data += f.Length
			}
			if data < e.Size {
				holey++
			}
		}
		in := &index.Inode{Type: index.TypeRegular, Size: e.Size, Offset: e.Offset, Sparse: e.Sparse}
		got := make([]byte, e.Size+10)
		n, err := index.ReadFile(ctx, r, d, in, got, 0)
		if n != len(w) || !bytes.Equal(got[:n], w) {
			return fmt.Errorf("%s: read %d bytes (%v) that differ from archive/tar's %d", e.Path, n, err, len(w))
		}
		if err != io.EOF {
			return fmt.Errorf("%s: reading past the end: %v, want io.EOF", e.Path, err)
		}
		for range 20 {
			if len(w) == 0 {
				break
			}
			off := rng.Int64N(int64(len(w)))
			piece := make([]byte, rng.IntN(200_000)+1)
			n, err := index.ReadFile(ctx, r, d, in, piece, off)
			end := min(off+int64(len(piece)), int64(len(w)))
			if int64(n) != end-off || !bytes.Equal(piece[:n], w[off:end]) {
				return fmt.Errorf("%s: %d bytes at %d: got %d bytes (%v) that differ", e.Path, len(piece), off, n, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("%d regular entries recorded, archive/tar has %d", seen, len(want))
	}
	return holey
}

// Sparse files written by GNU tar in all four formats read exactly as
// archive/tar expands them, holes as zeros, and the entries after them
// keep their own bytes.
func TestSparseFilesAllFormats(t *testing.T) {
	requireGNUTar(t)
	samples := imagegen.SparseSamples("sparse")
	wantHoley := 0
	for _, f := range samples {
		var data int
		for _, c := range f.Chunks {
			data += len(c.Data)
		}
		if int64(data) < f.Size {
			wantHoley++
		}
	}
	for _, format := range imagegen.SparseFormats() {
		raw, err := imagegen.GNUTarSparse(t.TempDir(), format, samples)
		if err != nil {
			t.Fatal(err)
		}
		want := expandTar(t, raw)
		for _, c := range []compression{gzipOne, plain} {
			t.Run(fmt.Sprintf("%s/%s", format, c), func(t *testing.T) {
				l := indexLayer(t, c, raw, 64<<10, 1<<20)
				if got := checkFilesRead(t, l.store, l.reader, l.digest, want); got != wantHoley {
					t.Errorf("%d entries recorded as sparse with holes, want %d (is the scratch filesystem sparse?)", got, wantHoley)
				}
			})
		}
	}
}

// The sparse map survives Badger's encoding.
func TestSparseFilesThroughBadger(t *testing.T) {
	requireGNUTar(t)
	raw, err := imagegen.GNUTarSparse(t.TempDir(), imagegen.SparseOldGNU, imagegen.SparseSamples("sparse"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := badgerstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	blob := compress(t, gzipOne, raw)
	d, _, err := indexBytes(t, store, blob, index.PassOptions{SpanSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	reader := index.NewReader(store, indextest.MemBlobs{d: blob}, index.ReaderOptions{CacheBytes: 1 << 20})
	defer reader.Close()
	if got := checkFilesRead(t, store, reader, d, expandTar(t, raw)); got == 0 {
		t.Error("no sparse entry with holes came back from Badger")
	}
}

func TestEntrySparseEncoding(t *testing.T) {
	base := index.Entry{Path: "f", Type: index.TypeRegular, Mode: 0o644, Size: 1 << 40, Offset: 1536}
	plainBytes, err := base.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, frags := range [][]index.Fragment{
		nil,
		{},
		{{Offset: 0, Length: 10, Data: 1536}},
		{{Offset: 4096, Length: 4096, Data: 1536}, {Offset: 1 << 30, Length: 1, Data: 1536 + 4096}, {Offset: 1<<40 - 5, Length: 5, Data: 1 << 20}},
	} {
		e := base
		e.Sparse = frags
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if frags == nil && len(b) != len(plainBytes) {
			t.Errorf("an entry without a map takes %d bytes, want %d", len(b), len(plainBytes))
		}
		var got index.Entry
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatalf("%v: %v", frags, err)
		}
		if (got.Sparse == nil) != (frags == nil) || len(got.Sparse) != len(frags) {
			t.Fatalf("map %v came back as %v", frags, got.Sparse)
		}
		for i := range frags {
			if got.Sparse[i] != frags[i] {
				t.Errorf("fragment %d = %+v, want %+v", i, got.Sparse[i], frags[i])
			}
		}
		// Every truncation must be refused, never misread.
		for n := range len(b) {
			var cut index.Entry
			if err := cut.UnmarshalBinary(b[:n]); err == nil {
				t.Errorf("%d of %d bytes decoded without error", n, len(b))
			}
		}
	}
	for _, bad := range [][]index.Fragment{
		{{Offset: 10, Length: 10}, {Offset: 5, Length: 1}},
		{{Offset: 0, Length: 10}, {Offset: 9, Length: 1}},
		{{Offset: 1 << 40, Length: 1}},
		{{Offset: 0, Length: -1}},
	} {
		e := base
		e.Sparse = bad
		if _, err := e.MarshalBinary(); err == nil {
			t.Errorf("map %v encoded without error", bad)
		}
	}
}

// Crafted sparse headers: each is refused with an error naming the layer,
// and (where the map itself is at fault) the entry.
func TestPassRefusesHostileSparseMaps(t *testing.T) {
	tooManyPairs := strings.Repeat("0,0,", 1<<16) + "0,1"
	for _, tc := range []struct {
		name  string
		raw   []byte
		words []string
	}{
		{"0.1 unsorted", sparseTar01("f", 100, "2", "50,10,0,10", 20), nil},
		{"0.1 overlapping", sparseTar01("f", 100, "2", "0,10,5,10", 20), nil},
		{"0.1 beyond the size", sparseTar01("f", 100, "1", "95,10", 10), nil},
		{"0.1 negative", sparseTar01("f", 100, "1", "-1,10", 10), nil},
		{"0.1 stores more than the map", sparseTar01("f", 100, "1", "0,10", 30), []string{`"f"`, "stores 30"}},
		{"0.1 stores less than the map", sparseTar01("f", 100, "1", "0,50", 30), []string{`"f"`}},
		{"0.1 too many fragments", sparseTar01("f", 100, fmt.Sprint(1<<16+1), tooManyPairs, 1), []string{`"f"`, "fragments"}},
		{"1.0 map shorter than its count", sparseTar10("f", 100, "3\n0\n10\n", 10), nil},
		{"1.0 too many fragments", sparseTar10("f", 100, fmt.Sprint(1<<16+1)+"\n"+strings.Repeat("0\n0\n", 1<<16)+"0\n1\n", 1), []string{`"f"`, "fragments"}},
		{"1.0 stores more than the map", sparseTar10("f", 100, "1\n0\n10\n", 20), []string{`"f"`, "stores 20"}},
		{"gnu unsorted", oldGNUTar("f", 100, [][2]int64{{50, 10}, {0, 10}}, 20), nil},
		{"gnu stores less than the map", oldGNUTar("f", 100, [][2]int64{{0, 10}, {50, 10}}, 10), []string{`"f"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _, err := indexBytes(t, memstore.New(), tc.raw, index.PassOptions{})
			wantLayerError(t, err, d, tc.words...)
			var le *index.LayerError
			var ee *index.EntryError
			if !errors.As(err, &le) && !errors.As(err, &ee) {
				t.Errorf("error %v is neither a LayerError nor an EntryError", err)
			}
		})
	}
	// The crafted tars are sound apart from the map: with a good map each
	// kind is served, so the refusals above are about the maps. The maps
	// are also found behind entries of every kind, whose data and padding
	// the header capture must skip exactly.
	before := buildTar(t, []tarFile{
		{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "global"}, Format: tar.FormatPAX}},
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: "odd-size"}},
		{hdr: tar.Header{Name: strings.Repeat("long/", 30) + "name", Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatGNU}, data: []byte("gnu")},
		{hdr: tar.Header{Name: "odd-size", Typeflag: tar.TypeReg, Mode: 0o644}, data: bytes.Repeat([]byte("o"), 700)},
	})
	before = before[:len(before)-1024] // no end-of-archive blocks
	for name, raw := range map[string][]byte{
		"0.1":        sparseTar01("f", 100, "2", "0,10,50,10", 20),
		"1.0":        sparseTar10("f", 100, "2\n0\n10\n50\n10\n", 20),
		"gnu":        oldGNUTar("f", 100, [][2]int64{{0, 10}, {50, 10}}, 20),
		"gnu behind": append(bytes.Clone(before), oldGNUTar("f", 100, [][2]int64{{0, 10}, {50, 10}}, 20)...),
		"1.0 behind": append(bytes.Clone(before), sparseTar10("f", 100, "2\n0\n10\n50\n10\n", 20)...),
		"gnu ext":    oldGNUTar("f", 1<<20, manyPairs(30), 30),
	} {
		t.Run("sound "+name, func(t *testing.T) {
			l := indexLayer(t, plain, raw, 64<<10, 1<<20)
			if got := checkFilesRead(t, l.store, l.reader, l.digest, expandTar(t, raw)); got != 1 {
				t.Errorf("%d holey entries, want 1", got)
			}
		})
	}
}

// rawHeader builds one tar header block; gnu selects the GNU magic.
func rawHeader(name string, typeflag byte, size int64, gnu bool) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], fmt.Sprintf("%011o\x00", 1700000000))
	b[156] = typeflag
	if gnu {
		copy(b[257:], "ustar  \x00")
	} else {
		copy(b[257:], "ustar\x0000")
	}
	return b
}

func sealHeader(b []byte) []byte {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

func paxRecords(kv ...string) []byte {
	var out []byte
	for i := 0; i+1 < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		out = append(out, fmt.Sprintf("%d%s", n, rec)...)
	}
	return out
}

// withTrailer appends a dense file after the sparse one (whose bytes a
// wrong map would show) and the end-of-archive blocks.
func withTrailer(b []byte) []byte {
	b = append(b, sealHeader(rawHeader("after", '0', 5, false))...)
	b = append(b, padBlock([]byte("after"))...)
	return append(b, make([]byte, 1024)...)
}

// sparseTar01 is a PAX 0.1 sparse file of the given logical size whose
// stored data is `stored` bytes of 'D'.
func sparseTar01(name string, size int64, numblocks, smap string, stored int) []byte {
	pax := paxRecords("GNU.sparse.major", "0", "GNU.sparse.minor", "1", "GNU.sparse.name", name,
		"GNU.sparse.realsize", fmt.Sprint(size), "GNU.sparse.numblocks", numblocks, "GNU.sparse.map", smap)
	b := sealHeader(rawHeader("PaxHeaders/"+name, 'x', int64(len(pax)), false))
	b = append(b, padBlock(pax)...)
	b = append(b, sealHeader(rawHeader("GNUSparseFile.0/"+name, '0', int64(stored), false))...)
	b = append(b, padBlock(bytes.Repeat([]byte("D"), stored))...)
	return withTrailer(b)
}

// sparseTar10 is a PAX 1.0 sparse file whose data block starts with smap.
func sparseTar10(name string, size int64, smap string, stored int) []byte {
	pax := paxRecords("GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", name,
		"GNU.sparse.realsize", fmt.Sprint(size))
	b := sealHeader(rawHeader("PaxHeaders/"+name, 'x', int64(len(pax)), false))
	b = append(b, padBlock(pax)...)
	m := padBlock([]byte(smap))
	b = append(b, sealHeader(rawHeader("GNUSparseFile.0/"+name, '0', int64(len(m)+stored), false))...)
	b = append(b, m...)
	b = append(b, padBlock(bytes.Repeat([]byte("D"), stored))...)
	return withTrailer(b)
}

// oldGNUTar is a GNU 'S' entry, with extension blocks beyond four pairs.
func oldGNUTar(name string, size int64, pairs [][2]int64, stored int) []byte {
	h := rawHeader(name, 'S', int64(stored), true)
	copy(h[483:], fmt.Sprintf("%011o\x00", size))
	var ext [][]byte
	for i, p := range pairs {
		var slot []byte
		if i < 4 {
			slot = h[386+i*24:]
		} else {
			j := (i - 4) % 21
			if j == 0 {
				if len(ext) == 0 {
					h[482] = 1
				} else {
					ext[len(ext)-1][504] = 1
				}
				ext = append(ext, make([]byte, 512))
			}
			slot = ext[len(ext)-1][j*24:]
		}
		copy(slot, fmt.Sprintf("%011o\x00%011o\x00", p[0], p[1]))
	}
	b := sealHeader(h)
	for _, e := range ext {
		b = append(b, e...)
	}
	b = append(b, padBlock(bytes.Repeat([]byte("D"), stored))...)
	return withTrailer(b)
}
