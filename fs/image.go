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
// inode numbers unique in the mount. The catalog, the root node the kernel
// holds, and the image table while the kernel holds inodes below the root
// keep it, so an image the catalog dropped lives on for as long as the
// kernel holds any of its inodes.
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

// newRootNode returns the go-fuse node of the image's root directory below
// a stream directory and fills out for the kernel. Only the root is a
// go-fuse node, so that the catalog can name it, invalidate it and keep
// the image alive through it; imageFS answers every request about it and
// everything below it.
func (img *image) newRootNode(ctx context.Context, parent *gofs.Inode, out *fuse.EntryOut) *gofs.Inode {
	img.fillEntry(out, img.rootIno())
	return parent.NewInode(ctx, &imageRoot{img: img},
		gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: img.ino(img.rootIno())})
}

// fillEntry answers a lookup of the view's inode ino. Its answers never
// change, so the kernel may cache them for ImageTimeout.
func (img *image) fillEntry(out *fuse.EntryOut, ino index.Ino) {
	in, _ := img.view.Stat(ino)
	out.NodeId = img.ino(ino)
	out.Generation = 0
	fillImageAttr(&out.Attr, img.ino(ino), &in)
	out.SetEntryTimeout(img.timeout)
	out.SetAttrTimeout(img.timeout)
}

// imageRoot is the root directory of an image as go-fuse's tree holds it.
// imageFS answers the kernel's requests about it; go-fuse only keeps it
// for as long as the kernel holds the root, and with it the image.
type imageRoot struct {
	gofs.Inode
	img *image
}

var _ gofs.NodeGetattrer = (*imageRoot)(nil)

// Getattr answers for the root should go-fuse ever ask it directly.
func (n *imageRoot) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	node := imageNode{img: n.img, ino: n.img.rootIno()}
	return node.Getattr(ctx, fh, out)
}

// imageNode is any file, directory, symlink or special file of an image:
// a view's inode, named only for the length of one request. The daemon
// keeps nothing per inode the kernel holds (see imageFS).
type imageNode struct {
	img *image
	ino index.Ino
}

func (n *imageNode) inode() index.Inode {
	in, _ := n.img.view.Stat(n.ino)
	return in
}

// path names the inode in a log message. The daemon keeps no path per
// inode, so it is looked up, which costs a scan of the view: only for
// failures.
func (n *imageNode) path() string {
	p, _ := n.img.view.Path(n.ino)
	return p
}

func (n *imageNode) Getattr(_ context.Context, _ gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	in := n.inode()
	fillImageAttr(&out.Attr, n.img.ino(n.ino), &in)
	out.SetTimeout(n.img.timeout)
	return 0
}

func (n *imageNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	in := n.inode()
	if in.Type != index.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(in.Linkname), 0
}

// openable checks an open of the node with flags (see imageFS.Open for
// how it is answered). Writes never get here: the mount is read-only, so
// the kernel refuses them first.
func (n *imageNode) openable(flags uint32) syscall.Errno {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_CREAT) != 0 {
		return syscall.EROFS
	}
	if n.img.view.Type(n.ino) != index.TypeRegular {
		return syscall.EINVAL
	}
	return 0
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
			"path", n.path(), "ino", n.ino, "layer_index", in.Layer)
		return nil, syscall.EIO
	}
	layer := layers[in.Layer]
	got, err := index.ReadFile(ctx, n.img.reader, layer, &in, buf, off)
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
	n.img.log.Error("reading image file", "path", n.path(), "ino", n.ino, "layer", layer,
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
