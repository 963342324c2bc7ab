package imagegen

import (
	"archive/tar"
	"maps"
	"path"
	"strings"
	"time"
)

// Entry is one tar entry. Header.Size is filled in from Content when the
// layer is written, so builders never have to keep the two in step.
type Entry struct {
	Header  tar.Header
	Content Content // regular files only; nil means empty
}

// Whiteout and opaque-directory markers as defined by the OCI image spec.
const (
	WhiteoutPrefix = ".wh."
	OpaqueMarker   = ".wh..wh..opq"
)

// BaseTime is the mtime builders give entries: fixed so that layers are
// reproducible, and sub-second so that lost nanoseconds are noticed.
func BaseTime() time.Time { return time.Date(2024, 3, 1, 12, 0, 0, 123456789, time.UTC) }

func newEntry(name string, typeflag byte, mode int64) Entry {
	return Entry{Header: tar.Header{
		Name:     name,
		Typeflag: typeflag,
		Mode:     mode,
		ModTime:  BaseTime(),
		// PAX keeps sub-second mtimes and carries xattrs; entries that want
		// GNU or USTAR encoding say so with InFormat.
		Format: tar.FormatPAX,
	}}
}

// Dir is a directory entry; the name gets the trailing slash tar uses.
func Dir(name string, mode int64) Entry {
	if !strings.HasSuffix(name, "/") {
		name += "/"
	}
	return newEntry(name, tar.TypeDir, mode)
}

// File is a regular file entry.
func File(name string, mode int64, content Content) Entry {
	e := newEntry(name, tar.TypeReg, mode)
	e.Content = content
	return e
}

// Symlink is a symbolic link entry pointing at target.
func Symlink(name, target string) Entry {
	e := newEntry(name, tar.TypeSymlink, 0o777)
	e.Header.Linkname = target
	return e
}

// Hardlink is a hard link entry; target is an archive path, not a path
// relative to the link.
func Hardlink(name, target string) Entry {
	e := newEntry(name, tar.TypeLink, 0o644)
	e.Header.Linkname = target
	return e
}

// CharDevice is a character device node.
func CharDevice(name string, mode int64, major, minor int64) Entry {
	e := newEntry(name, tar.TypeChar, mode)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// BlockDevice is a block device node.
func BlockDevice(name string, mode int64, major, minor int64) Entry {
	e := newEntry(name, tar.TypeBlock, mode)
	e.Header.Devmajor, e.Header.Devminor = major, minor
	return e
}

// Fifo is a named pipe.
func Fifo(name string, mode int64) Entry { return newEntry(name, tar.TypeFifo, mode) }

// Whiteout deletes target (file or whole directory) of lower layers.
func Whiteout(target string) Entry {
	dir, base := path.Split(strings.TrimSuffix(target, "/"))
	return newEntry(dir+WhiteoutPrefix+base, tar.TypeReg, 0o644)
}

// Opaque hides everything lower layers put in dir; entries for dir in the
// same layer stay visible.
func Opaque(dir string) Entry {
	return newEntry(path.Join(dir, OpaqueMarker), tar.TypeReg, 0o644)
}

// Owned sets the numeric owner.
func (e Entry) Owned(uid, gid int) Entry {
	e.Header.Uid, e.Header.Gid = uid, gid
	return e
}

// At sets the modification time.
func (e Entry) At(t time.Time) Entry {
	e.Header.ModTime = t
	return e
}

// InFormat selects the tar header encoding for this entry.
func (e Entry) InFormat(f tar.Format) Entry {
	e.Header.Format = f
	return e
}

// WithXattr adds an extended attribute as a SCHILY.xattr PAX record, the
// encoding GNU tar, Docker and umoci use.
func (e Entry) WithXattr(name string, value []byte) Entry {
	records := maps.Clone(e.Header.PAXRecords)
	if records == nil {
		records = map[string]string{}
	}
	records["SCHILY.xattr."+name] = string(value)
	e.Header.PAXRecords = records
	return e
}
