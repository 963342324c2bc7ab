package index

import (
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Ino numbers the inodes of a View. Numbers are dense, start at RootIno and
// follow path order, so they are stable for a given image.
type Ino uint32

// RootIno is the image's root directory.
const RootIno Ino = 1

// Inode is one file of a merged image. Hard links share one Inode. View
// hands out copies; the slices in it belong to the View and must not be
// modified.
type Inode struct {
	Type               EntryType
	Mode               uint32
	UID, GID           uint32
	Size               int64
	ModTime            time.Time
	Linkname           string
	DevMajor, DevMinor uint32
	Xattrs             []Xattr
	Nlink              uint32
	// Layer indexes View.Layers for a regular file's data; -1 otherwise.
	Layer  int
	Offset int64
	// Sparse lists a sparse file's data fragments (see Entry.Sparse).
	Sparse []Fragment
}

// Dirent is one name in a directory.
type Dirent struct {
	Name string
	Ino  Ino
}

// View is the immutable merged filesystem of an image.
//
// Views of every shown image stay in memory for as long as the image is
// shown, so a View is laid out to cost little per entry (about 64 bytes
// plus the name): one fixed-size record per inode, every directory's
// entries in one flat array, and every name in one string. What most
// inodes lack (link targets, xattrs, sparse maps) lives out of line, and
// xattr sets, which many files of an image share, are stored once.
type View struct {
	layers []digest.Digest
	inodes []inodeRecord
	// dirents holds the entries of every directory, each directory's
	// entries contiguous and sorted by name.
	dirents []direntRecord
	// names holds the names of dirents in the same order, back to back:
	// entry i's name ends where entry i+1's begins. A string, so that a
	// Dirent's Name is a substring of it and costs no allocation.
	names string
	// links holds the targets of symlinks back to back.
	links string
	// xattrs holds each distinct xattr set once; inodes refer to it by
	// index, and 0 means none.
	xattrs [][]Xattr
	// sparse holds the fragment maps of sparse files; a sparse file's
	// record refers to it by index + 1.
	sparse [][]Fragment
}

// inodeRecord is an Inode in 56 bytes. What a field means depends on the
// type, which is kept in the top byte of mode.
type inodeRecord struct {
	// size is a regular file's logical size or a symlink target's length.
	size int64
	// data is a regular file's data offset in its layer's stream, a
	// symlink target's offset in View.links, a directory's first entry
	// in View.dirents, or a device's major<<32 | minor.
	data      int64
	mtimeSec  int64
	mtimeNsec uint32
	// mode holds the permission bits (07777) and, from bit 24, the type.
	mode     uint32
	uid, gid uint32
	nlink    uint32
	xattrs   uint32
	// aux is a directory's entry count, or a sparse file's index + 1 in
	// View.sparse.
	aux uint32
	// layer is a regular file's layer index; -1 otherwise.
	layer int32
}

const recordTypeShift = 24

func (r *inodeRecord) typ() EntryType { return EntryType(r.mode >> recordTypeShift) }

// direntRecord is a Dirent without its name, which View.names holds.
type direntRecord struct {
	name uint32 // offset of the name in View.names
	ino  Ino
}

// Layers returns the layer digests, lowest first.
func (v *View) Layers() []digest.Digest { return v.layers }

// Len returns the number of inodes.
func (v *View) Len() int { return len(v.inodes) }

func (v *View) record(ino Ino) *inodeRecord {
	if ino < RootIno || int(ino) > len(v.inodes) {
		return nil
	}
	return &v.inodes[ino-1]
}

// Inode returns a copy of the inode numbered ino, or nil when there is
// none. Stat does the same without allocating.
func (v *View) Inode(ino Ino) *Inode {
	in, ok := v.Stat(ino)
	if !ok {
		return nil
	}
	return &in
}

// Stat returns the inode numbered ino, and false when there is none. The
// View keeps inodes packed, so this unpacks one.
func (v *View) Stat(ino Ino) (Inode, bool) {
	r := v.record(ino)
	if r == nil {
		return Inode{}, false
	}
	in := Inode{
		Type:    r.typ(),
		Mode:    r.mode & 0o7777,
		UID:     r.uid,
		GID:     r.gid,
		ModTime: time.Unix(r.mtimeSec, int64(r.mtimeNsec)).UTC(),
		Xattrs:  v.xattrs[r.xattrs],
		Nlink:   r.nlink,
		Layer:   int(r.layer),
	}
	switch in.Type {
	case TypeRegular:
		in.Size, in.Offset = r.size, r.data
		if r.aux > 0 {
			in.Sparse = v.sparse[r.aux-1]
		}
	case TypeSymlink:
		in.Size = r.size
		in.Linkname = v.links[r.data : r.data+r.size]
	case TypeChar, TypeBlock:
		in.DevMajor, in.DevMinor = uint32(r.data>>32), uint32(r.data)
	}
	return in, true
}

// Type returns the type of inode ino, or 0 when there is none. It is
// cheaper than Inode for a caller that needs nothing else, such as a
// directory listing.
func (v *View) Type(ino Ino) EntryType {
	if r := v.record(ino); r != nil {
		return r.typ()
	}
	return 0
}

// entries returns the range of dir's entries in v.dirents.
func (v *View) entries(dir Ino) (start, end int) {
	r := v.record(dir)
	if r == nil || r.typ() != TypeDir {
		return 0, 0
	}
	return int(r.data), int(r.data) + int(r.aux)
}

// DirLen returns the number of entries of directory dir; 0 when dir is
// not a directory.
func (v *View) DirLen(dir Ino) int {
	start, end := v.entries(dir)
	return end - start
}

// DirEntry returns entry i (0 ≤ i < DirLen(dir)) of directory dir, in name
// order. Its Name shares memory with the View.
func (v *View) DirEntry(dir Ino, i int) Dirent {
	start, _ := v.entries(dir)
	return v.dirent(start + i)
}

func (v *View) dirent(i int) Dirent {
	return Dirent{Name: v.direntName(i), Ino: v.dirents[i].ino}
}

func (v *View) direntName(i int) string {
	end := len(v.names)
	if i+1 < len(v.dirents) {
		end = int(v.dirents[i+1].name)
	}
	return v.names[v.dirents[i].name:end]
}

// ReadDir returns the entries of directory ino sorted by name.
func (v *View) ReadDir(ino Ino) []Dirent {
	start, end := v.entries(ino)
	if start == end {
		return nil
	}
	out := make([]Dirent, 0, end-start)
	for i := start; i < end; i++ {
		out = append(out, v.dirent(i))
	}
	return out
}

// Lookup finds name in directory dir.
func (v *View) Lookup(dir Ino, name string) (Ino, bool) {
	start, end := v.entries(dir)
	i := start + sort.Search(end-start, func(i int) bool { return v.direntName(start+i) >= name })
	if i < end && v.direntName(i) == name {
		return v.dirents[i].ino, true
	}
	return 0, false
}

// LookupPath resolves a slash-separated path from the root without
// following symlinks.
func (v *View) LookupPath(p string) (Ino, bool) {
	ino := RootIno
	for _, c := range strings.Split(p, "/") {
		if c == "" {
			continue
		}
		next, ok := v.Lookup(ino, c)
		if !ok {
			return 0, false
		}
		ino = next
	}
	return ino, true
}

// Path returns a path of inode ino from the root ("" for the root itself),
// and false when there is none. A hard-linked inode has several; Path
// returns one of them.
//
// The View keeps no parent links, which would cost every inode 4 bytes for
// the sake of error messages, so Path scans the whole View: it is meant for
// reporting a failure, not for serving requests.
func (v *View) Path(ino Ino) (string, bool) {
	if v.record(ino) == nil {
		return "", false
	}
	parent := make([]Ino, len(v.inodes)+1)
	name := make([]int32, len(v.inodes)+1)
	for i := range v.inodes {
		r := &v.inodes[i]
		if r.typ() != TypeDir {
			continue
		}
		for j := int(r.data); j < int(r.data)+int(r.aux); j++ {
			if child := v.dirents[j].ino; parent[child] == 0 {
				parent[child], name[child] = Ino(i+1), int32(j)
			}
		}
	}
	var components []string
	for ino != RootIno {
		if parent[ino] == 0 {
			return "", false
		}
		components = append(components, v.direntName(int(name[ino])))
		ino = parent[ino]
	}
	slices.Reverse(components)
	return strings.Join(components, "/"), true
}
