package index_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
)

func reg(p string) index.Entry {
	return index.Entry{Path: p, Type: index.TypeRegular, Mode: 0o644, Size: 1}
}
func dir(p string) index.Entry { return index.Entry{Path: p, Type: index.TypeDir, Mode: 0o755} }
func link(p, target string) index.Entry {
	return index.Entry{Path: p, Type: index.TypeHardlink, Linkname: target}
}
func sym(p, target string) index.Entry {
	return index.Entry{Path: p, Type: index.TypeSymlink, Mode: 0o777, Linkname: target}
}

// buildView stores each layer's entries and merges them.
func buildView(t *testing.T, layers ...[]index.Entry) (*index.View, []digest.Digest, error) {
	t.Helper()
	ctx := context.Background()
	store := memstore.New()
	var ds []digest.Digest
	for i, entries := range layers {
		d := digest.FromString(fmt.Sprintf("%s-%d", t.Name(), i))
		w, _ := store.NewLayerWriter(ctx, d)
		for j, e := range entries {
			e.Offset = int64(j)
			if err := w.AddEntry(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(index.LayerInfo{}); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	v, err := index.BuildView(ctx, store, ds)
	return v, ds, err
}

func mustView(t *testing.T, layers ...[]index.Entry) *index.View {
	t.Helper()
	v, _, err := buildView(t, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// paths lists every path of v with its type, depth first.
func paths(v *index.View) []string {
	var out []string
	var walk func(ino index.Ino, prefix string)
	walk = func(ino index.Ino, prefix string) {
		for _, de := range v.ReadDir(ino) {
			p := prefix + de.Name
			out = append(out, p+":"+v.Inode(de.Ino).Type.String())
			walk(de.Ino, p+"/")
		}
	}
	walk(index.RootIno, "")
	return out
}

func wantPaths(t *testing.T, v *index.View, want ...string) {
	t.Helper()
	got := strings.Join(paths(v), " ")
	if got != strings.Join(want, " ") {
		t.Errorf("tree:\n got %s\nwant %s", got, strings.Join(want, " "))
	}
}

func TestViewWhiteouts(t *testing.T) {
	v := mustView(t,
		[]index.Entry{dir("a"), reg("a/keep"), reg("a/gone"), dir("d"), reg("d/x"), reg("d/y")},
		[]index.Entry{reg("a/.wh.gone"), reg(".wh.d"), reg("a/.wh.never-existed")},
	)
	wantPaths(t, v, "a:dir", "a/keep:regular")
}

func TestViewOpaqueDirectory(t *testing.T) {
	v := mustView(t,
		[]index.Entry{dir("o"), reg("o/lower1"), dir("o/sub"), reg("o/sub/deep"), reg("other")},
		[]index.Entry{dir("o"), reg("o/new"), reg("o/.wh..wh..opq")},
	)
	wantPaths(t, v, "o:dir", "o/new:regular", "other:regular")
}

// Whiteouts hide lower layers only, whatever their order in the tar.
func TestViewWhiteoutSparesSameLayer(t *testing.T) {
	v := mustView(t,
		[]index.Entry{reg("f")},
		[]index.Entry{reg("g"), reg(".wh.g"), reg(".wh.f")},
	)
	wantPaths(t, v, "g:regular")
}

func TestViewTypeChanges(t *testing.T) {
	v := mustView(t,
		[]index.Entry{reg("f2d"), dir("d2f"), reg("d2f/child"), dir("d2s"), reg("d2s/child"), sym("s2f", "x")},
		[]index.Entry{dir("f2d"), reg("f2d/in"), reg("d2f"), sym("d2s", "/etc"), reg("s2f")},
	)
	wantPaths(t, v, "d2f:regular", "d2s:symlink", "f2d:dir", "f2d/in:regular", "s2f:regular")
}

func TestViewImplicitParentsAndDuplicates(t *testing.T) {
	first := reg("x/y/z/file")
	second := reg("x/y/z/file")
	second.Size = 99
	v := mustView(t, []index.Entry{first, second})
	wantPaths(t, v, "x:dir", "x/y:dir", "x/y/z:dir", "x/y/z/file:regular")
	ino, _ := v.LookupPath("x/y")
	if in := v.Inode(ino); in.Mode != 0o755 || in.UID != 0 {
		t.Errorf("implicit dir mode %o uid %d, want 0755 root", in.Mode, in.UID)
	}
	fino, _ := v.LookupPath("x/y/z/file")
	if in := v.Inode(fino); in.Size != 99 || in.Offset != 1 {
		t.Errorf("duplicate entry: size %d offset %d; want the last one (99, 1)", in.Size, in.Offset)
	}
}

func TestViewHardLinks(t *testing.T) {
	v := mustView(t,
		[]index.Entry{reg("f"), link("g", "f"), link("h", "g"), reg("lower")},
		[]index.Entry{link("upper-to-lower", "lower"), reg(".wh.h")},
	)
	f, _ := v.LookupPath("f")
	g, _ := v.LookupPath("g")
	_, hok := v.LookupPath("h")
	if f != g || hok {
		t.Errorf("f=%d g=%d h present=%v; want f==g and h whited out", f, g, hok)
	}
	if n := v.Inode(f).Nlink; n != 2 {
		t.Errorf("nlink of f = %d, want 2 after h was whited out", n)
	}
	lower, _ := v.LookupPath("lower")
	up, _ := v.LookupPath("upper-to-lower")
	if lower != up || v.Inode(lower).Nlink != 2 {
		t.Errorf("cross-layer hard link: %d vs %d nlink %d", lower, up, v.Inode(lower).Nlink)
	}
	root := v.Inode(index.RootIno)
	if root.Nlink != 2 {
		t.Errorf("root nlink %d, want 2", root.Nlink)
	}
}

// A name replaced after a hard link was made keeps the link on the old data.
func TestViewHardLinkThenReplace(t *testing.T) {
	first := reg("a")
	first.Offset = 0
	v := mustView(t, []index.Entry{first, link("b", "a"), reg("a")})
	a, _ := v.LookupPath("a")
	b, _ := v.LookupPath("b")
	if a == b || v.Inode(b).Offset != 0 || v.Inode(a).Offset != 2 || v.Inode(b).Nlink != 1 {
		t.Errorf("a=%d (offset %d) b=%d (offset %d nlink %d)", a, v.Inode(a).Offset, b, v.Inode(b).Offset, v.Inode(b).Nlink)
	}
}

func TestViewRefusals(t *testing.T) {
	for name, layers := range map[string][][]index.Entry{
		"hard link to missing target": {{link("l", "nope")}},
		"hard link to directory":      {{dir("d"), link("l", "d")}},
		"file through symlink":        {{sym("link", "../../../../etc")}, {reg("link/passwd")}},
		"file under a file":           {{reg("f")}, {reg("f/g")}},
		"root is a file":              {{reg("")}},
	} {
		t.Run(name, func(t *testing.T) {
			_, ds, err := buildView(t, layers...)
			var ee *index.EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v; want an EntryError", err)
			}
			if ee.Layer != ds[len(ds)-1] {
				t.Errorf("error names layer %s, want %s", ee.Layer, ds[len(ds)-1])
			}
		})
	}
}

func TestViewRootEntry(t *testing.T) {
	root := dir("")
	root.Mode, root.UID = 0o700, 42
	v := mustView(t, []index.Entry{root, reg("f")})
	if in := v.Inode(index.RootIno); in.Mode != 0o700 || in.UID != 42 {
		t.Errorf("root = %o uid %d; want the ./ entry's 0700 uid 42", in.Mode, in.UID)
	}
}

func TestViewDeepPath(t *testing.T) {
	p := strings.Repeat("d/", 2000) + "leaf"
	v := mustView(t, []index.Entry{reg(p)})
	if _, ok := v.LookupPath(p); !ok {
		t.Fatal("deep path not found")
	}
	if v.Len() != 2002 {
		t.Errorf("%d inodes, want 2002", v.Len())
	}
}
