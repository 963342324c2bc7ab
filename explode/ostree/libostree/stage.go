package libostree

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A stage writes the regular-file content objects of a transaction in a
// bare repository itself, the way libostree lays them out, and hands them
// to the repository when the transaction commits.
//
// libostree spends most of a commit's CPU time on content objects: it
// hashes without the CPU's SHA instructions and pushes every file through
// GIO streams. A bare object is only the file's bytes with its owner,
// mode, xattrs and an mtime of 0, named by its checksum, so the stage
// writes it with plain system calls, into a directory of its own under
// the repository's tmp/. Commit syncs the filesystem and only then
// renames the objects into objects/, before libostree commits its own
// objects and the refs (after another sync), so that objects/ never holds
// an object whose bytes have not reached the disk, and no ref names an
// object that is not there. Abort, or a crash, leaves the objects in the
// stage directory, which is removed then or by the next Begin.
//
// Bare-user repositories keep owner, mode and xattrs in an xattr of their
// own and are written through libostree.
type stage struct {
	dir       string
	dirFD     int
	objectsFD int
	repoPath  string
	minFree   uint64
	mu        sync.Mutex
	prefixes  [256]bool
	// pending counts the objects not yet moved into objects/.
	pending    int
	budget     int64
	blockSize  int64
	objects    uint64
	bytes      uint64
	tmpCounter uint64
}

// stagePrefix names stage directories in the repository's tmp/.
const stagePrefix = "explodefs-stage-"

// newStage removes the stages that no process holds any more and opens a
// new one, locked for as long as it lives. minFree is the space the
// repository keeps free (its min-free-space settings): writing past it
// fails, as libostree's own writes do.
func newStage(repoPath string, minFree uint64) (*stage, error) {
	tmp := filepath.Join(repoPath, "tmp")
	if err := removeStaleStages(tmp); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(tmp, stagePrefix)
	if err != nil {
		return nil, fmt.Errorf("creating a stage for content objects: %w", err)
	}
	s := &stage{dir: dir, repoPath: repoPath, minFree: minFree, dirFD: -1, objectsFD: -1}
	fail := func(err error) (*stage, error) {
		s.discard()
		return nil, fmt.Errorf("opening stage %s: %w", dir, err)
	}
	if s.dirFD, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fail(err)
	}
	if err := unix.Flock(s.dirFD, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail(fmt.Errorf("locking: %w", err))
	}
	if s.objectsFD, err = unix.Open(filepath.Join(repoPath, "objects"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return fail(err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(s.dirFD, &st); err != nil {
		return fail(err)
	}
	s.blockSize = max(int64(st.Bsize), 1)
	s.budget = int64(st.Bavail)*s.blockSize - int64(min(minFree, 1<<62))
	return s, nil
}

// removeStaleStages removes the stage directories under tmp whose lock no
// one holds: those of transactions that crashed or were never finished.
func removeStaleStages(tmp string) error {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("looking for stale stages: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), stagePrefix) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) == nil {
			err = os.RemoveAll(dir)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("removing stale stage %s: %w", dir, err)
		}
	}
	return nil
}

// has reports whether the repository or the stage holds object c.
func (s *stage) has(c Checksum) (bool, error) {
	if found, err := s.committed(c); found || err != nil {
		return found, err
	}
	return s.lookup(s.dirFD, c)
}

// committed reports whether objects/ holds object c. A write under c's
// name needs no look in the stage: its O_EXCL create finds an equal
// object there.
func (s *stage) committed(c Checksum) (bool, error) { return s.lookup(s.objectsFD, c) }

func (s *stage) lookup(dirFD int, c Checksum) (bool, error) {
	var st unix.Stat_t
	switch err := unix.Fstatat(dirFD, looseName(c), &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("looking up object %s: %w", c, err)
	}
}

// objectFile is a content object being written into the stage, under
// its own name or, while its checksum is unknown, a temporary one.
type objectFile struct {
	s       *stage
	fd      int
	name    string
	tmpName string
}

// create starts an object of size bytes, which it charges to the
// budget, under name (c's file name), or a temporary name when name is
// empty. It returns nil if the stage has the name already: another
// writer has the object.
func (s *stage) create(size int64, name string) (*objectFile, error) {
	if err := s.charge(size); err != nil {
		return nil, err
	}
	f := &objectFile{s: s, name: name}
	if name == "" {
		s.mu.Lock()
		s.tmpCounter++
		f.tmpName = ".tmp-" + strconv.FormatUint(s.tmpCounter, 10)
		s.mu.Unlock()
	}
	// Not O_TMPFILE: ext4 puts such a file on its orphan list, under a
	// filesystem-wide lock, and takes it off when it is linked, which
	// costs more than the rest of a small file's write.
	fd, err := unix.Openat(s.dirFD, f.path(), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) && name != "" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("creating %s in %s: %w", f.path(), s.dir, err)
	}
	f.fd = fd
	return f, nil
}

