package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
)

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCatalogLayout(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	root.SetStream("ns", "app", map[string]digest.Digest{"latest": im.a, "v1": im.a, "v2": im.b},
		map[digest.Digest]*index.View{im.a: im.viewA, im.b: im.viewB})
	root.SetStream("ns", "db", map[string]digest.Digest{"latest": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})
	root.SetStream("other", "tool", nil, map[digest.Digest]*index.View{im.a: im.viewA})
	mnt, _ := mountForTest(t, root, Options{Logger: testLogger(t)})

	if got, want := readDirNames(t, mnt), []string{"ns", "other"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
	if got, want := readDirNames(t, filepath.Join(mnt, "ns")), []string{"app", "db"}; !slices.Equal(got, want) {
		t.Errorf("ns lists %q, want %q", got, want)
	}
	stream := filepath.Join(mnt, "ns", "app")
	wantNames := []string{imageDirName(im.a), imageDirName(im.b), "latest", "v1", "v2"}
	slices.Sort(wantNames)
	if got := readDirNames(t, stream); !slices.Equal(got, wantNames) {
		t.Errorf("stream lists %q, want %q", got, wantNames)
	}
	if got := readDirNames(t, filepath.Join(mnt, "other", "tool")); !slices.Equal(got, []string{imageDirName(im.a)}) {
		t.Errorf("a stream without tags lists %q", got)
	}

	for _, dir := range []string{mnt, filepath.Join(mnt, "ns"), stream} {
		var st unix.Stat_t
		if err := unix.Lstat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode != syscall.S_IFDIR|0o555 || st.Uid != 0 || st.Gid != 0 {
			t.Errorf("%s: mode %#o owner %d:%d, want dr-xr-xr-x root:root", dir, st.Mode, st.Uid, st.Gid)
		}
	}
	for tag, d := range map[string]digest.Digest{"latest": im.a, "v1": im.a, "v2": im.b} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(stream, tag), &st); err != nil {
			t.Fatal(err)
		}
		target := imageDirName(d)
		if st.Mode&syscall.S_IFMT != syscall.S_IFLNK || st.Size != int64(len(target)) {
			t.Errorf("%s: mode %#o size %d, want a symlink of %d bytes", tag, st.Mode, st.Size, len(target))
		}
		if got, err := os.Readlink(filepath.Join(stream, tag)); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", tag, got, err, target)
		}
	}

	// The same image in two streams gets inode numbers of its own in each,
	// and catalog inodes are distinct from image inodes.
	inos := map[uint64]string{}
	for _, p := range []string{mnt, filepath.Join(mnt, "ns"), stream, filepath.Join(stream, "latest"),
		filepath.Join(stream, imageDirName(im.a)), filepath.Join(mnt, "other", "tool", imageDirName(im.a)),
		filepath.Join(stream, imageDirName(im.a), "etc/passwd"), filepath.Join(mnt, "other", "tool", imageDirName(im.a), "etc/passwd"),
		filepath.Join(mnt, "ns", "db", imageDirName(im.b))} {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if prev, dup := inos[st.Ino]; dup {
			t.Errorf("%s and %s share inode %d", prev, p, st.Ino)
		}
		inos[st.Ino] = p
	}
}

