package index

import (
	"context"
	"errors"
	"fmt"
	"path"
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

// Inode is one file of a merged image. Hard links share one Inode.
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
type View struct {
	layers   []digest.Digest
	inodes   []Inode
	children [][]Dirent
}

// Layers returns the layer digests, lowest first.
func (v *View) Layers() []digest.Digest { return v.layers }

// Len returns the number of inodes.
func (v *View) Len() int { return len(v.inodes) }

// Inode returns the inode numbered ino, or nil when there is none.
func (v *View) Inode(ino Ino) *Inode {
	if ino < RootIno || int(ino) > len(v.inodes) {
		return nil
	}
	return &v.inodes[ino-1]
}

// ReadDir returns the entries of directory ino sorted by name.
func (v *View) ReadDir(ino Ino) []Dirent {
	if ino < RootIno || int(ino) > len(v.children) {
		return nil
	}
	return v.children[ino-1]
}

// Lookup finds name in directory dir.
func (v *View) Lookup(dir Ino, name string) (Ino, bool) {
	ents := v.ReadDir(dir)
	i := sort.Search(len(ents), func(i int) bool { return ents[i].Name >= name })
	if i < len(ents) && ents[i].Name == name {
		return ents[i].Ino, true
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
	return b.freeze(layers), nil
}

// buildNode is the mutable form of an inode while layers are applied.
type buildNode struct {
	Inode
	children map[string]*buildNode // non-nil for directories
}

type viewBuilder struct {
	root *buildNode
	// nodes counts the nodes ever made, so freeze can size its tables once.
	nodes int
}

func newViewBuilder() *viewBuilder {
	return &viewBuilder{root: newImplicitDir(), nodes: 1}
}

// newImplicitDir makes a directory that no entry described, as extraction
// tools do with 0755 root:root.
func newImplicitDir() *buildNode {
	return &buildNode{
		Inode:    Inode{Type: TypeDir, Mode: 0o755, Layer: -1, ModTime: time.Unix(0, 0).UTC()},
		children: map[string]*buildNode{},
	}
}

var (
	errParentNotDir     = errors.New("a parent path component is not a directory")
	errParentSymlink    = errors.New("a parent path component is a symlink; refusing to follow it")
	errHardlinkMissing  = errors.New("hard link target does not exist")
	errHardlinkToDir    = errors.New("hard link target is a directory")
	errRootNotDir       = errors.New("the root entry is not a directory")
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
		case child.Type == TypeSymlink:
			return nil, errParentSymlink
		case child.Type != TypeDir:
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
		b.root.Inode = inodeFromEntry(e, li)
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
		if existing != nil && existing.Type == TypeDir {
			existing.Inode = inodeFromEntry(e, li)
			return nil
		}
		n := &buildNode{Inode: inodeFromEntry(e, li), children: map[string]*buildNode{}}
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
		b.replace(parent, name, existing, target)
	default:
		b.nodes++
		b.replace(parent, name, existing, &buildNode{Inode: inodeFromEntry(e, li)})
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
	if target.Type == TypeDir {
		return nil, errHardlinkToDir
	}
	return target, nil
}

func (b *viewBuilder) replace(parent *buildNode, name string, old, n *buildNode) {
	if old != nil {
		b.unlink(old)
	}
	n.Nlink++
	parent.children[name] = n
}

// unlink drops one name of n; a directory takes its whole subtree with it,
// so hard links into that subtree lose a link each.
func (b *viewBuilder) unlink(n *buildNode) {
	n.Nlink--
	for _, child := range n.children {
		b.unlink(child)
	}
}

func inodeFromEntry(e Entry, li int) Inode {
	in := Inode{
		Type:     e.Type,
		Mode:     e.Mode & 0o7777,
		UID:      e.UID,
		GID:      e.GID,
		ModTime:  e.ModTime,
		Linkname: e.Linkname,
		DevMajor: e.DevMajor,
		DevMinor: e.DevMinor,
		Xattrs:   e.Xattrs,
		Layer:    -1,
	}
	switch e.Type {
	case TypeRegular:
		in.Size, in.Layer, in.Offset, in.Sparse = e.Size, li, e.Offset, e.Sparse
	case TypeSymlink:
		in.Size = int64(len(e.Linkname))
	}
	return in
}

// freeze numbers reachable inodes in path order and drops the maps.
func (b *viewBuilder) freeze(layers []digest.Digest) *View {
	v := &View{
		layers:   append([]digest.Digest(nil), layers...),
		inodes:   make([]Inode, 0, b.nodes),
		children: make([][]Dirent, 0, b.nodes),
	}
	numbers := make(map[*buildNode]Ino, b.nodes)
	var visit func(n *buildNode) Ino
	visit = func(n *buildNode) Ino {
		if ino, ok := numbers[n]; ok {
			return ino
		}
		v.inodes = append(v.inodes, n.Inode)
		v.children = append(v.children, nil)
		ino := Ino(len(v.inodes))
		numbers[n] = ino
		if n.Type != TypeDir {
			return ino
		}
		names := make([]string, 0, len(n.children))
		for name := range n.children {
			names = append(names, name)
		}
		sort.Strings(names)
		ents := make([]Dirent, len(names))
		subdirs := uint32(0)
		for i, name := range names {
			child := n.children[name]
			ents[i] = Dirent{Name: name, Ino: visit(child)}
			if child.Type == TypeDir {
				subdirs++
			}
		}
		v.children[ino-1] = ents
		v.inodes[ino-1].Nlink = 2 + subdirs
		return ino
	}
	visit(b.root)
	return v
}
