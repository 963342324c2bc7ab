package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/explodefs/explodefs/index"
)

// imageFS answers the kernel's requests about image content itself, and
// passes everything else (the catalog) to go-fuse's node tree.
//
// Why not go-fuse nodes for image content: go-fuse keeps an Inode (with
// its children map, parent links and node table entries, ~450 bytes) for
// every inode the kernel holds, and the kernel holds every entry a walk
// looked up until memory runs short. One `find` over an image of a million
// entries took the daemon from 645 MiB to 1.09 GiB. Bounding that by
// invalidating the kernel's least recently used entries would cost
// lookups again and leave the bound to a guess. Instead, an image inode's
// node ID is its inode number, serial<<32 | view inode (go-fuse's
// ExternalNodeID makes that so for the catalog's nodes too), so a request
// names the image and the inode by itself, and the view answers it. The
// daemon keeps nothing per inode the kernel holds: only a count per image,
// so that an image lives on while the kernel holds any of its inodes.
//
// The image root stays a go-fuse node (imageRoot), because the catalog
// names, invalidates and lists it; imageFS answers for it all the same,
// and only its FORGET goes to go-fuse.
type imageFS struct {
	fuse.RawFileSystem
	images *imageTable
	root   *Root
	// opens answers OPEN and RELEASE of image files when a Backer is
	// configured; nil without one.
	opens *openTable
}

// imageNodeID splits a node ID into an image serial and a view inode. It
// reports false for the mount root and catalog nodes, whose numbers are
// below 1<<32 or at catalogInoBase and above.
func imageNodeID(id uint64) (serial uint64, ino index.Ino, ok bool) {
	serial = id >> 32
	if serial == 0 || serial > maxImageSerial {
		return 0, 0, false
	}
	return serial, index.Ino(uint32(id)), true
}

// node resolves a node ID that imageNodeID accepted. A nil image means
// nothing holds the image any more, which the kernel never lets happen
// for an inode it still holds.
func (fs *imageFS) node(id uint64) (imageNode, bool) {
	serial, ino, ok := imageNodeID(id)
	if !ok {
		return imageNode{}, false
	}
	return imageNode{img: fs.images.get(serial), ino: ino}, true
}

func isImageNode(id uint64) bool {
	_, _, ok := imageNodeID(id)
	return ok
}

// Every handler below first routes: a node ID of the catalog goes to
// go-fuse, one of an image is answered here.

func (fs *imageFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	n, ok := fs.node(h.NodeId)
	if !ok {
		return fs.RawFileSystem.Lookup(cancel, h, name, out)
	}
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	child, found := n.img.view.Lookup(n.ino, name)
	if !found {
		// A miss is cached like a hit: an image never gains a name.
		out.NodeId = 0
		out.SetEntryTimeout(n.img.timeout)
		return fuse.OK
	}
	n.img.fillEntry(out, child)
	fs.images.hold(n.img, 1)
	return fuse.OK
}

func (fs *imageFS) Forget(id, nlookup uint64) {
	serial, ino, ok := imageNodeID(id)
	if !ok || ino == index.RootIno {
		// The catalog's nodes and the image roots are go-fuse's.
		fs.RawFileSystem.Forget(id, nlookup)
		return
	}
	fs.images.release(serial, nlookup)
}

func (fs *imageFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.GetAttr(cancel, in, out)
	}
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return fuse.Status(n.Getattr(context.Background(), nil, out))
}

func (fs *imageFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, ok := fs.node(h.NodeId)
	if !ok {
		return fs.RawFileSystem.Readlink(cancel, h)
	}
	if n.img == nil {
		return nil, fuse.Status(syscall.ESTALE)
	}
	target, errno := n.Readlink(context.Background())
	return target, fuse.Status(errno)
}

// Access is never asked with default_permissions, which the mount always
// sets: the kernel checks the modes itself. Should it ask, ENOSYS tells it
// to keep doing so.
func (fs *imageFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOSYS
	}
	return fs.RawFileSystem.Access(cancel, in)
}

// Open answers ENOSYS for an image file unless image files may pass
// through: the kernel (FUSE_NO_OPEN_SUPPORT, Linux 3.14+) then stops
// sending OPEN and RELEASE for every file of the mount and keeps the page
// cache across opens, as FOPEN_KEEP_CACHE would. That halves the round
// trips of a scanner that opens and reads thousands of small files, and
// reads go to the node without a handle.
//
// When they may pass through, every open is answered (one ENOSYS would
// end OPENs for good): in passthrough mode when the file has a backing
// file, for lazy reads otherwise (see openTable).
func (fs *imageFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.Open(cancel, in, out)
	}
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	if errno := n.openable(in.Flags); errno != 0 {
		return fuse.Status(errno)
	}
	if fs.opens == nil || !fs.opens.enabled {
		return fuse.ENOSYS
	}
	fs.opens.open(&fuse.Context{Caller: in.Caller, Cancel: cancel}, n, in.NodeId, out)
	return fuse.OK
}

