package fs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mountImageA mounts a catalog with image A as ns/app:latest and returns
// the mount and the image's directory in it.
func mountImageA(t *testing.T, opts Options) (im *testImages, mnt, img string) {
	t.Helper()
	requireFUSE(t)
	im = newTestImages(t)
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	root := NewRoot(im.reader, opts)
	tags, images := im.imageAOnly()
	root.SetStream("ns", "app", tags, images)
	mnt, _ = mountForTest(t, root, opts)
	return im, mnt, filepath.Join(mnt, "ns", "app", imageDirName(im.a))
}

func TestImageAttributes(t *testing.T) {
	_, _, img := mountImageA(t, DefaultOptions())
	stamp := time.Unix(1700000000, 0).UTC()
	tests := []struct {
		path       string
		mode       uint32 // raw st_mode
		uid, gid   uint32
		size       int64
		nlink      uint64
		major, min uint32
		mtime      time.Time
	}{
		{path: "", mode: syscall.S_IFDIR | 0o755, nlink: 2 + 8, mtime: stamp},
		{path: "etc", mode: syscall.S_IFDIR | 0o755, nlink: 2, mtime: stamp},
		{path: "etc/passwd", mode: syscall.S_IFREG | 0o644, size: int64(len(passwdContent)), nlink: 1, mtime: stamp},
		{path: "etc/shadow", mode: syscall.S_IFREG | 0o600, size: int64(len(shadowContent)), nlink: 1, mtime: stamp},
		{path: "etc/nomode", mode: syscall.S_IFREG, size: 21, nlink: 1, mtime: stamp},
		{path: "etc/empty", mode: syscall.S_IFREG | 0o644, nlink: 1, mtime: stamp},
		{path: "bin/su", mode: syscall.S_IFREG | syscall.S_ISUID | 0o755, size: 9, nlink: 1, mtime: stamp},
		{path: "bin/wall", mode: syscall.S_IFREG | syscall.S_ISGID | 0o755, gid: 5, size: 11, nlink: 1, mtime: stamp},
		{path: "tmp", mode: syscall.S_IFDIR | syscall.S_ISVTX | 0o777, nlink: 2, mtime: stamp},
		{path: "home", mode: syscall.S_IFDIR | 0o755, nlink: 3, mtime: epoch},
		{path: "home/user", mode: syscall.S_IFDIR | 0o700, uid: 1000, gid: 1000, nlink: 2, mtime: stamp},
		{path: "home/user/notes.txt", mode: syscall.S_IFREG | 0o640, uid: 1000, gid: 1000, size: 18, nlink: 1, mtime: notesMtime},
		{path: "usr/lib/libhard.so", mode: syscall.S_IFREG | 0o755, size: int64(len(hardContent)), nlink: 3, mtime: stamp},
		{path: "lib", mode: syscall.S_IFLNK | 0o777, size: int64(len("usr/lib")), nlink: 1, mtime: stamp},
		{path: "dev/null", mode: syscall.S_IFCHR | 0o666, nlink: 1, major: 1, min: 3, mtime: stamp},
		{path: "dev/sda", mode: syscall.S_IFBLK | 0o660, gid: 6, nlink: 1, major: 8, min: 0, mtime: stamp},
		{path: "dev/big", mode: syscall.S_IFCHR | 0o600, nlink: 1, major: 300, min: 70000, mtime: stamp},
		{path: "dev/initctl", mode: syscall.S_IFIFO | 0o600, nlink: 1, mtime: stamp},
		{path: "ünïcødé/日本語.txt", mode: syscall.S_IFREG | 0o644, size: int64(len(unicodeContent)), nlink: 1, mtime: stamp},
		{path: "var/lib/implicit", mode: syscall.S_IFDIR | 0o755, nlink: 2, mtime: epoch},
		{path: "var/lib/implicit/data", mode: syscall.S_IFREG | 0o644, size: 5, nlink: 1, mtime: stamp},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(img, tc.path), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mode != tc.mode {
				t.Errorf("st_mode = %#o, want %#o", st.Mode, tc.mode)
			}
			if st.Uid != tc.uid || st.Gid != tc.gid {
				t.Errorf("owner = %d:%d, want %d:%d", st.Uid, st.Gid, tc.uid, tc.gid)
			}
			if st.Size != tc.size {
				t.Errorf("size = %d, want %d", st.Size, tc.size)
			}
			if want := (tc.size + 511) / 512; st.Blocks != want {
				t.Errorf("blocks = %d, want %d", st.Blocks, want)
			}
			if uint64(st.Nlink) != tc.nlink {
				t.Errorf("nlink = %d, want %d", st.Nlink, tc.nlink)
			}
			if st.Rdev != unix.Mkdev(tc.major, tc.min) {
				t.Errorf("rdev = %d:%d, want %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), tc.major, tc.min)
			}
			for name, ts := range map[string]unix.Timespec{"mtime": st.Mtim, "atime": st.Atim, "ctime": st.Ctim} {
				if got := time.Unix(ts.Unix()).UTC(); !got.Equal(tc.mtime) {
					t.Errorf("%s = %v, want %v", name, got, tc.mtime)
				}
			}
			if st.Ino>>32 == 0 {
				t.Errorf("ino %#x is not in an image's range", st.Ino)
			}
		})
	}
}

