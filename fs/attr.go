package fs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/index"
)

// Inode numbers are unique across the mount: every published image gets a
// serial and numbers its inodes serial<<32 | view inode, and catalog nodes
// count up from catalogInoBase, which image serials (kept below 1<<31)
// never reach. The FUSE root is inode 1.
const (
	rootIno        uint64 = fuse.FUSE_ROOT_ID
	catalogInoBase uint64 = 1 << 63
	maxImageSerial uint64 = 1<<31 - 1
)

func imageIno(serial uint64, ino index.Ino) uint64 { return serial<<32 | uint64(ino) }

// The preferred I/O size and the unit st_blocks counts in.
const (
	blockSize     = 4096
	statBlockSize = 512
)

// fileTypeBits returns the S_IFMT bits of st_mode for an entry type.
// io/fs.FileMode encodes types and setuid/setgid/sticky differently from
// st_mode, so the kernel's bits are built here directly.
func fileTypeBits(t index.EntryType) uint32 {
	switch t {
	case index.TypeDir:
		return syscall.S_IFDIR
	case index.TypeSymlink:
		return syscall.S_IFLNK
	case index.TypeChar:
		return syscall.S_IFCHR
	case index.TypeBlock:
		return syscall.S_IFBLK
	case index.TypeFifo:
		return syscall.S_IFIFO
	}
	// The view resolves hard links to their target's inode, so what is
	// left is a regular file.
	return syscall.S_IFREG
}

// fillImageAttr reports an image inode exactly as a reference extraction
// would leave it on disk.
func fillImageAttr(out *fuse.Attr, ino uint64, in *index.Inode) {
	out.Ino = ino
	out.Mode = fileTypeBits(in.Type) | in.Mode&07777
	out.Nlink = in.Nlink
	out.Uid, out.Gid = in.UID, in.GID
	out.Size = uint64(in.Size)
	if in.Type == index.TypeChar || in.Type == index.TypeBlock {
		// FUSE carries the kernel's 32-bit new_encode_dev form, which is
		// the low half of glibc's 64-bit encoding.
		out.Rdev = uint32(unix.Mkdev(in.DevMajor, in.DevMinor))
	}
	setSizeBlocks(out)
	// An extraction sets only mtime; atime and ctime follow it so that
	// the tree looks the same on every mount.
	setAllTimes(out, in.ModTime)
}

// fillCatalogDirAttr reports a catalog directory: root-owned, read-only,
// modified when its listing last changed.
func fillCatalogDirAttr(out *fuse.Attr, ino uint64, subdirs int, changed time.Time) {
	out.Ino = ino
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = uint32(2 + subdirs)
	out.Uid, out.Gid = 0, 0
	setSizeBlocks(out)
	setAllTimes(out, changed)
}

// fillTagAttr reports a tag symlink.
func fillTagAttr(out *fuse.Attr, ino uint64, target string, changed time.Time) {
	out.Ino = ino
	out.Mode = syscall.S_IFLNK | 0o777
	out.Nlink = 1
	out.Uid, out.Gid = 0, 0
	out.Size = uint64(len(target))
	setSizeBlocks(out)
	setAllTimes(out, changed)
}

// setSizeBlocks sets st_blocks as the size in 512-byte units, rounded up.
// go-fuse would otherwise round up to whole 4 KiB pages.
func setSizeBlocks(out *fuse.Attr) {
	out.Blksize = blockSize
	out.Blocks = (out.Size + statBlockSize - 1) / statBlockSize
}

func setAllTimes(out *fuse.Attr, t time.Time) {
	out.SetTimes(&t, &t, &t)
}

// fillStatfs describes the mount for statfs(2): no free space, since
// nothing can be written, and the name length every Linux filesystem has.
func fillStatfs(out *fuse.StatfsOut, files uint64) {
	out.Bsize = blockSize
	out.Frsize = blockSize
	out.NameLen = 255
	out.Files = files
}