// TestTagMove moves a tag while a process holds a file and a directory of
// the old image. The catalog timeout is an hour, so only the invalidation
// can make the kernel see the move.
func TestTagMove(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	opts := Options{Logger: testLogger(t), CatalogTimeout: time.Hour}
	root := NewRoot(im.reader, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ := mountForTest(t, root, opts)
	stream := filepath.Join(mnt, "ns", "app")
	latest := filepath.Join(stream, "latest")

	held, err := os.Open(filepath.Join(latest, "etc/os-release"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	heldDir, err := unix.Open(filepath.Join(latest, "etc"), unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(heldDir)
	if got, _ := os.Readlink(latest); got != imageDirName(im.a) {
		t.Fatalf("before the move latest -> %q", got)
	}

	root.SetStream("ns", "app", map[string]digest.Digest{"latest": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})

	eventually(t, 2*time.Second, "latest points at image b", func() error {
		if got, err := os.Readlink(latest); err != nil || got != imageDirName(im.b) {
			return fmt.Errorf("latest -> %q, %v", got, err)
		}
		return nil
	})
	if data, err := os.ReadFile(filepath.Join(latest, "etc/os-release")); err != nil || string(data) != osReleaseB {
		t.Errorf("new image through the tag: %q, %v", data, err)
	}
	eventually(t, 2*time.Second, "image a's directory is gone", func() error {
		if _, err := os.Lstat(filepath.Join(stream, imageDirName(im.a))); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("lstat: %v", err)
		}
		return nil
	})
	if got, want := readDirNames(t, stream), []string{imageDirName(im.b), "latest"}; !slices.Equal(got, want) {
		t.Errorf("stream lists %q, want %q", got, want)
	}

	// What was open keeps the old image.
	if data, err := io.ReadAll(held); err != nil || string(data) != osReleaseA {
		t.Errorf("file opened before the move: %q, %v", data, err)
	}
	fd, err := unix.Openat(heldDir, "passwd", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("opening below a directory held across the move: %v", err)
	}
	passwd := os.NewFile(uintptr(fd), "passwd")
	defer passwd.Close()
	if data, err := io.ReadAll(passwd); err != nil || string(data) != passwdContent {
		t.Errorf("file below the held directory: %q, %v", data, err)
	}
	if fd, err := unix.Openat(heldDir, "os-release", unix.O_RDONLY, 0); err != nil {
		t.Errorf("old image's os-release below the held directory: %v", err)
	} else {
		// A descriptor left open on the mount would keep it busy at
		// unmount and hang the test binary's exit on its own mount.
		unix.Close(fd)
	}
}

// TestCatalogChangesShowAtOnce: names that appear are not hidden by a
// cached miss, and names that go away are invalidated, even with an hour's
// catalog timeout.
func TestCatalogChangesShowAtOnce(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	opts := Options{Logger: testLogger(t), CatalogTimeout: time.Hour}
	root := NewRoot(im.reader, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ := mountForTest(t, root, opts)
	stream := filepath.Join(mnt, "ns", "app")

	for _, p := range []string{filepath.Join(stream, "v2"), filepath.Join(mnt, "later"), filepath.Join(mnt, "ns", "db")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s before it exists: %v", p, err)
		}
	}
	root.SetStream("ns", "app", map[string]digest.Digest{"latest": im.a, "v2": im.b},
		map[digest.Digest]*index.View{im.a: im.viewA, im.b: im.viewB})
	root.SetStream("later", "s", map[string]digest.Digest{"t": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})
	root.SetStream("ns", "db", nil, nil)
	if got, err := os.Readlink(filepath.Join(stream, "v2")); err != nil || got != imageDirName(im.b) {
		t.Errorf("new tag: %q, %v", got, err)
	}
	if data, err := os.ReadFile(filepath.Join(mnt, "later", "s", "t", "etc/os-release")); err != nil || string(data) != osReleaseB {
		t.Errorf("new namespace: %q, %v", data, err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "ns", "db")); err != nil {
		t.Errorf("new empty stream: %v", err)
	}

	// Removing.
	root.SetStream("ns", "app", map[string]digest.Digest{"v2": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})
	root.RemoveStream("later", "s")
	root.RemoveStream("ns", "db")
	for _, p := range []string{filepath.Join(stream, "latest"), filepath.Join(stream, imageDirName(im.a)),
		filepath.Join(mnt, "later"), filepath.Join(mnt, "ns", "db")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after removal: %v", p, err)
		}
	}
	if got, want := readDirNames(t, mnt), []string{"ns"}; !slices.Equal(got, want) {
		t.Errorf("root lists %q, want %q", got, want)
	}
}

func TestSetStreamKeepsPublishedImages(t *testing.T) {
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{})
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	st := root.namespaces["ns"].streams["app"]
	imgA, tagLatest := st.images[im.a], st.tags["latest"]

	// The same state again changes nothing and invalidates nothing.
	if stale := root.setStream("ns", "app", tags, images); len(stale) != 0 {
		t.Errorf("republishing the same state invalidates %v", stale)
	}
	// A rebuilt view of the same manifest keeps the published image, so
	// the kernel's caches of it stay right.
	rebuilt := im.view(t, im.baseA, im.topA)
	root.SetStream("ns", "app", tags, map[digest.Digest]*index.View{im.a: rebuilt})
	if st.images[im.a] != imgA || st.tags["latest"] != tagLatest {
		t.Error("a rebuilt view of the same manifest replaced the published image or tag")
	}

	// Moving the tag invalidates it; dropping the image invalidates its
	// directory.
	stale := root.setStream("ns", "app", map[string]digest.Digest{"latest": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})
	slices.SortFunc(stale, func(a, b staleName) int { return strings.Compare(a.name, b.name) })
	want := []staleName{{[]string{"ns", "app"}, imageDirName(im.a)}, {[]string{"ns", "app"}, "latest"}}
	if fmt.Sprint(stale) != fmt.Sprint(want) {
		t.Errorf("stale = %v, want %v", stale, want)
	}
	if st.tags["latest"].ino == tagLatest.ino {
		t.Error("a moved tag kept its inode")
	}
	if st.images[im.b].serial == imgA.serial {
		t.Error("two images share a serial")
	}
}

func TestSetStreamRefusesBadInput(t *testing.T) {
	im := newTestImages(t)
	var logs logBuffer
	root := NewRoot(im.reader, Options{Logger: logs.logger()})
	root.SetStream("ns/evil", "app", nil, nil)
	root.SetStream("..", "app", nil, nil)
	root.SetStream("ns", "", nil, nil)
	if len(root.namespaces) != 0 {
		t.Errorf("bad names were published: %v", root.namespaces)
	}
	root.SetStream("ns", "app",
		map[string]digest.Digest{"ok": im.a, "dangling": im.b, "a/b": im.a, "@sha256:x": im.a, "..": im.a},
		map[digest.Digest]*index.View{im.a: im.viewA, "sha256:nothex": im.viewA, im.b: nil})
	st := root.namespaces["ns"].streams["app"]
	var tags []string
	for tag := range st.tags {
		tags = append(tags, tag)
	}
	if !slices.Equal(tags, []string{"ok"}) {
		t.Errorf("tags = %q, want only ok", tags)
	}
	if len(st.images) != 1 || st.images[im.a] == nil {
		t.Errorf("images = %v, want only a", st.images)
	}
	if logs.String() == "" {
		t.Error("refusals were not logged")
	}
}

// TestSetStreamAfterUnmount: a daemon may still publish while it shuts
// down; the invalidations then have no kernel to go to and must not fail.
func TestSetStreamAfterUnmount(t *testing.T) {
	requireFUSE(t)
	im := newTestImages(t)
	root := NewRoot(im.reader, Options{Logger: testLogger(t)})
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, server := mountForTest(t, root, Options{Logger: testLogger(t)})
	if _, err := os.Readlink(filepath.Join(mnt, "ns", "app", "latest")); err != nil {
		t.Fatal(err)
	}
	if err := server.Unmount(); err != nil {
		t.Fatal(err)
	}
	root.SetStream("ns", "app", map[string]digest.Digest{"latest": im.b}, map[digest.Digest]*index.View{im.b: im.viewB})
	root.RemoveStream("ns", "app")
}
