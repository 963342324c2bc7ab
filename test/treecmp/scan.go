package treecmp

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// node is everything Compare looks at for one path.
type node struct {
	stat   unix.Stat_t
	target string            // symlinks
	sum    [sha256.Size]byte // regular files
	xattrs map[string]string
}

func (n *node) fileType() uint32 { return n.stat.Mode & unix.S_IFMT }

// tree is a scanned directory tree keyed by slash-separated path relative
// to its root ("." is the root itself).
type tree map[string]*node

// scan records every path under root without following symlinks. It works
// relative to open directory descriptors (openat, fstatat) so that paths
// longer than PATH_MAX, which the deep-path test image produces, are still
// reachable.
func scan(root string) (tree, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open tree root %s: %w", root, err)
	}
	defer unix.Close(fd)

	rootNode := &node{}
	if err := unix.Fstat(fd, &rootNode.stat); err != nil {
		return nil, fmt.Errorf("stat tree root %s: %w", root, err)
	}
	if rootNode.xattrs, err = readXattrs(procPath(fd, ".")); err != nil {
		return nil, fmt.Errorf("xattrs of tree root %s: %w", root, err)
	}
	t := tree{".": rootNode}
	if err := t.scanDir(fd, "."); err != nil {
		return nil, fmt.Errorf("scan %s: %w", root, err)
	}
	return t, nil
}

func (t tree) scanDir(dirfd int, dir string) error {
	names, err := readDirNames(dirfd)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, name := range names {
		rel := path.Join(dir, name)
		n := &node{}
		if err := unix.Fstatat(dirfd, name, &n.stat, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("lstat %s: %w", rel, err)
		}
		if n.xattrs, err = readXattrs(procPath(dirfd, name)); err != nil {
			return fmt.Errorf("xattrs of %s: %w", rel, err)
		}
		t[rel] = n
		switch n.fileType() {
		case unix.S_IFLNK:
			if n.target, err = readlinkat(dirfd, name); err != nil {
				return fmt.Errorf("readlink %s: %w", rel, err)
			}
		case unix.S_IFREG:
			if n.sum, err = hashFile(dirfd, name); err != nil {
				return fmt.Errorf("hash %s: %w", rel, err)
			}
		case unix.S_IFDIR:
			sub, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open %s: %w", rel, err)
			}
			err = t.scanDir(sub, rel)
			unix.Close(sub)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// readDirNames lists a directory by descriptor; it reads through a
// duplicate because os.File takes ownership of the descriptor it wraps.
func readDirNames(dirfd int) ([]string, error) {
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return nil, fmt.Errorf("dup directory descriptor: %w", err)
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

func hashFile(dirfd int, name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return sum, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// procPath names dirfd/name through /proc because the xattr syscalls have
// no *at variants on the kernels we support; the result stays short however
// deep the directory is.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// readXattrs returns all extended attributes of the path itself (lgetxattr:
// a symlink's own, not its target's), in every namespace the caller may
// read, which as root includes trusted.* and security.*.
func readXattrs(p string) (map[string]string, error) {
	names, err := listXattrNames(p)
	if err != nil {
		return nil, err
	}
	xattrs := make(map[string]string, len(names))
	for _, name := range names {
		value, err := getXattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed between list and get
		}
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", name, err)
		}
		xattrs[name] = value
	}
	return xattrs, nil
}

func listXattrNames(p string) ([]string, error) {
	for {
		size, err := unix.Llistxattr(p, nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil // a filesystem without xattrs has none to compare
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		if size == 0 {
			return nil, nil
		}
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew since the size query
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		return splitNul(buf[:n]), nil
	}
}

func getXattr(p, name string) (string, error) {
	for {
		size, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			return "", err
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

func splitNul(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := slices.Index(b, 0)
		if i < 0 {
			i = len(b)
		}
		if i > 0 {
			out = append(out, string(b[:i]))
		}
		b = b[min(i+1, len(b)):]
	}
	return out
}
