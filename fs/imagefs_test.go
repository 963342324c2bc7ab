package fs

import (
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

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