func (fs *imageFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.Read(cancel, in, buf)
	}
	if n.img == nil {
		return nil, fuse.Status(syscall.ESTALE)
	}
	fs.root.stats.reads.Add(1)
	if obs := fs.root.opts.Reads; obs != nil {
		defer observeSince(obs, time.Now())
	}
	if int(in.Size) < len(buf) {
		buf = buf[:in.Size]
	}
	res, errno := n.Read(&fuse.Context{Caller: in.Caller, Cancel: cancel}, nil, buf, int64(in.Offset))
	return res, fuse.Status(errno)
}

// observeSince tells obs how long the read that started at start took.
func observeSince(obs ReadObserver, start time.Time) { obs.ObserveRead(time.Since(start)) }

// Flush answers ENOSYS so the kernel stops sending FLUSH on close for the
// whole mount. Opens that Open answers carry FOPEN_NOFLUSH instead; the
// others never reach it (see Open). Nothing is ever written, so there is
// nothing to flush.
func (fs *imageFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOSYS
	}
	return fs.RawFileSystem.Flush(cancel, in)
}

// Release comes for an image file only when Open answered it with a
// handle, which it does only while image files may pass through.
func (fs *imageFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if !isImageNode(in.NodeId) {
		fs.RawFileSystem.Release(cancel, in)
		return
	}
	if fs.opens != nil {
		fs.opens.release(in.NodeId, in.Fh)
	}
}

// OpenDir lets the kernel keep the listing in its page cache
// (FOPEN_CACHE_DIR): an image directory never changes. No handle is
// needed, because a listing offset is the position in the view's entries.
func (fs *imageFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.OpenDir(cancel, in, out)
	}
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	if n.img.view.Type(n.ino) != index.TypeDir {
		return fuse.ENOTDIR
	}
	out.Fh = 0
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (fs *imageFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.ReadDir(cancel, in, out)
	}
	return fs.readDir(n, in, out, false)
}

func (fs *imageFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	n, ok := fs.node(in.NodeId)
	if !ok {
		return fs.RawFileSystem.ReadDirPlus(cancel, in, out)
	}
	return fs.readDir(n, in, out, true)
}

// readDir lists a directory from the entry at in.Offset: an entry's offset
// is its position in the view's sorted entries plus one. With plus, each
// entry is also a lookup the kernel will FORGET.
func (fs *imageFS) readDir(n imageNode, in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	view := n.img.view
	count := view.DirLen(n.ino)
	if in.Offset > uint64(count) {
		return fuse.EINVAL
	}
	var held uint64
	for i := int(in.Offset); i < count; i++ {
		e := view.DirEntry(n.ino, i)
		de := fuse.DirEntry{Name: e.Name, Ino: n.img.ino(e.Ino), Mode: fileTypeBits(view.Type(e.Ino)), Off: uint64(i + 1)}
		if !plus {
			if !out.AddDirEntry(de) {
				break
			}
			continue
		}
		entry := out.AddDirLookupEntry(de)
		if entry == nil {
			break
		}
		n.img.fillEntry(entry, e.Ino)
		held++
	}
	fs.images.hold(n.img, held)
	return fuse.OK
}

func (fs *imageFS) ReleaseDir(in *fuse.ReleaseIn) {
	if !isImageNode(in.NodeId) {
		fs.RawFileSystem.ReleaseDir(in)
	}
}

func (fs *imageFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOTSUP
	}
	return fs.RawFileSystem.FsyncDir(cancel, in)
}

func (fs *imageFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n, ok := fs.node(h.NodeId)
	if !ok {
		return fs.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	}
	if n.img == nil {
		return 0, fuse.Status(syscall.ESTALE)
	}
	size, errno := n.Getxattr(context.Background(), attr, dest)
	return size, fuse.Status(errno)
}

func (fs *imageFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n, ok := fs.node(h.NodeId)
	if !ok {
		return fs.RawFileSystem.ListXAttr(cancel, h, dest)
	}
	if n.img == nil {
		return 0, fuse.Status(syscall.ESTALE)
	}
	size, errno := n.Listxattr(context.Background(), dest)
	return size, fuse.Status(errno)
}

