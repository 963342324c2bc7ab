package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Passthrough of materialized image files.
//
// Once an image is materialized, each regular file's bytes are a plain
// file on local disk. An OPEN of such a file is answered with that file
// registered as its backing file (FOPEN_PASSTHROUGH), and the kernel then
// serves read, splice and mmap from it without asking the daemon (FUSE
// passthrough, Linux 6.9+).
//
// The kernel keeps each inode in one io mode at a time (fs/fuse/iomode.c)
// and fails an open that does not fit with EIO to the user:
//   - a passthrough open while files of the inode are open for cached
//     reads, mappings included (ETXTBSY inside the kernel);
//   - a cached open while files of the inode are open in passthrough
//     mode, also with FOPEN_DIRECT_IO (EINVAL);
//   - a passthrough open with another backing file than the inode's
//     current one (EBUSY), or with FOPEN_KEEP_CACHE (EINVAL).
//
// The kernel leaves a mode when the last file open in it is released, which
// it does before it sends that file's RELEASE. openTable mirrors the modes
// from the answers it gave and the RELEASEs it got, so it may think a mode
// lasts a little longer than the kernel does, never shorter, and every
// answer it gives fits. An inode that is open lazily stays lazy until all
// those opens are released, even once it has a backing file; one that is
// open in passthrough mode answers every further open with the same backing
// file, without asking the Backer again.
//
// Registering a backing file needs CAP_SYS_ADMIN, and the kernel refuses
// one on a stacked file system such as overlayfs (ELOOP): go-fuse declares
// a stacking depth of 1, which keeps the mount usable as a lower layer of
// an overlay. Such a file is read lazily instead.

// File handles of image files name the mode an open was answered in, so
// that RELEASE can check it.
const (
	fhLazy        uint64 = 1
	fhPassthrough uint64 = 2
)

// openTable answers OPEN and RELEASE of image files on one mount with a
// Backer.
type openTable struct {
	backer Backer
	stats  *counters
	log    *slog.Logger

	// server registers backing files, and enabled says whether it may:
	// both are set by start, before the kernel sends any request but
	// INIT, and read-only after.
	server  *fuse.Server
	enabled bool

	mu sync.Mutex
	// nodes holds the image files open now, by node ID.
	nodes map[uint64]*openNode
	// failed records the errors of registering backing files that were
	// logged at error level, so that a systematic one (a backing file
	// system the kernel refuses) is not logged for every open.
	failed map[syscall.Errno]bool
}

// openNode is how the kernel has one image file open: lazily (reads come to
// the daemon) or in passthrough mode to backing, never both.
type openNode struct {
	lazy        int
	passthrough int
	backingID   int32
	backing     *os.File
}

func newOpenTable(backer Backer, stats *counters, log *slog.Logger) *openTable {
	return &openTable{backer: backer, stats: stats, log: log,
		nodes: map[uint64]*openNode{}, failed: map[syscall.Errno]bool{}}
}

// start decides whether image files pass through on server's connection,
// once the kernel has answered INIT. It returns why not when they do not.
func (t *openTable) start(server *fuse.Server) (bool, string) {
	t.server = server
	reason := passthroughUnavailable(server)
	t.enabled = reason == ""
	return t.enabled, reason
}

// passthroughUnavailable returns why the kernel will not pass image files
// through on server's connection, or "" when it will.
func passthroughUnavailable(server *fuse.Server) string {
	// go-fuse asks for passthrough whenever the kernel offers it: no
	// mount option is needed.
	if server.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		return "the kernel does not offer FUSE passthrough (Linux 6.9+ built with CONFIG_FUSE_PASSTHROUGH)"
	}
	// Registering a backing file also needs CAP_SYS_ADMIN, and a kernel
	// that dropped passthrough from its INIT reply refuses it too: try
	// one with a file that is certainly regular and not stacked.
	fd, err := unix.MemfdCreate("explodefs-passthrough-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Sprintf("no file to probe passthrough with: %v", err)
	}
	defer unix.Close(fd)
	id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno == syscall.EPERM {
		return "the kernel does not let the daemon register backing files (EPERM): " +
			"it needs CAP_SYS_ADMIN in the initial user namespace"
	}
	if errno != 0 {
		return fmt.Sprintf("the kernel refused to register a backing file: %v", errno)
	}
	if errno := server.UnregisterBackingFd(id); errno != 0 {
		return fmt.Sprintf("the kernel refused to unregister a backing file: %v", errno)
	}
	return ""
}

