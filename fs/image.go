package fs

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// image is one published image: its view, and the serial that makes its
// inode numbers unique in the mount. Nodes hold it, so an image the catalog
// dropped lives on for as long as the kernel holds any of its nodes.
type image struct {
	digest  digest.Digest
	serial  uint64
	view    *index.View
	reader  ContentReader
	timeout time.Duration
	log     *slog.Logger
}

func (img *image) rootIno() index.Ino { return index.RootIno }

// ino returns the mount-wide inode number of the view's inode.
func (img *image) ino(ino index.Ino) uint64 { return imageIno(img.serial, ino) }

// newNode returns the node for the view's inode ino below parent and fills
// out for the kernel. Every name of a hard-linked inode gets the same
// StableAttr, so go-fuse hands out one node and the kernel sees one inode.
func (img *image) newNode(ctx context.Context, parent *gofs.Inode, ino index.Ino, out *fuse.EntryOut) *gofs.Inode {
	in := img.view.Inode(ino)
	fillImageAttr(&out.Attr, img.ino(ino), in)
	out.SetEntryTimeout(img.timeout)
	out.SetAttrTimeout(img.timeout)
	return parent.NewInode(ctx, &imageNode{img: img, ino: ino},
		gofs.StableAttr{Mode: fileTypeBits(in.Type), Ino: img.ino(ino)})
}

// imageNode is any file, directory, symlink or special file of an image.
// Its answers never change, so the kernel may cache them for ImageTimeout.
type imageNode struct {
	gofs.Inode
	readOnly
	img *image
	ino index.Ino
}

var (
	_ gofs.NodeGetattrer      = (*imageNode)(nil)
	_ gofs.NodeLookuper       = (*imageNode)(nil)
	_ gofs.NodeOpendirHandler = (*imageNode)(nil)
	_ gofs.NodeReadlinker     = (*imageNode)(nil)
	_ gofs.NodeOpener         = (*imageNode)(nil)
	_ gofs.NodeFlusher        = (*imageNode)(nil)
	_ gofs.NodeReader         = (*imageNode)(nil)
	_ gofs.NodeGetxattrer     = (*imageNode)(nil)
	_ gofs.NodeListxattrer    = (*imageNode)(nil)
	_ gofs.NodeStatfser       = (*imageNode)(nil)
)

func (n *imageNode) inode() *index.Inode { return n.img.view.Inode(n.ino) }

func (n *imageNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillImageAttr(&out.Attr, n.img.ino(n.ino), n.inode())
	out.SetTimeout(n.img.timeout)
	return 0
}

func (n *imageNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	child, ok := n.img.view.Lookup(n.ino, name)
	if !ok {
		// Cached for the mount's NegativeTimeout: an image never
		// gains a name.
		return nil, syscall.ENOENT
	}
	return n.img.newNode(ctx, &n.Inode, child, out), 0
}

// OpendirHandle lets the kernel keep the listing in its page cache
// (FOPEN_CACHE_DIR): an image directory never changes.
func (n *imageNode) OpendirHandle(context.Context, uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.inode().Type != index.TypeDir {
		return nil, 0, syscall.ENOTDIR
	}
	h := &imageDirHandle{node: n, entries: n.img.view.ReadDir(n.ino)}
	return h, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (n *imageNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	in := n.inode()
	if in.Type != index.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(in.Linkname), 0
}

// Open needs no handle: reads go to the node. Answering ENOSYS tells the
// kernel (FUSE_NO_OPEN_SUPPORT, Linux 3.14+) to stop sending OPEN and
// RELEASE for every file of the mount and to keep the page cache across
// opens, as FOPEN_KEEP_CACHE would. That halves the round trips of a
// scanner that opens and reads thousands of small files. Writes never get
// here: the mount is read-only, so the kernel refuses them first.
func (n *imageNode) Open(_ context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	if n.inode().Type != index.TypeRegular {
		return nil, 0, syscall.EINVAL
	}
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS so the kernel stops sending FLUSH on close for the
// whole mount (FOPEN_NOFLUSH cannot be set without OPEN). Nothing is ever
// written, so there is nothing to flush.
func (n *imageNode) Flush(context.Context, gofs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Read fills dest from the file's bytes in its layer's uncompressed stream.
func (n *imageNode) Read(ctx context.Context, _ gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	in := n.inode()
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= in.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	buf := dest[:min(int64(len(dest)), in.Size-off)]
	layers := n.img.view.Layers()
	if in.Layer < 0 || in.Layer >= len(layers) {
		n.img.log.Error("image file has no layer to read from",
			"path", n.Path(nil), "ino", n.ino, "layer_index", in.Layer)
		return nil, syscall.EIO
	}
	layer := layers[in.Layer]
	got, err := index.ReadFile(ctx, n.img.reader, layer, in, buf, off)
	if got == len(buf) {
		return fuse.ReadResultData(buf), 0
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	if ctx.Err() != nil {
		// The reader gave up because the caller was interrupted.
		return nil, syscall.EINTR
	}
	n.img.log.Error("reading image file", "path", n.Path(nil), "layer", layer,
		"offset", off, "length", len(buf), "err", err)
	return nil, syscall.EIO
}

func (n *imageNode) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	for _, x := range n.inode().Xattrs {
		if x.Name != attr {
			continue
		}
		if len(dest) < len(x.Value) {
			// go-fuse turns this into the size reply when the
			// caller only asked for the size.
			return uint32(len(x.Value)), syscall.ERANGE
		}
		return uint32(copy(dest, x.Value)), 0
	}
	return 0, syscall.ENODATA
}

// Listxattr leaves out names that cannot be listed: the kernel checks the
// reply and fails the whole call with EIO when one name is empty (a lone
// NUL), so one such name would hide every attribute of the file. The
// layer pass refuses them; this keeps the mount sound whatever a view
// holds.
func (n *imageNode) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	xattrs := n.inode().Xattrs
	listable := func(name string) bool {
		for i := range len(name) {
			if name[i] == 0 {
				return false
			}
		}
		return name != ""
	}
	size := 0
	for _, x := range xattrs {
		if listable(x.Name) {
			size += len(x.Name) + 1
		}
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	dest = dest[:0]
	for _, x := range xattrs {
		if listable(x.Name) {
			dest = append(dest, x.Name...)
			dest = append(dest, 0)
		}
	}
	return uint32(size), 0
}

func (n *imageNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	fillStatfs(out, uint64(n.img.view.Len()))
	return 0
}