func (fs *imageFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	n, ok := fs.node(h.NodeId)
	if !ok {
		return fs.RawFileSystem.StatFs(cancel, h, out)
	}
	if n.img == nil {
		return fuse.Status(syscall.ESTALE)
	}
	return fuse.Status(n.Statfs(context.Background(), out))
}

// Statx answers ENOSYS for image inodes, as go-fuse does for nodes without
// a Statx method: the kernel then asks GETATTR.
func (fs *imageFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOSYS
	}
	return fs.RawFileSystem.Statx(cancel, in, out)
}

// What remains are requests that an image inode answers as go-fuse would
// for a read-only node without the method. The kernel refuses writes to
// the read-only mount before they get here.

func (fs *imageFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOSYS
	}
	return fs.RawFileSystem.Lseek(cancel, in, out)
}

func (fs *imageFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOTSUP
	}
	return fs.RawFileSystem.GetLk(cancel, in, out)
}

func (fs *imageFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOTSUP
	}
	return fs.RawFileSystem.SetLk(cancel, in)
}

func (fs *imageFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOTSUP
	}
	return fs.RawFileSystem.SetLkw(cancel, in)
}

func (fs *imageFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.Status(syscall.ENOTTY)
	}
	return fs.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}

func (fs *imageFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.ENOTSUP
	}
	return fs.RawFileSystem.Fsync(cancel, in)
}

func (fs *imageFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.SetAttr(cancel, in, out)
}

func (fs *imageFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Mknod(cancel, in, name, out)
}

func (fs *imageFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (fs *imageFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isImageNode(h.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Unlink(cancel, h, name)
}

func (fs *imageFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	if isImageNode(h.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Rmdir(cancel, h, name)
}

func (fs *imageFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if isImageNode(in.NodeId) || isImageNode(in.Newdir) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (fs *imageFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if isImageNode(in.NodeId) || isImageNode(in.Oldnodeid) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Link(cancel, in, name, out)
}

func (fs *imageFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if isImageNode(h.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (fs *imageFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (fs *imageFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if isImageNode(h.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (fs *imageFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Create(cancel, in, name, out)
}

func (fs *imageFS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Tmpfile(cancel, in, out)
}

func (fs *imageFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if isImageNode(in.NodeId) {
		return 0, fuse.EROFS
	}
	return fs.RawFileSystem.Write(cancel, in, data)
}

func (fs *imageFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if isImageNode(in.NodeId) {
		return 0, fuse.EROFS
	}
	return fs.RawFileSystem.Writev(cancel, in, data)
}

func (fs *imageFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	if isImageNode(in.NodeId) || isImageNode(in.NodeIdOut) {
		return 0, fuse.EROFS
	}
	return fs.RawFileSystem.CopyFileRange(cancel, in)
}

func (fs *imageFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if isImageNode(in.NodeId) {
		return fuse.EROFS
	}
	return fs.RawFileSystem.Fallocate(cancel, in)
}

// newImageFS wraps go-fuse's node file system of the catalog root.
func newImageFS(root *rootNode, r *Root, opts *gofs.Options) *imageFS {
	o := *opts
	// Node IDs are inode numbers, so that a request about an image inode
	// names it (see imageFS).
	o.ExternalNodeID = true
	fs := &imageFS{RawFileSystem: gofs.NewNodeFS(root, &o), images: r.images, root: r}
	if r.opts.Backer != nil {
		fs.opens = newOpenTable(r.opts.Backer, &r.stats, r.log)
	}
	return fs
}

// Init runs once the kernel answered INIT, before any other request:
// it decides whether image files pass through on this connection and says
// so once.
func (fs *imageFS) Init(server *fuse.Server) {
	fs.RawFileSystem.Init(server)
	enabled, reason := false, "no Backer is configured"
	if fs.opens != nil {
		enabled, reason = fs.opens.start(server)
	}
	fs.root.passthrough.Store(enabled)
	if enabled {
		fs.root.log.Info("image files: passthrough to materialized objects")
	} else {
		fs.root.log.Info("image files: lazy reads only, because " + reason)
	}
}

// OnUnmount runs when the connection has ended.
func (fs *imageFS) OnUnmount() {
	if fs.opens != nil {
		fs.opens.closeAll()
	}
	fs.RawFileSystem.OnUnmount()
}

// mountImages mounts root at mountpoint through imageFS and starts serving,
// as go-fuse's fs.Mount does for a plain node tree.
func mountImages(mountpoint string, root *rootNode, r *Root, opts *gofs.Options) (*fuse.Server, error) {
	server, err := fuse.NewServer(newImageFS(root, r, opts), mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	return server, nil
}
