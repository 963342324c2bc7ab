package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/explodefs/explodefs/index"
)

// imageDirHandle lists an image directory straight from the view's sorted
// entries: no copy of the listing, and an entry's offset is its position,
// so seeking is free.
type imageDirHandle struct {
	node    *imageNode
	entries []index.Dirent
	next    int
	current fuse.DirEntry
}

var (
	_ gofs.FileReaddirenter = (*imageDirHandle)(nil)
	_ gofs.FileSeekdirer    = (*imageDirHandle)(nil)
	_ gofs.FileLookuper     = (*imageDirHandle)(nil)
	_ gofs.FileReleasedirer = (*imageDirHandle)(nil)
)

// Readdirent returns the next entry. go-fuse copies it before asking for
// another, so one DirEntry is reused.
func (h *imageDirHandle) Readdirent(context.Context) (*fuse.DirEntry, syscall.Errno) {
	if h.next >= len(h.entries) {
		return nil, 0
	}
	e := h.entries[h.next]
	h.next++
	img := h.node.img
	h.current = fuse.DirEntry{
		Name: e.Name,
		Ino:  img.ino(e.Ino),
		Mode: fileTypeBits(img.view.Inode(e.Ino).Type),
		Off:  uint64(h.next),
	}
	return &h.current, 0
}

func (h *imageDirHandle) Seekdir(_ context.Context, off uint64) syscall.Errno {
	if off > uint64(len(h.entries)) {
		return syscall.EINVAL
	}
	h.next = int(off)
	return 0
}

// Lookup serves READDIRPLUS, which looks up each entry right after
// Readdirent returned it: the entry at hand saves the binary search.
func (h *imageDirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if h.next > 0 && h.entries[h.next-1].Name == name {
		return h.node.img.newNode(ctx, &h.node.Inode, h.entries[h.next-1].Ino, out), 0
	}
	return h.node.Lookup(ctx, name, out)
}

func (h *imageDirHandle) Releasedir(context.Context, uint32) {}