// path is the file's name in the stage directory.
func (f *objectFile) path() string {
	if f.tmpName != "" {
		return f.tmpName
	}
	return f.name
}

// charge takes size bytes, rounded up to whole blocks, from the budget.
func (s *stage) charge(size int64) error {
	blocks := (size + s.blockSize - 1) / s.blockSize
	s.mu.Lock()
	defer s.mu.Unlock()
	if blocks*s.blockSize > s.budget {
		return fmt.Errorf("writing a %d-byte object would leave less free space on the filesystem of %s than the %d bytes its min-free-space settings keep",
			size, s.repoPath, s.minFree)
	}
	s.budget -= blocks * s.blockSize
	return nil
}

func (f *objectFile) write(p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(f.fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// finish gives the object its metadata and, if it had a temporary
// name, its name c; it reports false if another writer named an equal
// object first. Until it succeeds, close removes the file.
func (f *objectFile) finish(c Checksum, meta FileMeta, size int64) (bool, error) {
	defer f.close()
	// fchown clears setuid and setgid, so it comes before fchmod.
	if err := unix.Fchown(f.fd, int(meta.UID), int(meta.GID)); err != nil {
		return false, fmt.Errorf("fchown %d:%d: %w", meta.UID, meta.GID, err)
	}
	if err := unix.Fchmod(f.fd, meta.Mode&0o7777); err != nil {
		return false, fmt.Errorf("fchmod %o: %w", meta.Mode&0o7777, err)
	}
	for _, x := range meta.Xattrs {
		if err := unix.Fsetxattr(f.fd, x.Name, x.Value, 0); err != nil {
			return false, fmt.Errorf("setting xattr %s: %w", x.Name, err)
		}
	}
	// OSTree gives every object the mtime 0, leaving its atime alone.
	times := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {}}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(f.fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return false, fmt.Errorf("setting the mtime: %w", errno)
	}
	name := looseName(c)
	if f.tmpName != "" {
		if err := f.s.ensurePrefix(name[:2]); err != nil {
			return false, err
		}
		err := unix.Renameat2(f.s.dirFD, f.tmpName, f.s.dirFD, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("naming object %s in %s: %w", c, f.s.dir, err)
		}
		f.tmpName = ""
	}
	f.name = ""
	f.s.mu.Lock()
	f.s.objects++
	f.s.pending++
	f.s.bytes += uint64(size)
	f.s.mu.Unlock()
	return true, nil
}

// close drops the file; one that finish did not complete goes with it.
func (f *objectFile) close() {
	if f.fd < 0 {
		return
	}
	unix.Close(f.fd)
	f.fd = -1
	if p := f.path(); p != "" {
		unix.Unlinkat(f.s.dirFD, p, 0)
	}
}

// writeBytes writes the object c of a file whose bytes are data.
func (s *stage) writeBytes(c Checksum, meta FileMeta, data []byte) (bool, error) {
	name := looseName(c)
	if err := s.ensurePrefix(name[:2]); err != nil {
		return false, err
	}
	f, err := s.create(int64(len(data)), name)
	if f == nil || err != nil {
		return false, err
	}
	if err := f.write(data); err != nil {
		f.close()
		return false, fmt.Errorf("writing %d bytes to a temporary file in %s: %w", len(data), s.dir, err)
	}
	return f.finish(c, meta, int64(len(data)))
}

// writeStream writes the object of a file of size bytes read from src,
// hashing them as they go, through buf.
func (s *stage) writeStream(meta FileMeta, size int64, src io.Reader, buf []byte) (Checksum, bool, error) {
	f, err := s.create(size, "")
	if err != nil {
		return Checksum{}, false, err
	}
	defer f.close()
	h := newContentHash(meta)
	for left := size; left > 0; {
		n, err := io.ReadFull(src, buf[:min(left, int64(len(buf)))])
		if err != nil {
			return Checksum{}, false, fmt.Errorf("reading content at %d: %w", size-left, err)
		}
		h.Write(buf[:n])
		if err := f.write(buf[:n]); err != nil {
			return Checksum{}, false, fmt.Errorf("writing at %d to a temporary file in %s: %w", size-left, s.dir, err)
		}
		left -= int64(n)
	}
	var c Checksum
	h.Sum(c[:0])
	if found, err := s.has(c); err != nil || found {
		return c, false, err
	}
	written, err := f.finish(c, meta, size)
	return c, written, err
}

// looseName is object c's file under objects/, and under the stage,
// which has the same layout.
func looseName(c Checksum) string {
	h := c.String()
	return h[:2] + "/" + h[2:] + ".file"
}

// ensurePrefix creates the stage's subdirectory for objects whose names
// start with prefix, once.
func (s *stage) ensurePrefix(prefix string) error {
	i, err := strconv.ParseUint(prefix, 16, 8)
	if err != nil {
		return fmt.Errorf("object prefix %q: %w", prefix, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prefixes[i] {
		return nil
	}
	if err := unix.Mkdirat(s.dirFD, prefix, 0o777); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating %s/%s: %w", s.dir, prefix, err)
	}
	s.prefixes[i] = true
	return nil
}

// publish makes the staged objects durable and moves them into objects/:
// a whole subdirectory where objects/ has none of that prefix yet (a new
// repository gets 256 renames rather than one per object), else object
// by object. It lists the stage rather than keeping a list of names,
// which for an image of a million files would be a hundred megabytes.
func (s *stage) publish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == 0 {
		return nil
	}
	if err := unix.Syncfs(s.dirFD); err != nil {
		return fmt.Errorf("syncing the filesystem of %s: %w", s.dir, err)
	}
	for i, made := range s.prefixes {
		if !made {
			continue
		}
		prefix := fmt.Sprintf("%02x", i)
		err := unix.Renameat2(s.dirFD, prefix, s.objectsFD, prefix, unix.RENAME_NOREPLACE)
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("moving %s/%s into %s/objects: %w", s.dir, prefix, s.repoPath, err)
		}
		if err := s.publishEach(prefix); err != nil {
			return err
		}
	}
	s.pending, s.prefixes = 0, [256]bool{}
	return nil
}

// publishEach moves the objects of one prefix into objects/ one by one.
func (s *stage) publishEach(prefix string) error {
	dir, err := os.Open(filepath.Join(s.dir, prefix))
	if err != nil {
		return fmt.Errorf("listing stage %s: %w", s.dir, err)
	}
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(1024)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("listing stage %s/%s: %w", s.dir, prefix, err)
		}
		for _, name := range names {
			if !strings.HasSuffix(name, ".file") {
				continue
			}
			p := prefix + "/" + name
			if err := unix.Renameat(s.dirFD, p, s.objectsFD, p); err != nil {
				return fmt.Errorf("moving object %s%s into %s/objects: %w", prefix, strings.TrimSuffix(name, ".file"), s.repoPath, err)
			}
		}
	}
}

// stats counts the objects the stage wrote.
func (s *stage) stats() (objects, bytes uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objects, s.bytes
}

// discard removes the stage directory, and whatever objects it still
// holds, and releases its lock.
func (s *stage) discard() error {
	var err error
	if s.dir != "" {
		err = os.RemoveAll(s.dir)
	}
	for _, fd := range []*int{&s.dirFD, &s.objectsFD} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if err != nil {
		return fmt.Errorf("removing stage %s: %w", s.dir, err)
	}
	return nil
}
