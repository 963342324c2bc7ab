package index

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
)

// BuildView merges the completed layers (lowest first) into a View,
// applying the OCI image spec's overlay rules: whiteouts and opaque markers
// hide what lower layers had, later entries replace earlier ones (also
// across types), missing parents appear as directories and hard links share
// their target's inode.
func BuildView(ctx context.Context, store Store, layers []digest.Digest) (*View, error) {
	b := newViewBuilder()
	for i, layer := range layers {
		if err := b.applyLayer(ctx, store, i, layer); err != nil {
			return nil, err
		}
	}
	v, err := b.freeze(layers)
	if err != nil {
		return nil, err
	}
	if b.nodes >= returnMemoryAfter {
		// The builder's tree is garbage now and several times the size
		// of the View. The Go runtime would keep that memory for the
		// next heap growth and give it back to the OS only slowly, so a
		// daemon that just showed a big image would sit idle at its
		// peak. Measured with `go run ./test/bench -only memory` (the
		// million-entry image): 448–465 MiB idle without this call,
		// 174–230 MiB with it.
		debug.FreeOSMemory()
	}
	return v, nil
}

// returnMemoryAfter is the number of build nodes from which BuildView hands
// the builder's memory back to the OS at once: about 10 MB of garbage, and
// a full collection costs little next to building that many nodes.
const returnMemoryAfter = 100_000

// buildNode is the mutable form of an inode while layers are applied. It
// holds what every inode has; the rest, which few have, is out of line.
type buildNode struct {
	typ                EntryType
	mode               uint32
	uid, gid           uint32
	nlink              uint32
	devMajor, devMinor uint32
	layer              int32
	mtimeSec           int64
	mtimeNsec          uint32
	// ino is the number freeze gave the node; 0 before.
	ino    Ino
	size   int64
	offset int64
	extra  *buildExtra
	// children is non-nil for directories.
	children map[string]*buildNode
}

// buildExtra holds what only some inodes have.
type buildExtra struct {
	linkname string
	xattrs   []Xattr
	sparse   []Fragment
}

type viewBuilder struct {
	root *buildNode
	// nodes counts the nodes ever made and names the names ever given,
	// so freeze can size its tables once.
	nodes, names int
}

func newViewBuilder() *viewBuilder {
	return &viewBuilder{root: newImplicitDir(), nodes: 1}
}

// newImplicitDir makes a directory that no entry described, as extraction
// tools do with 0755 root:root and the epoch as mtime.
func newImplicitDir() *buildNode {
	return &buildNode{typ: TypeDir, mode: 0o755, layer: -1, children: map[string]*buildNode{}}
}

var (
	errParentNotDir    = errors.New("a parent path component is not a directory")
	errParentSymlink   = errors.New("a parent path component is a symlink; refusing to follow it")
	errHardlinkMissing = errors.New("hard link target does not exist")
	errHardlinkToDir   = errors.New("hard link target is a directory")
	errRootNotDir      = errors.New("the root entry is not a directory")
	errViewTooLarge    = errors.New("the merged image is too large to show")
)

func (b *viewBuilder) applyLayer(ctx context.Context, store Store, li int, layer digest.Digest) error {
	info, err := store.Layer(ctx, layer)
	if err != nil {
		return err
	}
	if !info.WhiteoutFree {
		if err := b.applyWhiteouts(ctx, store, layer); err != nil {
			return fmt.Errorf("layer %s: applying whiteouts: %w", layer, err)
		}
	}
	return store.Entries(ctx, layer, func(e Entry) error {
		if _, name := path.Split(e.Path); strings.HasPrefix(name, whiteoutPrefix) {
			return nil
		}
		if err := b.add(li, e); err != nil {
			return &EntryError{Layer: layer, Path: e.Path, Err: err}
		}
		return nil
	})
}

// applyWhiteouts hides what the layer's whiteouts name. Whiteouts only
// hide what lower layers had (OCI image spec), so they all apply before
// any entry of the same layer is added.
func (b *viewBuilder) applyWhiteouts(ctx context.Context, store Store, layer digest.Digest) error {
	return store.Entries(ctx, layer, func(e Entry) error {
		dir, name := path.Split(e.Path)
		if !strings.HasPrefix(name, whiteoutPrefix) {
			return nil
		}
		parent, err := b.walkDir(strings.TrimSuffix(dir, "/"), false)
		if err != nil || parent == nil {
			return nil // nothing below to hide
		}
		if name == opaqueMarker {
			for n, child := range parent.children {
				b.unlink(child)
				delete(parent.children, n)
			}
			return nil
		}
		target := strings.TrimPrefix(name, whiteoutPrefix)
		if child, ok := parent.children[target]; ok {
			b.unlink(child)
			delete(parent.children, target)
		}
		return nil
	})
}