func TestImageFileContent(t *testing.T) {
	_, _, img := mountImageA(t, DefaultOptions())
	for path, want := range map[string]string{
		"etc/passwd":            passwdContent,
		"etc/shadow":            shadowContent,
		"etc/os-release":        osReleaseA, // from the second layer
		"etc/empty":             "",
		"usr/bin/hardtool":      hardContent,
		"ünïcødé/日本語.txt":       unicodeContent,
		"lib/libhard.so.1":      hardContent, // through the symlink
		"var/lib/implicit/data": "deep\n",
		"home/user/notes.txt":   "remember the milk\n",
	} {
		got, err := os.ReadFile(filepath.Join(img, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	f, err := os.Open(filepath.Join(img, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8)
	if n, err := f.ReadAt(buf, 5); err != nil || string(buf[:n]) != passwdContent[5:13] {
		t.Errorf("ReadAt(5) = %q, %v; want %q", buf[:n], err, passwdContent[5:13])
	}
	if n, err := f.ReadAt(buf, int64(len(passwdContent)-3)); n != 3 || string(buf[:n]) != passwdContent[len(passwdContent)-3:] {
		t.Errorf("ReadAt near the end = %q, %v", buf[:n], err)
	}
	if n, _ := f.ReadAt(buf, int64(len(passwdContent))+100); n != 0 {
		t.Errorf("ReadAt past the end read %d bytes", n)
	}
}

func TestImageHardLinksShareOneInode(t *testing.T) {
	_, _, img := mountImageA(t, DefaultOptions())
	var first unix.Stat_t
	for i, path := range []string{"usr/lib/libhard.so", "usr/lib/libhard.so.1", "usr/bin/hardtool"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(img, path), &st); err != nil {
			t.Fatal(err)
		}
		if st.Nlink != 3 {
			t.Errorf("%s: nlink = %d, want 3", path, st.Nlink)
		}
		if i == 0 {
			first = st
		} else if st.Ino != first.Ino || st.Dev != first.Dev {
			t.Errorf("%s: ino %d, want %d as for the first name", path, st.Ino, first.Ino)
		}
	}
	var other unix.Stat_t
	if err := unix.Lstat(filepath.Join(img, "etc/passwd"), &other); err != nil {
		t.Fatal(err)
	}
	if other.Ino == first.Ino {
		t.Error("an unrelated file shares the hard-linked inode")
	}
}

func TestImageSymlinks(t *testing.T) {
	_, mnt, img := mountImageA(t, DefaultOptions())
	if got, err := os.Readlink(filepath.Join(img, "lib")); err != nil || got != "usr/lib" {
		t.Errorf("readlink lib = %q, %v", got, err)
	}
	tag := filepath.Join(mnt, "ns", "app", "latest")
	got, err := os.Readlink(tag)
	if err != nil {
		t.Fatal(err)
	}
	if want := imageDirName(newTestImages(t).a); got != want {
		t.Errorf("readlink latest = %q, want %q", got, want)
	}
	if !strings.HasPrefix(got, "@sha256:") {
		t.Errorf("tag target %q does not start with @sha256:", got)
	}
	if data, err := os.ReadFile(filepath.Join(tag, "etc/os-release")); err != nil || string(data) != osReleaseA {
		t.Errorf("reading through the tag = %q, %v", data, err)
	}
}

func TestImageXattrs(t *testing.T) {
	_, _, img := mountImageA(t, DefaultOptions())
	ping := filepath.Join(img, "usr/bin/ping")

	for name, want := range map[string]string{"security.capability": capabilityXattr, "user.x": userXattr} {
		size, err := unix.Lgetxattr(ping, name, nil)
		if err != nil || size != len(want) {
			t.Errorf("size of %s = %d, %v; want %d", name, size, err, len(want))
		}
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(ping, name, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("%s = %q, %v; want %q", name, buf[:n], err, want)
		}
	}
	if _, err := unix.Lgetxattr(ping, "user.x", make([]byte, 2)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("getxattr into a short buffer: %v, want ERANGE", err)
	}
	if _, err := unix.Lgetxattr(ping, "user.missing", make([]byte, 16)); !errors.Is(err, syscall.ENODATA) {
		t.Errorf("getxattr of a missing name: %v, want ENODATA", err)
	}

	buf := make([]byte, 256)
	n, err := unix.Llistxattr(ping, buf)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimSuffix(string(buf[:n]), "\x00"), "\x00")
	slices.Sort(names)
	if want := []string{"security.capability", "user.x"}; !slices.Equal(names, want) {
		t.Errorf("listxattr = %q, want %q", names, want)
	}
	if size, err := unix.Llistxattr(ping, nil); err != nil || size != n {
		t.Errorf("listxattr size = %d, %v; want %d", size, err, n)
	}
	if _, err := unix.Llistxattr(ping, make([]byte, 3)); !errors.Is(err, syscall.ERANGE) {
		t.Errorf("listxattr into a short buffer: %v, want ERANGE", err)
	}
	if n, err := unix.Llistxattr(filepath.Join(img, "etc/passwd"), buf); err != nil || n != 0 {
		t.Errorf("listxattr without xattrs = %d, %v", n, err)
	}
}

func TestImageWalk(t *testing.T) {
	_, _, img := mountImageA(t, DefaultOptions())
	var got []string
	err := filepath.WalkDir(img, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(img, path)
		got = append(got, rel+" "+d.Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		". d---------",
		"bin d---------", "bin/su ----------", "bin/wall ----------",
		"dev d---------", "dev/big Dc---------", "dev/initctl p---------", "dev/null Dc---------", "dev/sda D---------",
		"etc d---------", "etc/empty ----------", "etc/nomode ----------", "etc/os-release ----------", "etc/passwd ----------", "etc/shadow ----------",
		"home d---------", "home/user d---------", "home/user/notes.txt ----------",
		"lib L---------",
		"tmp d---------",
		"usr d---------", "usr/bin d---------", "usr/bin/hardtool ----------", "usr/bin/ping ----------",
		"usr/lib d---------", "usr/lib/libhard.so ----------", "usr/lib/libhard.so.1 ----------",
		"var d---------", "var/lib d---------", "var/lib/implicit d---------", "var/lib/implicit/data ----------",
		"ünïcødé d---------", "ünïcødé/日本語.txt ----------",
	}
	if !slices.Equal(got, want) {
		t.Errorf("walk:\n got %q\nwant %q", got, want)
	}
}

func TestImageIsReadOnly(t *testing.T) {
	_, mnt, img := mountImageA(t, DefaultOptions())
	passwd := filepath.Join(img, "etc/passwd")
	stream := filepath.Join(mnt, "ns", "app")
	for name, op := range map[string]func() error{
		"create":          func() error { return os.WriteFile(filepath.Join(img, "etc/new"), []byte("x"), 0o644) },
		"overwrite":       func() error { return os.WriteFile(passwd, []byte("x"), 0o644) },
		"open O_RDWR":     func() error { f, err := os.OpenFile(passwd, os.O_RDWR, 0); f.Close(); return err },
		"truncate":        func() error { return os.Truncate(passwd, 0) },
		"mkdir":           func() error { return os.Mkdir(filepath.Join(img, "newdir"), 0o755) },
		"remove file":     func() error { return os.Remove(passwd) },
		"remove dir":      func() error { return os.Remove(filepath.Join(img, "tmp")) },
		"chmod":           func() error { return os.Chmod(passwd, 0o777) },
		"chown":           func() error { return os.Lchown(passwd, 1, 1) },
		"chtimes":         func() error { return os.Chtimes(passwd, time.Now(), time.Now()) },
		"symlink":         func() error { return os.Symlink("etc/passwd", filepath.Join(img, "newlink")) },
		"link":            func() error { return os.Link(passwd, filepath.Join(img, "etc/passwd2")) },
		"rename":          func() error { return os.Rename(passwd, filepath.Join(img, "etc/passwd2")) },
		"mknod":           func() error { return unix.Mknod(filepath.Join(img, "fifo"), unix.S_IFIFO|0o644, 0) },
		"setxattr":        func() error { return unix.Lsetxattr(passwd, "user.y", []byte("v"), 0) },
		"removexattr":     func() error { return unix.Lremovexattr(filepath.Join(img, "usr/bin/ping"), "user.x") },
		"catalog mkdir":   func() error { return os.Mkdir(filepath.Join(mnt, "newns"), 0o755) },
		"catalog symlink": func() error { return os.Symlink("@sha256:00", filepath.Join(stream, "newtag")) },
		"catalog remove":  func() error { return os.Remove(filepath.Join(stream, "latest")) },
		"catalog rename":  func() error { return os.Rename(filepath.Join(stream, "latest"), filepath.Join(stream, "old")) },
		"catalog chmod":   func() error { return os.Chmod(stream, 0o777) },
		"catalog create":  func() error { return os.WriteFile(filepath.Join(mnt, "file"), nil, 0o644) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

// TestDefaultPermissions checks that the kernel enforces the image's own
// modes for other users (default_permissions with allow_other).
func TestDefaultPermissions(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	_, mnt, img := mountImageA(t, DefaultOptions())
	// t.TempDir makes private directories; the other user must reach the
	// mount through them.
	for dir := filepath.Dir(mnt); dir != filepath.Dir(dir) && strings.HasPrefix(dir, os.TempDir()+"/"); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	catAsNobody := func(path string) (string, error) {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), errors.New(strings.TrimSpace(stderr.String()))
		}
		return string(out), nil
	}
	if out, err := catAsNobody(filepath.Join(img, "etc/passwd")); err != nil || out != passwdContent {
		t.Errorf("nobody reading a 0644 file: %q, %v", out, err)
	}
	for _, path := range []string{"etc/shadow", "etc/nomode", "home/user/notes.txt"} {
		_, err := catAsNobody(filepath.Join(img, path))
		if err == nil || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("nobody reading %s: %v, want permission denied", path, err)
		}
	}
	// Root is not bound by the modes.
	if data, err := os.ReadFile(filepath.Join(img, "etc/shadow")); err != nil || string(data) != shadowContent {
		t.Errorf("root reading a 0600 file: %q, %v", data, err)
	}
}

func TestImageReadErrorIsEIO(t *testing.T) {
	var logs logBuffer
	im, _, img := mountImageA(t, Options{Logger: logs.logger()})
	im.reader.fail(im.topA, errors.New("blob vanished"))
	_, err := os.ReadFile(filepath.Join(img, "etc/os-release"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with a failing reader: %v, want EIO", err)
	}
	got := logs.String()
	for _, want := range []string{"blob vanished", im.a.String(), im.topA.String(), "etc/os-release"} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	// The other layer still reads.
	if data, err := os.ReadFile(filepath.Join(img, "etc/passwd")); err != nil || string(data) != passwdContent {
		t.Errorf("reading from the healthy layer: %q, %v", data, err)
	}
}

func TestStatfs(t *testing.T) {
	_, mnt, img := mountImageA(t, DefaultOptions())
	for _, path := range []string{mnt, img} {
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Namelen != 255 || st.Bsize != blockSize {
			t.Errorf("statfs %s: namelen %d bsize %d", path, st.Namelen, st.Bsize)
		}
		if st.Flags&unix.ST_RDONLY == 0 {
			t.Errorf("statfs %s: flags %#x lack ST_RDONLY", path, st.Flags)
		}
	}
}
