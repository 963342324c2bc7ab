package fs

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
)

// showImageA shows a freshly built view of image A, which nothing but the
// catalog holds, as ns/app, and returns the image's serial.
func showImageA(t *testing.T, root *Root, im *testImages) uint64 {
	t.Helper()
	root.SetStream("ns", "app", nil, map[digest.Digest]*index.View{im.a: im.view(t, im.baseA, im.topA)})
	root.mu.RLock()
	defer root.mu.RUnlock()
	return root.namespaces["ns"].streams["app"].images[im.a].serial
}

// statAll lstats every entry below dir, as a scanner does.
func statAll(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A walk of an image leaves no go-fuse node below the image root: imageFS
// answers from the view and keeps only a count of the kernel's references.
func TestImageWalkKeepsNoNodes(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	serial := showImageA(t, root, im)
	mnt, _ := mountForTest(t, root, Options{Logger: testLogger(t)})
	img := filepath.Join(mnt, "ns", "app", imageDirName(im.a))

	if n := statAll(t, img); n < 30 {
		t.Fatalf("walked %d entries; image A has more", n)
	}
	if n := root.images.lookups(serial); n == 0 {
		t.Error("the walk left no kernel references counted")
	}
	node := root.mounted.Load().EmbeddedInode().GetChild("ns").GetChild("app").GetChild(imageDirName(im.a))
	if node == nil {
		t.Fatal("the image root is not in go-fuse's tree")
	}
	if kids := node.Children(); len(kids) != 0 {
		t.Errorf("go-fuse holds %d nodes below the image root after a walk, want none", len(kids))
	}
}

// An image the catalog dropped stays whole for a process that holds a file
// and a directory of it, also across garbage collections.
func TestDroppedImageLivesWhileHeld(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	serial := showImageA(t, root, im)
	mnt, _ := mountForTest(t, root, Options{Logger: testLogger(t)})
	img := filepath.Join(mnt, "ns", "app", imageDirName(im.a))

	file, err := os.Open(filepath.Join(img, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	dir, err := unix.Open(filepath.Join(img, "usr/lib"), unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dir)

	root.RemoveStream("ns", "app")
	for range 3 {
		runtime.GC()
	}
	if root.images.get(serial) == nil {
		t.Fatal("the image was let go while the kernel holds its inodes")
	}
	if data, err := io.ReadAll(file); err != nil || string(data) != passwdContent {
		t.Errorf("held file reads %q, %v", data, err)
	}
	// A name below the held directory that was never looked up before.
	fd, err := unix.Openat(dir, "libhard.so.1", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("opening below the held directory: %v", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64)
	if n, err := unix.Read(fd, buf); err != nil || string(buf[:n]) != hardContent {
		t.Errorf("file below the held directory reads %q, %v", buf[:n], err)
	}
}

// Once the kernel forgets every inode of an image the catalog dropped, the
// image and its view are let go.
func TestDroppedImageIsLetGoOnceForgotten(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	serial := showImageA(t, root, im)
	mnt, _ := mountForTest(t, root, Options{Logger: testLogger(t)})
	statAll(t, filepath.Join(mnt, "ns", "app", imageDirName(im.a)))
	if root.images.lookups(serial) == 0 {
		t.Fatal("the walk left no kernel references counted")
	}

	// Dropping the stream invalidates its directory, and the kernel
	// evicts everything unused below it: FORGET for every image inode.
	root.RemoveStream("ns", "app")
	eventually(t, 10*time.Second, "kernel forgets the image's inodes", func() error {
		if n := root.images.lookups(serial); n != 0 {
			return fmt.Errorf("%d references left", n)
		}
		return nil
	})
	eventually(t, 10*time.Second, "image collected", func() error {
		runtime.GC()
		if root.images.get(serial) != nil {
			return errors.New("the image is still reachable")
		}
		return nil
	})
	eventually(t, 10*time.Second, "serial forgotten", func() error {
		runtime.GC()
		root.images.mu.RLock()
		defer root.images.mu.RUnlock()
		if _, ok := root.images.slots[serial]; ok {
			return errors.New("the table still has a slot for it")
		}
		return nil
	})
}

func TestImageNodeID(t *testing.T) {
	for _, tc := range []struct {
		id     uint64
		serial uint64
		ino    index.Ino
		ok     bool
	}{
		{rootIno, 0, 0, false},
		{catalogInoBase + 5, 0, 0, false},
		{1<<32 - 1, 0, 0, false},
		{imageIno(1, index.RootIno), 1, index.RootIno, true},
		{imageIno(7, 123456), 7, 123456, true},
		{imageIno(maxImageSerial, 1<<32-1), maxImageSerial, 1<<32 - 1, true},
		{(maxImageSerial + 1) << 32, 0, 0, false},
	} {
		serial, ino, ok := imageNodeID(tc.id)
		if serial != tc.serial || ino != tc.ino || ok != tc.ok {
			t.Errorf("imageNodeID(%#x) = %d, %d, %v; want %d, %d, %v", tc.id, serial, ino, ok, tc.serial, tc.ino, tc.ok)
		}
	}
}

// The table keeps an image while it counts kernel references to inodes
// below its root, whatever else lets go of it, and forgets it after.
func TestImageTableHoldsWhileReferenced(t *testing.T) {
	im := newTestImages(t)
	table := newImageTable()
	const serial = 42
	func() {
		img := &image{digest: im.a, serial: serial, view: im.view(t, im.baseA, im.topA)}
		table.add(img)
		table.hold(img, 3)
	}()
	for range 3 {
		runtime.GC()
	}
	if table.get(serial) == nil {
		t.Fatal("an image with kernel references was let go")
	}
	table.release(serial, 2)
	runtime.GC()
	if table.get(serial) == nil || table.lookups(serial) != 1 {
		t.Fatalf("after giving back 2 of 3 references: image %v, %d references", table.get(serial) != nil, table.lookups(serial))
	}
	table.release(serial, 1)
	eventually(t, 10*time.Second, "image let go", func() error {
		runtime.GC()
		table.mu.RLock()
		defer table.mu.RUnlock()
		if table.slots[serial] != nil {
			return errors.New("the table still has it")
		}
		return nil
	})
	// A FORGET for a serial the table no longer knows is harmless.
	table.release(serial, 1)
}

// imageFSForTest shows image A and returns imageFS over the catalog, not
// mounted: its handlers are called directly, as the kernel would.
func imageFSForTest(t *testing.T) (*imageFS, *image) {
	t.Helper()
	im := newTestImages(t)
	opts := Options{Logger: testLogger(t)}.withDefaults()
	root := NewRoot(im.reader, opts)
	serial := showImageA(t, root, im)
	return newImageFS(&rootNode{root: root}, root, gofsOptions(root, opts)), root.images.get(serial)
}

func header(id uint64) fuse.InHeader { return fuse.InHeader{NodeId: id} }

// Listings start at any offset the kernel hands back, fill what fits and
// say where to go on; READDIRPLUS entries count as lookups until FORGET.
func TestImageFSListings(t *testing.T) {
	fs, img := imageFSForTest(t)
	dir, ok := img.view.LookupPath("etc")
	if !ok {
		t.Fatal("no etc")
	}
	want := img.view.ReadDir(dir)
	if len(want) < 4 {
		t.Fatalf("etc has %d entries; the test wants a few", len(want))
	}
	var open fuse.OpenOut
	if st := fs.OpenDir(nil, &fuse.OpenIn{InHeader: header(img.ino(dir))}, &open); !st.Ok() || open.OpenFlags&fuse.FOPEN_CACHE_DIR == 0 {
		t.Fatalf("OpenDir: %v, flags %#x", st, open.OpenFlags)
	}

	list := func(plus bool, off uint64, size int) ([]fuse.DirEntry, []fuse.EntryOut) {
		t.Helper()
		out := fuse.NewDirEntryList(make([]byte, size), off)
		in := &fuse.ReadIn{InHeader: header(img.ino(dir)), Offset: off}
		var st fuse.Status
		if plus {
			st = fs.ReadDirPlus(nil, in, out)
		} else {
			st = fs.ReadDir(nil, in, out)
		}
		if !st.Ok() {
			t.Fatalf("listing from %d: %v", off, st)
		}
		if plus {
			ents, outs, err := fuse.ParseDirLookupEntries(out.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			return ents, outs
		}
		ents, err := fuse.ParseDirEntries(out.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return ents, nil
	}
	for _, plus := range []bool{false, true} {
		// Small buffers, so the listing takes several requests.
		var got []fuse.DirEntry
		for off := uint64(0); ; {
			ents, outs := list(plus, off, 200)
			if len(ents) == 0 {
				break
			}
			for i, e := range ents {
				if plus && (outs[i].NodeId != e.Ino || outs[i].Ino != e.Ino || outs[i].EntryTimeout() == 0) {
					t.Errorf("READDIRPLUS entry %q: %+v", e.Name, outs[i])
				}
			}
			got = append(got, ents...)
			off = ents[len(ents)-1].Off
		}
		if len(got) != len(want) {
			t.Fatalf("plus=%v: listed %d entries, want %d", plus, len(got), len(want))
		}
		for i, e := range got {
			if e.Name != want[i].Name || e.Ino != img.ino(want[i].Ino) || e.Off != uint64(i+1) ||
				e.Mode != fileTypeBits(img.view.Type(want[i].Ino)) {
				t.Errorf("plus=%v: entry %d = %v, want %q ino %d off %d", plus, i, &e, want[i].Name, img.ino(want[i].Ino), i+1)
			}
		}
	}
	if n := fs.images.lookups(img.serial); n != uint64(len(want)) {
		t.Errorf("READDIRPLUS of %d entries counted %d lookups", len(want), n)
	}
	for _, e := range want {
		fs.Forget(img.ino(e.Ino), 1)
	}
	if n := fs.images.lookups(img.serial); n != 0 {
		t.Errorf("%d lookups left after forgetting every entry", n)
	}

	// Resuming past the end is a bad offset, at the end an empty list.
	if ents, _ := list(false, uint64(len(want)), 4096); len(ents) != 0 {
		t.Errorf("listing from the end gave %d entries", len(ents))
	}
	if st := fs.ReadDir(nil, &fuse.ReadIn{InHeader: header(img.ino(dir)), Offset: uint64(len(want) + 1)},
		fuse.NewDirEntryList(make([]byte, 4096), 0)); st != fuse.EINVAL {
		t.Errorf("listing past the end: %v, want EINVAL", st)
	}
	// A file is not a directory.
	file, _ := img.view.LookupPath("etc/passwd")
	if st := fs.OpenDir(nil, &fuse.OpenIn{InHeader: header(img.ino(file))}, &open); st != fuse.ENOTDIR {
		t.Errorf("OpenDir of a file: %v, want ENOTDIR", st)
	}
}

// A lookup answers from the view and counts a reference; a miss is an
// answer the kernel caches, as long as a hit.
func TestImageFSLookup(t *testing.T) {
	fs, img := imageFSForTest(t)
	h := header(img.ino(img.rootIno()))
	var out fuse.EntryOut
	if st := fs.Lookup(nil, &h, "etc", &out); !st.Ok() {
		t.Fatalf("Lookup etc: %v", st)
	}
	etc, _ := img.view.LookupPath("etc")
	if out.NodeId != img.ino(etc) || out.Attr.Ino != img.ino(etc) || out.Attr.Mode&syscall.S_IFMT != syscall.S_IFDIR ||
		out.EntryTimeout() != DefaultImageTimeout || out.AttrTimeout() != DefaultImageTimeout {
		t.Errorf("Lookup etc = %+v", out)
	}
	if n := fs.images.lookups(img.serial); n != 1 {
		t.Errorf("%d lookups counted, want 1", n)
	}
	out = fuse.EntryOut{}
	if st := fs.Lookup(nil, &h, "no-such-name", &out); !st.Ok() || out.NodeId != 0 || out.EntryTimeout() != DefaultImageTimeout {
		t.Errorf("Lookup of a missing name: %v %+v; want a cached negative entry", st, out)
	}
	if n := fs.images.lookups(img.serial); n != 1 {
		t.Errorf("a miss changed the count to %d", n)
	}
	// The catalog still answers through go-fuse.
	var attr fuse.AttrOut
	if st := fs.GetAttr(nil, &fuse.GetAttrIn{InHeader: header(rootIno)}, &attr); !st.Ok() || attr.Ino != rootIno {
		t.Errorf("GetAttr of the mount root: %v, ino %d", st, attr.Ino)
	}
	// Writes are refused on image inodes.
	if st := fs.Mkdir(nil, &fuse.MkdirIn{InHeader: h}, "new", &out); st != fuse.EROFS {
		t.Errorf("Mkdir in an image: %v, want EROFS", st)
	}
}