// open answers an OPEN of image file n, whose node ID is id, in the mode
// the kernel accepts, asking the Backer when the file is not open yet.
// It never fails: without a backing file, reads come to the daemon.
func (t *openTable) open(ctx context.Context, n imageNode, id uint64, out *fuse.OpenOut) {
	t.mu.Lock()
	if st := t.nodes[id]; st != nil {
		t.answerLocked(st, out)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()

	// Other opens go on while the Backer looks.
	file := t.backingFile(ctx, n)

	t.mu.Lock()
	st := t.nodes[id]
	var regErr syscall.Errno
	var logRegErr bool
	if st == nil {
		st = &openNode{}
		t.nodes[id] = st
		if file != nil {
			regErr = t.registerLocked(st, file)
			if regErr == 0 {
				file = nil // st owns it now
			} else {
				logRegErr = !t.failed[regErr]
				t.failed[regErr] = true
			}
		}
	}
	t.answerLocked(st, out)
	t.mu.Unlock()

	if file != nil {
		// Registration failed, or an open that raced with this one
		// decided the mode first.
		file.Close()
	}
	if regErr != 0 {
		level := slog.LevelDebug
		if logRegErr {
			level = slog.LevelError
		}
		logFile(ctx, level, n, "the kernel refused a backing file; reading the image file lazily", regErr)
	}
}

// logFile logs a failure about image file n. Its path costs a scan of the
// view, so it is looked up only when the message is logged.
func logFile(ctx context.Context, level slog.Level, n imageNode, msg string, err error) {
	if n.img.log.Enabled(ctx, level) {
		n.img.log.Log(ctx, level, msg, "path", n.path(), "ino", n.ino, "err", err)
	}
}

// registerLocked registers file as the backing file of st.
func (t *openTable) registerLocked(st *openNode, file *os.File) syscall.Errno {
	id, errno := t.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(file.Fd())})
	if errno != 0 {
		return errno
	}
	st.backingID, st.backing = id, file
	t.stats.backingFiles.Add(1)
	return 0
}

// answerLocked answers one more open of st in its mode: passthrough when it
// has a backing file, lazy otherwise.
func (t *openTable) answerLocked(st *openNode, out *fuse.OpenOut) {
	if st.backing != nil {
		st.passthrough++
		out.Fh = fhPassthrough
		// The kernel refuses FOPEN_KEEP_CACHE with passthrough.
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
		out.BackingID = st.backingID
		t.stats.passthroughOpens.Add(1)
		return
	}
	st.lazy++
	out.Fh = fhLazy
	// Without KEEP_CACHE every open would drop the file's page cache;
	// the content never changes.
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	t.stats.lazyOpens.Add(1)
}

// backingFile asks the Backer for n's backing file and checks that it
// can hold n's bytes. Failures are logged and give nil.
func (t *openTable) backingFile(ctx context.Context, n imageNode) *os.File {
	file, err := t.backer.Backing(ctx, n.img.digest, n.img.view, n.ino)
	if err == nil && file != nil {
		err = checkBacking(file, n.inode().Size)
	}
	if err == nil {
		return file
	}
	if file != nil {
		file.Close()
	}
	level := slog.LevelError
	if ctx.Err() != nil {
		// The open was interrupted; the Backer only gave up.
		level = slog.LevelDebug
	}
	logFile(ctx, level, n, "no backing file for an image file; reading it lazily", err)
	return nil
}

// checkBacking refuses a backing file that is not a regular file of the
// image file's size: its reads would show other bytes than the daemon's.
func checkBacking(file *os.File, size int64) error {
	info, err := file.Stat()
	if err != nil {
		return fmt.Errorf("backing file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("backing file %s is not a regular file (%v)", file.Name(), info.Mode().Type())
	}
	if info.Size() != size {
		return fmt.Errorf("backing file %s holds %d bytes, the image file %d", file.Name(), info.Size(), size)
	}
	return nil
}

// release ends one open of image file id that was answered with handle fh,
// and gives up its backing file after the last passthrough open.
func (t *openTable) release(id, fh uint64) {
	t.mu.Lock()
	st := t.nodes[id]
	ok := st != nil
	if ok && fh == fhPassthrough && st.passthrough > 0 {
		st.passthrough--
	} else if ok && fh == fhLazy && st.lazy > 0 {
		st.lazy--
	} else {
		ok = false
	}
	done := ok && st.lazy == 0 && st.passthrough == 0
	if done {
		delete(t.nodes, id)
	}
	t.mu.Unlock()

	if !ok {
		t.log.Error("RELEASE of an image file that is not open so", "node", id, "fh", fh)
		return
	}
	if done && st.backing != nil {
		// The kernel left passthrough mode before it sent RELEASE, and
		// the node is out of the table, so no open hands out the ID.
		if errno := t.server.UnregisterBackingFd(st.backingID); errno != 0 {
			t.log.Error("unregistering a backing file", "node", id, "file", st.backing.Name(), "err", errno)
		}
		st.backing.Close()
		t.stats.backingFiles.Add(-1)
	}
}

// closeAll closes the backing files still registered when the connection
// ended; the kernel dropped its registrations with the connection.
func (t *openTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, st := range t.nodes {
		if st.backing != nil {
			st.backing.Close()
			t.stats.backingFiles.Add(-1)
		}
		delete(t.nodes, id)
	}
}