// walkDir returns the directory at p, creating missing directories when
// create is set. Without create a missing directory yields nil, nil.
func (b *viewBuilder) walkDir(p string, create bool) (*buildNode, error) {
	n := b.root
	if p == "" {
		return n, nil
	}
	for _, c := range strings.Split(p, "/") {
		child, ok := n.children[c]
		switch {
		case !ok && !create:
			return nil, nil
		case !ok:
			child = newImplicitDir()
			b.nodes++
			n.children[c] = child
		case child.typ == TypeSymlink:
			return nil, errParentSymlink
		case child.typ != TypeDir:
			return nil, errParentNotDir
		}
		n = child
	}
	return n, nil
}

func (b *viewBuilder) add(li int, e Entry) error {
	if e.Path == "" {
		if e.Type != TypeDir {
			return errRootNotDir
		}
		b.root.setFromEntry(e, li)
		return nil
	}
	dir, name := path.Split(e.Path)
	parent, err := b.walkDir(strings.TrimSuffix(dir, "/"), true)
	if err != nil {
		return err
	}
	existing := parent.children[name]
	switch e.Type {
	case TypeDir:
		if existing != nil && existing.typ == TypeDir {
			existing.setFromEntry(e, li)
			return nil
		}
		n := &buildNode{children: map[string]*buildNode{}}
		n.setFromEntry(e, li)
		b.nodes++
		b.replace(parent, name, existing, n)
	case TypeHardlink:
		target, err := b.lookupTarget(e.Linkname)
		if err != nil {
			return fmt.Errorf("link to %q: %w", e.Linkname, err)
		}
		if target == existing {
			return nil
		}
		b.names++
		b.replace(parent, name, existing, target)
	default:
		n := &buildNode{}
		n.setFromEntry(e, li)
		b.nodes++
		b.replace(parent, name, existing, n)
	}
	return nil
}

func (b *viewBuilder) lookupTarget(p string) (*buildNode, error) {
	dir, name := path.Split(p)
	parent, err := b.walkDir(strings.TrimSuffix(dir, "/"), false)
	if err != nil {
		return nil, err
	}
	if parent == nil || name == "" {
		return nil, errHardlinkMissing
	}
	target, ok := parent.children[name]
	if !ok {
		return nil, errHardlinkMissing
	}
	if target.typ == TypeDir {
		return nil, errHardlinkToDir
	}
	return target, nil
}

func (b *viewBuilder) replace(parent *buildNode, name string, old, n *buildNode) {
	if old != nil {
		b.unlink(old)
	}
	n.nlink++
	parent.children[name] = n
}

// unlink drops one name of n; a directory takes its whole subtree with it,
// so hard links into that subtree lose a link each.
func (b *viewBuilder) unlink(n *buildNode) {
	n.nlink--
	for _, child := range n.children {
		b.unlink(child)
	}
}

// setFromEntry gives n the attributes of e, keeping its links and
// children: a directory entry that repeats a directory only changes what
// it shows.
func (n *buildNode) setFromEntry(e Entry, li int) {
	n.typ = e.Type
	n.mode = e.Mode & 0o7777
	n.uid, n.gid = e.UID, e.GID
	n.mtimeSec, n.mtimeNsec = e.ModTime.Unix(), uint32(e.ModTime.Nanosecond())
	n.devMajor, n.devMinor = e.DevMajor, e.DevMinor
	n.layer, n.size, n.offset, n.extra = -1, 0, 0, nil
	switch e.Type {
	case TypeRegular:
		n.layer, n.size, n.offset = int32(li), e.Size, e.Offset
	case TypeSymlink:
		n.size = int64(len(e.Linkname))
	}
	if e.Type == TypeSymlink || len(e.Xattrs) > 0 || (e.Type == TypeRegular && e.Sparse != nil) {
		n.extra = &buildExtra{xattrs: e.Xattrs}
		if e.Type == TypeSymlink {
			n.extra.linkname = e.Linkname
		}
		if e.Type == TypeRegular {
			n.extra.sparse = e.Sparse
		}
	}
}

// freezer turns the builder's tree into a View.
type freezer struct {
	v        *View
	names    strings.Builder
	links    strings.Builder
	xattrIDs map[string]uint32
	scratch  []byte
}

