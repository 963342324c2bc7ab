package index_test

import (
	"archive/tar"
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
)

// An entry below a directory whose name starts with ".wh." is left out
// and counted: no image filesystem can hold such a directory. Final
// ".wh." names stay whiteouts and opaque markers.
func TestPassIgnoresEntriesBelowWhiteoutNames(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	lower := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: "a/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "a/gone", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("lower")},
		{hdr: tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "x/old", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("hidden by .wh.x")},
	})
	upper := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: ".wh.x/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: ".wh.x/child", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("would make .wh.x a directory")},
		{hdr: tar.Header{Name: "a/.wh.y/deep/z", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("z")},
		{hdr: tar.Header{Name: "a/.wh..wh..opq/f", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("f")},
		{hdr: tar.Header{Name: "a/.wh.gone", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "a/kept", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("kept")},
	})
	var ignored atomic.Int64
	lowerD, _, err := indexBytes(t, store, lower, index.PassOptions{Ignored: &ignored})
	if err != nil {
		t.Fatal(err)
	}
	upperD, info, err := indexBytes(t, store, upper, index.PassOptions{Ignored: &ignored})
	if err != nil {
		t.Fatal(err)
	}
	if got := ignored.Load(); got != 3 {
		t.Errorf("%d entries counted as ignored, want 3", got)
	}
	var recorded []string
	if err := store.Entries(ctx, upperD, func(e index.Entry) error { recorded = append(recorded, e.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := ".wh.x a/.wh.gone a/kept"; strings.Join(recorded, " ") != want || info.Entries != 3 {
		t.Errorf("recorded %q (%d entries), want %q", recorded, info.Entries, want)
	}

	v, err := index.BuildView(ctx, store, []digest.Digest{lowerD, upperD})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	var walk func(ino index.Ino, dir string)
	walk = func(ino index.Ino, dir string) {
		for _, d := range v.ReadDir(ino) {
			p := dir + d.Name
			seen = append(seen, p)
			if strings.HasPrefix(d.Name, ".wh.") {
				t.Errorf("%s is visible", p)
			}
			walk(d.Ino, p+"/")
		}
	}
	walk(index.RootIno, "")
	if want := "a a/kept"; strings.Join(seen, " ") != want {
		t.Errorf("view holds %q, want %q", seen, want)
	}

	// A hard link to something below such a directory finds nothing.
	linker := buildTar(t, []tarFile{
		{hdr: tar.Header{Name: ".wh.d/t", Typeflag: tar.TypeReg, Mode: 0o644}, data: []byte("t")},
		{hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: ".wh.d/t"}},
	})
	linkD, _, err := indexBytes(t, store, linker, index.PassOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := index.BuildView(ctx, store, []digest.Digest{linkD}); err == nil || !strings.Contains(err.Error(), `"l"`) {
		t.Errorf("view with a hard link into an ignored entry: %v, want an error naming l", err)
	}
}
