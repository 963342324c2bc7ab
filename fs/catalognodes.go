package fs

import (
	"context"
	"slices"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"
)

// The catalog's nodes read the Root's state under its lock on every call,
// and the kernel keeps their answers only for CatalogTimeout, so a change
// shows within that time even when its invalidation raced with a lookup.

// rootNode is the mount's root directory: one subdirectory per namespace.
type rootNode struct {
	gofs.Inode
	readOnly
	root *Root
}

// namespaceNode is a namespace directory: one subdirectory per stream.
type namespaceNode struct {
	gofs.Inode
	readOnly
	root  *Root
	entry *namespaceEntry
}

// streamNode is a stream directory: its tags as symlinks and its images as
// @<digest> directories.
type streamNode struct {
	gofs.Inode
	readOnly
	root  *Root
	entry *streamEntry
}

// tagNode is a tag symlink. It never changes: a moved tag is a new node.
type tagNode struct {
	gofs.Inode
	readOnly
	ino     uint64
	target  string
	changed time.Time
	timeout time.Duration
}

var (
	_ gofs.NodeGetattrer = (*rootNode)(nil)
	_ gofs.NodeLookuper  = (*rootNode)(nil)
	_ gofs.NodeReaddirer = (*rootNode)(nil)
	_ gofs.NodeStatfser  = (*rootNode)(nil)

	_ gofs.NodeGetattrer = (*namespaceNode)(nil)
	_ gofs.NodeLookuper  = (*namespaceNode)(nil)
	_ gofs.NodeReaddirer = (*namespaceNode)(nil)
	_ gofs.NodeStatfser  = (*namespaceNode)(nil)

	_ gofs.NodeGetattrer = (*streamNode)(nil)
	_ gofs.NodeLookuper  = (*streamNode)(nil)
	_ gofs.NodeReaddirer = (*streamNode)(nil)
	_ gofs.NodeStatfser  = (*streamNode)(nil)

	_ gofs.NodeGetattrer  = (*tagNode)(nil)
	_ gofs.NodeReadlinker = (*tagNode)(nil)
	_ gofs.NodeStatfser   = (*tagNode)(nil)
)

func (n *rootNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r := n.root
	r.mu.RLock()
	fillCatalogDirAttr(&out.Attr, rootIno, len(r.namespaces), r.changed)
	r.mu.RUnlock()
	out.SetTimeout(r.opts.CatalogTimeout)
	return 0
}

func (n *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r := n.root
	r.mu.RLock()
	ns := r.namespaces[name]
	if ns != nil {
		fillCatalogDirAttr(&out.Attr, ns.ino, len(ns.streams), ns.changed)
	}
	r.mu.RUnlock()
	if ns == nil {
		return nil, r.catalogMiss(out)
	}
	r.setCatalogTimeouts(out)
	return n.NewInode(ctx, &namespaceNode{root: r, entry: ns},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: ns.ino}), 0
}

func (n *rootNode) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	r := n.root
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := make([]fuse.DirEntry, 0, len(r.namespaces))
	for name, ns := range r.namespaces {
		list = append(list, fuse.DirEntry{Name: name, Ino: ns.ino, Mode: syscall.S_IFDIR})
	}
	return sortedDirStream(list), 0
}

func (n *rootNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	fillStatfs(out, 0)
	return 0
}

func (n *namespaceNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r := n.root
	r.mu.RLock()
	fillCatalogDirAttr(&out.Attr, n.entry.ino, len(n.entry.streams), n.entry.changed)
	r.mu.RUnlock()
	out.SetTimeout(r.opts.CatalogTimeout)
	return 0
}

func (n *namespaceNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r := n.root
	r.mu.RLock()
	st := n.entry.streams[name]
	if st != nil {
		fillCatalogDirAttr(&out.Attr, st.ino, len(st.images), st.changed)
	}
	r.mu.RUnlock()
	if st == nil {
		return nil, r.catalogMiss(out)
	}
	r.setCatalogTimeouts(out)
	return n.NewInode(ctx, &streamNode{root: r, entry: st},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: st.ino}), 0
}