// freeze numbers reachable inodes in path order and packs them into a View.
func (b *viewBuilder) freeze(layers []digest.Digest) (*View, error) {
	if b.nodes > math.MaxUint32-1 {
		return nil, errViewTooLarge
	}
	f := &freezer{
		v: &View{
			layers:  append([]digest.Digest(nil), layers...),
			inodes:  make([]inodeRecord, 0, b.nodes),
			dirents: make([]direntRecord, 0, b.nodes+b.names),
			xattrs:  [][]Xattr{nil},
		},
		xattrIDs: map[string]uint32{},
	}
	if _, err := f.visit(b.root); err != nil {
		return nil, err
	}
	v := f.v
	v.names, v.links = exactString(&f.names), exactString(&f.links)
	// The tables were sized for every node and name ever made; whiteouts
	// and replaced entries leave some of that unused.
	if cap(v.inodes)-len(v.inodes) > len(v.inodes)/8 {
		v.inodes = append([]inodeRecord(nil), v.inodes...)
	}
	if cap(v.dirents)-len(v.dirents) > len(v.dirents)/8 {
		v.dirents = append([]direntRecord(nil), v.dirents...)
	}
	return v, nil
}

// exactString returns what b holds without the spare capacity it grew,
// which can be as large again: the names stay as long as the View.
func exactString(b *strings.Builder) string {
	if b.Cap()-b.Len() > b.Len()/8 {
		return strings.Clone(b.String())
	}
	return b.String()
}

// visit numbers n and, for a directory, its subtree, depth first in name
// order, and returns n's number. A hard-linked node is numbered once.
func (f *freezer) visit(n *buildNode) (Ino, error) {
	if n.ino != 0 {
		return n.ino, nil
	}
	v := f.v
	rec, err := f.record(n)
	if err != nil {
		return 0, err
	}
	v.inodes = append(v.inodes, rec)
	n.ino = Ino(len(v.inodes))
	if n.typ != TypeDir {
		return n.ino, nil
	}
	names := make([]string, 0, len(n.children))
	for name := range n.children {
		names = append(names, name)
	}
	sort.Strings(names)
	// The directory's entries and their names are laid down before any
	// subdirectory's, so both stay contiguous and in the same order.
	start := len(v.dirents)
	for _, name := range names {
		if f.names.Len() > math.MaxUint32-len(name) {
			return 0, errViewTooLarge
		}
		v.dirents = append(v.dirents, direntRecord{name: uint32(f.names.Len())})
		f.names.WriteString(name)
	}
	subdirs := uint32(0)
	for i, name := range names {
		child := n.children[name]
		ino, err := f.visit(child)
		if err != nil {
			return 0, err
		}
		v.dirents[start+i].ino = ino
		if child.typ == TypeDir {
			subdirs++
		}
	}
	r := &v.inodes[n.ino-1]
	r.data, r.aux = int64(start), uint32(len(names))
	r.nlink = 2 + subdirs
	return n.ino, nil
}

// record packs the attributes of n.
func (f *freezer) record(n *buildNode) (inodeRecord, error) {
	r := inodeRecord{
		size:      n.size,
		mtimeSec:  n.mtimeSec,
		mtimeNsec: n.mtimeNsec,
		mode:      n.mode | uint32(n.typ)<<recordTypeShift,
		uid:       n.uid,
		gid:       n.gid,
		nlink:     n.nlink,
		layer:     n.layer,
	}
	switch n.typ {
	case TypeRegular:
		r.data = n.offset
		if n.extra != nil && n.extra.sparse != nil {
			f.v.sparse = append(f.v.sparse, n.extra.sparse)
			r.aux = uint32(len(f.v.sparse))
		}
	case TypeSymlink:
		r.data = int64(f.links.Len())
		f.links.WriteString(n.extra.linkname)
	case TypeChar, TypeBlock:
		r.data = int64(n.devMajor)<<32 | int64(n.devMinor)
	}
	if n.extra != nil && len(n.extra.xattrs) > 0 {
		id, err := f.xattrSet(n.extra.xattrs)
		if err != nil {
			return r, err
		}
		r.xattrs = id
	}
	return r, nil
}

// xattrSet returns the index of the set xs in the View, adding it when it
// is new. Files of an image often carry the same xattrs (a capability, an
// SELinux label), so each distinct set is kept once.
func (f *freezer) xattrSet(xs []Xattr) (uint32, error) {
	key := f.scratch[:0]
	for _, x := range xs {
		key = binary.AppendUvarint(key, uint64(len(x.Name)))
		key = append(key, x.Name...)
		key = binary.AppendUvarint(key, uint64(len(x.Value)))
		key = append(key, x.Value...)
	}
	f.scratch = key
	if id, ok := f.xattrIDs[string(key)]; ok {
		return id, nil
	}
	if len(f.v.xattrs) >= math.MaxUint32 {
		return 0, errViewTooLarge
	}
	id := uint32(len(f.v.xattrs))
	f.v.xattrs = append(f.v.xattrs, xs)
	f.xattrIDs[string(key)] = id
	return id, nil
}
