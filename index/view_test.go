package index_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

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
			out = append(out, p+":"+v.Type(de.Ino).String())
			walk(de.Ino, p+"/")
		}
	}
	walk(index.RootIno, "")
	return out
}

// inode returns inode ino of v, failing the test when there is none.
func inode(t *testing.T, v *index.View, ino index.Ino) index.Inode {
	t.Helper()
	in, ok := v.Stat(ino)
	if !ok {
		t.Fatalf("no inode %d", ino)
	}
	return in
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
	if in := inode(t, v, ino); in.Mode != 0o755 || in.UID != 0 {
		t.Errorf("implicit dir mode %o uid %d, want 0755 root", in.Mode, in.UID)
	}
	fino, _ := v.LookupPath("x/y/z/file")
	if in := inode(t, v, fino); in.Size != 99 || in.Offset != 1 {
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
	if n := inode(t, v, f).Nlink; n != 2 {
		t.Errorf("nlink of f = %d, want 2 after h was whited out", n)
	}
	lower, _ := v.LookupPath("lower")
	up, _ := v.LookupPath("upper-to-lower")
	if lower != up || inode(t, v, lower).Nlink != 2 {
		t.Errorf("cross-layer hard link: %d vs %d nlink %d", lower, up, inode(t, v, lower).Nlink)
	}
	root := inode(t, v, index.RootIno)
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
	if a == b || inode(t, v, b).Offset != 0 || inode(t, v, a).Offset != 2 || inode(t, v, b).Nlink != 1 {
		t.Errorf("a=%d (offset %d) b=%d (offset %d nlink %d)", a, inode(t, v, a).Offset, b, inode(t, v, b).Offset, inode(t, v, b).Nlink)
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
	if in := inode(t, v, index.RootIno); in.Mode != 0o700 || in.UID != 42 {
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

// Every attribute an entry brings survives the packing of the view, for
// every type, and the slices a View shares (xattr sets) keep their content.
func TestViewKeepsEveryAttribute(t *testing.T) {
	mtime := time.Date(2031, 5, 6, 7, 8, 9, 987654321, time.UTC)
	capability := []index.Xattr{{Name: "security.capability", Value: []byte{1, 2, 3}}}
	file := index.Entry{Path: "d/file", Type: index.TypeRegular, Mode: 0o4755, UID: 1000, GID: 1001, Size: 12345, ModTime: mtime, Xattrs: capability}
	same := index.Entry{Path: "d/same-caps", Type: index.TypeRegular, Mode: 0o755, Size: 1, ModTime: mtime, Xattrs: capability}
	labels := []index.Xattr{{Name: "user.a", Value: []byte("1")}, {Name: "user.b", Value: nil}}
	labelled := index.Entry{Path: "d/labelled", Type: index.TypeFifo, Mode: 0o600, ModTime: mtime, Xattrs: labels}
	sparse := index.Entry{Path: "sparse", Type: index.TypeRegular, Mode: 0o644, Size: 1 << 30, ModTime: mtime,
		Sparse: []index.Fragment{{Offset: 4096, Length: 10, Data: 512}, {Offset: 1 << 29, Length: 20, Data: 1024}}}
	hole := index.Entry{Path: "all-hole", Type: index.TypeRegular, Mode: 0o644, Size: 8192, ModTime: mtime, Sparse: []index.Fragment{}}
	symlink := index.Entry{Path: "d/link", Type: index.TypeSymlink, Mode: 0o777, UID: 5, ModTime: mtime, Linkname: "../far/away/target"}
	char := index.Entry{Path: "dev/tty", Type: index.TypeChar, Mode: 0o620, GID: 5, ModTime: mtime, DevMajor: 4095, DevMinor: 1<<20 - 1}
	block := index.Entry{Path: "dev/sda", Type: index.TypeBlock, Mode: 0o660, ModTime: mtime, DevMajor: 8, DevMinor: 0}
	dirEntry := index.Entry{Path: "d", Type: index.TypeDir, Mode: 0o1777, UID: 7, GID: 8, ModTime: mtime}

	v := mustView(t, []index.Entry{reg("lower")}, []index.Entry{dirEntry, file, same, labelled, sparse, hole, symlink, char, block})
	check := func(p string, want index.Inode) {
		t.Helper()
		ino, ok := v.LookupPath(p)
		if !ok {
			t.Fatalf("%s missing", p)
		}
		got := inode(t, v, ino)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", p, got, want)
		}
		if v.Type(ino) != want.Type {
			t.Errorf("%s: Type %v, want %v", p, v.Type(ino), want.Type)
		}
	}
	// Offsets are positions in the layer's entry list (see buildView).
	check("d/file", index.Inode{Type: index.TypeRegular, Mode: 0o4755, UID: 1000, GID: 1001, Size: 12345, ModTime: mtime, Xattrs: capability, Nlink: 1, Layer: 1, Offset: 1})
	check("d/same-caps", index.Inode{Type: index.TypeRegular, Mode: 0o755, Size: 1, ModTime: mtime, Xattrs: capability, Nlink: 1, Layer: 1, Offset: 2})
	check("d/labelled", index.Inode{Type: index.TypeFifo, Mode: 0o600, ModTime: mtime, Xattrs: labels, Nlink: 1, Layer: -1})
	check("sparse", index.Inode{Type: index.TypeRegular, Mode: 0o644, Size: 1 << 30, ModTime: mtime, Nlink: 1, Layer: 1, Offset: 4, Sparse: sparse.Sparse})
	check("all-hole", index.Inode{Type: index.TypeRegular, Mode: 0o644, Size: 8192, ModTime: mtime, Nlink: 1, Layer: 1, Offset: 5, Sparse: []index.Fragment{}})
	check("d/link", index.Inode{Type: index.TypeSymlink, Mode: 0o777, UID: 5, Size: int64(len(symlink.Linkname)), ModTime: mtime, Linkname: symlink.Linkname, Nlink: 1, Layer: -1})
	check("dev/tty", index.Inode{Type: index.TypeChar, Mode: 0o620, GID: 5, ModTime: mtime, DevMajor: 4095, DevMinor: 1<<20 - 1, Nlink: 1, Layer: -1})
	check("dev/sda", index.Inode{Type: index.TypeBlock, Mode: 0o660, ModTime: mtime, DevMajor: 8, Nlink: 1, Layer: -1})
	check("d", index.Inode{Type: index.TypeDir, Mode: 0o1777, UID: 7, GID: 8, ModTime: mtime, Nlink: 2, Layer: -1})
	check("dev", index.Inode{Type: index.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0).UTC(), Nlink: 2, Layer: -1})
	check("lower", index.Inode{Type: index.TypeRegular, Mode: 0o644, Size: 1, ModTime: time.Time{}.UTC(), Nlink: 1, Layer: 0, Offset: 0})

	if _, ok := v.Stat(0); ok {
		t.Error("inode 0 exists")
	}
	if _, ok := v.Stat(index.Ino(v.Len() + 1)); ok {
		t.Error("inode past the last exists")
	}
	if v.Type(index.Ino(v.Len()+1)) != 0 || v.DirLen(index.Ino(v.Len()+1)) != 0 {
		t.Error("a missing inode has a type or entries")
	}
	f, _ := v.LookupPath("d/file")
	if v.DirLen(f) != 0 || v.ReadDir(f) != nil {
		t.Error("a regular file lists entries")
	}
	if _, ok := v.Lookup(f, "x"); ok {
		t.Error("lookup below a regular file succeeded")
	}
}

// Names are found by binary search in one shared array of entries; a
// search must never run into a neighbouring directory's entries.
func TestViewLookupStaysInItsDirectory(t *testing.T) {
	v := mustView(t, []index.Entry{reg("a/m"), reg("b/a"), reg("b/z"), reg("c/m"), dir("e"), reg("z")})
	for _, tc := range []struct {
		dir, name string
		found     bool
	}{
		{"a", "m", true}, {"a", "a", false}, {"a", "z", false}, {"a", "b", false},
		{"b", "a", true}, {"b", "z", true}, {"b", "m", false},
		{"c", "m", true}, {"c", "a", false}, {"c", "z", false},
		{"e", "m", false}, {"e", "", false},
		{"", "z", true}, {"", "m", false}, {"", "a", true}, {"", "", false},
	} {
		d, ok := v.LookupPath(tc.dir)
		if !ok {
			t.Fatalf("%q missing", tc.dir)
		}
		ino, found := v.Lookup(d, tc.name)
		if found != tc.found {
			t.Errorf("Lookup(%q, %q) found %v, want %v", tc.dir, tc.name, found, tc.found)
			continue
		}
		if found && v.DirLen(ino) == 0 && v.Type(ino) == index.TypeDir {
			continue
		}
		if found {
			if want, _ := v.LookupPath(tc.dir + "/" + tc.name); want != ino {
				t.Errorf("Lookup(%q, %q) = %d, LookupPath says %d", tc.dir, tc.name, ino, want)
			}
		}
	}
	b, _ := v.LookupPath("b")
	if n := v.DirLen(b); n != 2 {
		t.Fatalf("b has %d entries, want 2", n)
	}
	for i, want := range []string{"a", "z"} {
		if got := v.DirEntry(b, i); got.Name != want || got != v.ReadDir(b)[i] {
			t.Errorf("entry %d of b = %+v, want %q as ReadDir lists it", i, got, want)
		}
	}
}

func TestViewPath(t *testing.T) {
	v := mustView(t, []index.Entry{dir("a"), dir("a/b"), reg("a/b/f"), link("a/g", "a/b/f"), reg("z")})
	for _, p := range []string{"", "a", "a/b", "a/b/f", "z"} {
		ino, ok := v.LookupPath(p)
		if !ok {
			t.Fatalf("%q missing", p)
		}
		got, ok := v.Path(ino)
		// a/b/f and a/g are one inode: either name will do.
		if !ok || (got != p && !(p == "a/b/f" && got == "a/g")) {
			t.Errorf("Path(%d) = %q, %v; want %q", ino, got, ok, p)
		}
	}
	if _, ok := v.Path(index.Ino(v.Len() + 1)); ok {
		t.Error("Path of a missing inode")
	}
}

// Inode hands out a copy, and nil for a number without an inode.
func TestViewInodeCopy(t *testing.T) {
	v := mustView(t, []index.Entry{reg("f")})
	f, _ := v.LookupPath("f")
	in := v.Inode(f)
	if in == nil || in.Type != index.TypeRegular {
		t.Fatalf("Inode(%d) = %+v", f, in)
	}
	in.Size = 12345
	if again := v.Inode(f); again.Size == 12345 {
		t.Error("changing a returned inode changed the view")
	}
	if v.Inode(0) != nil || v.Inode(index.Ino(v.Len()+1)) != nil {
		t.Error("an inode for a number without one")
	}
}