func (n *namespaceNode) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	r := n.root
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := make([]fuse.DirEntry, 0, len(n.entry.streams))
	for name, st := range n.entry.streams {
		list = append(list, fuse.DirEntry{Name: name, Ino: st.ino, Mode: syscall.S_IFDIR})
	}
	return sortedDirStream(list), 0
}

func (n *namespaceNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	fillStatfs(out, 0)
	return 0
}

func (n *streamNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r := n.root
	r.mu.RLock()
	fillCatalogDirAttr(&out.Attr, n.entry.ino, len(n.entry.images), n.entry.changed)
	r.mu.RUnlock()
	out.SetTimeout(r.opts.CatalogTimeout)
	return 0
}

func (n *streamNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if strings.HasPrefix(name, "@") {
		return n.lookupImage(ctx, name, out)
	}
	r := n.root
	r.mu.RLock()
	tag, ok := n.entry.tags[name]
	r.mu.RUnlock()
	if !ok {
		return nil, r.catalogMiss(out)
	}
	node := &tagNode{
		ino:     tag.ino,
		target:  imageDirName(tag.target),
		changed: tag.changed,
		timeout: r.opts.CatalogTimeout,
	}
	fillTagAttr(&out.Attr, node.ino, node.target, node.changed)
	r.setCatalogTimeouts(out)
	return n.NewInode(ctx, node, gofs.StableAttr{Mode: syscall.S_IFLNK, Ino: tag.ino}), 0
}

func (n *streamNode) lookupImage(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	r := n.root
	d, err := digest.Parse(strings.TrimPrefix(name, "@"))
	if err != nil {
		return nil, r.catalogMiss(out)
	}
	r.mu.RLock()
	img := n.entry.images[d]
	r.mu.RUnlock()
	if img == nil {
		return nil, r.catalogMiss(out)
	}
	child := img.newRootNode(ctx, &n.Inode, out)
	// The name goes away when the stream drops the image; the content
	// behind it never changes.
	out.SetEntryTimeout(r.opts.CatalogTimeout)
	return child, 0
}

func (n *streamNode) Readdir(context.Context) (gofs.DirStream, syscall.Errno) {
	r := n.root
	r.mu.RLock()
	defer r.mu.RUnlock()
	list := make([]fuse.DirEntry, 0, len(n.entry.tags)+len(n.entry.images))
	for name, tag := range n.entry.tags {
		list = append(list, fuse.DirEntry{Name: name, Ino: tag.ino, Mode: syscall.S_IFLNK})
	}
	for d, img := range n.entry.images {
		list = append(list, fuse.DirEntry{Name: imageDirName(d), Ino: img.ino(img.rootIno()), Mode: syscall.S_IFDIR})
	}
	return sortedDirStream(list), 0
}

func (n *streamNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	fillStatfs(out, 0)
	return 0
}

func (n *tagNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillTagAttr(&out.Attr, n.ino, n.target, n.changed)
	out.SetTimeout(n.timeout)
	return 0
}

func (n *tagNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	return []byte(n.target), 0
}

func (n *tagNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	fillStatfs(out, 0)
	return 0
}

func (r *Root) setCatalogTimeouts(out *fuse.EntryOut) {
	out.SetEntryTimeout(r.opts.CatalogTimeout)
	out.SetAttrTimeout(r.opts.CatalogTimeout)
}

// catalogMiss answers a lookup of a catalog name that does not exist, in a
// way the kernel does not cache, so that a tag or stream that appears later
// is seen at once. The mount caches misses (go-fuse's NegativeTimeout)
// because inside immutable images they stay misses; go-fuse applies that
// timeout only when the node left the entry timeout unset, and otherwise
// passes ENOENT on as an error, which the kernel does not cache.
func (r *Root) catalogMiss(out *fuse.EntryOut) syscall.Errno {
	out.SetEntryTimeout(r.opts.CatalogTimeout)
	return syscall.ENOENT
}

// sortedDirStream lists entries by name, as ls and find users expect from
// a tree that is otherwise listed in a stable order.
func sortedDirStream(list []fuse.DirEntry) gofs.DirStream {
	slices.SortFunc(list, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(list)
}
