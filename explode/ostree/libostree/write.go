package libostree

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// FileMeta is what OSTree records of a file besides its bytes.
type FileMeta struct {
	UID, GID uint32
	// Mode is the full st_mode: type bits and permission bits.
	Mode   uint32
	Xattrs []Xattr
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Txn is a repository transaction: objects written in it become durable,
// and its refs move, only when Commit succeeds. Abort (or a crash) leaves
// no ref behind.
type Txn struct {
	repo *Repo
	done bool
	// stage writes the regular files of a bare repository; it is nil
	// where libostree writes them.
	stage *stage
	// written holds the objects written through libostree, which a
	// lookup in objects/ does not see until the commit; up to maxWritten.
	mu      sync.Mutex
	written map[Checksum]struct{}
}

// maxWritten bounds the memory the lookup of a transaction's own objects
// takes where libostree writes them (about 60 bytes an object). Past it,
// an object written twice costs libostree a temporary file, no more.
const maxWritten = 1 << 18

// ErrTxnDone is returned by calls on a committed or aborted Txn.
var ErrTxnDone = errors.New("ostree transaction already finished")

// Begin starts a transaction. A Repo has at most one at a time.
func (r *Repo) Begin() (*Txn, error) {
	t := &Txn{repo: r, written: map[Checksum]struct{}{}}
	err := r.call(func() error {
		if r.inTxn {
			return errors.New("a transaction is already open")
		}
		var cerr *C.char
		if C.ex_txn_begin(r.ptr, &cerr) == 0 {
			return takeError(cerr)
		}
		r.inTxn = true
		if r.mode != Bare || r.opts.libostreeWrites {
			return nil
		}
		var minFree C.guint64
		var err error
		if C.ex_min_free_space(r.ptr, &minFree, &cerr) == 0 {
			err = takeError(cerr)
		} else {
			t.stage, err = newStage(r.path, uint64(minFree))
		}
		if err != nil {
			r.inTxn = false
			if C.ex_txn_abort(r.ptr, &cerr) == 0 {
				err = errors.Join(err, takeError(cerr))
			}
			return err
		}
		r.stage = t.stage
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("starting a transaction in %s: %w", r.path, err)
	}
	return t, nil
}

// TxnStats counts what a transaction wrote.
type TxnStats struct {
	Objects uint64
	Bytes   uint64
}

// Commit makes the transaction's objects and refs durable.
func (t *Txn) Commit() (TxnStats, error) {
	var objects, bytes C.guint64
	err := t.finish(func() error {
		var cerr *C.char
		if t.stage != nil {
			if err := t.stage.publish(); err != nil {
				if C.ex_txn_abort(t.repo.ptr, &cerr) == 0 {
					err = errors.Join(err, takeError(cerr))
				}
				return err
			}
		}
		if C.ex_txn_commit(t.repo.ptr, &objects, &bytes, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return TxnStats{}, fmt.Errorf("committing transaction in %s: %w", t.repo.path, err)
	}
	stats := TxnStats{Objects: uint64(objects), Bytes: uint64(bytes)}
	if t.stage != nil {
		staged, stagedBytes := t.stage.stats()
		stats.Objects += staged
		stats.Bytes += stagedBytes
	}
	return stats, nil
}

// PublishContent makes the regular files written so far durable and moves
// them into objects/, ahead of Commit, which then has only the rest to
// publish. Objects published by a transaction that is then aborted stay,
// unreferenced, until a prune. Writing the tree's objects after this
// rather than during the write-back of the files' bytes spares them the
// wait on a busy journal. Where libostree writes the files it does
// nothing.
func (t *Txn) PublishContent() error {
	if t.done {
		return ErrTxnDone
	}
	if t.stage == nil {
		return nil
	}
	return t.repo.call(func() error {
		if err := t.stage.publish(); err != nil {
			return fmt.Errorf("publishing the content objects of a transaction in %s: %w", t.repo.path, err)
		}
		return nil
	})
}

// Abort discards the transaction. It is safe after Commit.
func (t *Txn) Abort() error {
	if t.done {
		return nil
	}
	err := t.finish(func() error {
		var cerr *C.char
		if C.ex_txn_abort(t.repo.ptr, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("aborting transaction in %s: %w", t.repo.path, err)
	}
	return nil
}

func (t *Txn) finish(f func() error) error {
	if t.done {
		return ErrTxnDone
	}
	t.done = true
	return t.repo.call(func() error {
		// Even a failed commit or abort leaves libostree with no
		// transaction open, and the stage gone.
		defer func() {
			t.repo.inTxn = false
			t.repo.discardStage()
		}()
		return f()
	})
}

// has reports whether the repository has object c, or this transaction
// wrote it.
func (t *Txn) has(c Checksum) (bool, error) {
	if t.stage != nil {
		return t.stage.has(c)
	}
	t.mu.Lock()
	_, ok := t.written[c]
	t.mu.Unlock()
	if ok {
		return true, nil
	}
	return t.repo.HasFile(c)
}

// remember records an object written through libostree.
func (t *Txn) remember(c Checksum) {
	t.mu.Lock()
	if len(t.written) < maxWritten {
		t.written[c] = struct{}{}
	}
	t.mu.Unlock()
}

// SetRef points ref at commit when the transaction commits.
func (t *Txn) SetRef(ref string, commit Checksum) error {
	if t.done {
		return ErrTxnDone
	}
	return t.repo.call(func() error {
		cref := C.CString(ref)
		defer C.free(unsafe.Pointer(cref))
		csum := C.CString(commit.String())
		defer C.free(unsafe.Pointer(csum))
		C.ex_txn_set_ref(t.repo.ptr, cref, csum)
		return nil
	})
}

// inlineMax is the size up to which a file's bytes are handed over in one
// call rather than streamed.
const inlineMax = 256 << 10

// chunkSize is how much of a large file is read and written at a time.
const chunkSize = 1 << 20

// Writer writes file and symlink objects on one of the Repo's writer
// threads, with no hop between threads per object: Txn.OnWriter hands it
// to a function that runs there, and only that function may use it.
type Writer struct {
	txn *Txn
	// chunk is the buffer large files are read through, kept for the
	// next one.
	chunk []byte
}

// OnWriter runs fn on one of the Repo's writer threads, which it keeps
// until fn returns; up to the Repo's Writers run at once.
func (t *Txn) OnWriter(fn func(w *Writer) error) error {
	if t.done {
		return ErrTxnDone
	}
	return t.repo.write(func() error { return fn(&Writer{txn: t}) })
}

// WriteFile writes a regular file of size bytes read from src and returns
// its object checksum. src must yield exactly size bytes. It runs on a
// writer thread, where a large file's src is read.
func (t *Txn) WriteFile(meta FileMeta, size int64, src io.Reader) (sum Checksum, err error) {
	err = t.OnWriter(func(w *Writer) error {
		obj, err := w.WriteFile(meta, size, src)
		sum = obj.Sum
		return err
	})
	return sum, err
}

// WriteSymlink writes a symbolic link object.
func (t *Txn) WriteSymlink(meta FileMeta, target string) (sum Checksum, err error) {
	err = t.OnWriter(func(w *Writer) error {
		sum, err = w.WriteSymlink(meta, target)
		return err
	})
	return sum, err
}

// Object is a regular file's content object, as a Writer left it.
type Object struct {
	Sum Checksum
	// Written says the Writer wrote it; false means the repository or
	// the transaction had it already.
	Written bool
}

// WriteFile is Txn.WriteFile on the Writer's thread.
func (w *Writer) WriteFile(meta FileMeta, size int64, src io.Reader) (Object, error) {
	if size < 0 {
		return Object{}, fmt.Errorf("writing file object: negative size %d", size)
	}
	if err := checkRegular(meta); err != nil {
		return Object{}, err
	}
	if size <= inlineMax {
		buf := make([]byte, size)
		if _, err := io.ReadFull(src, buf); err != nil {
			return Object{}, fmt.Errorf("reading %d bytes of file content: %w", size, err)
		}
		return w.WriteBytes(meta, buf)
	}
	if len(w.chunk) == 0 {
		w.chunk = make([]byte, chunkSize)
	}
	if w.txn.stage == nil {
		sum, err := w.writeStream(meta, size, src)
		if err == nil {
			w.txn.remember(sum)
		}
		return Object{Sum: sum, Written: true}, err
	}
	sum, written, err := w.txn.stage.writeStream(meta, size, src, w.chunk)
	if err != nil {
		return Object{}, fmt.Errorf("writing file object of %d bytes: %w", size, err)
	}
	return Object{Sum: sum, Written: written}, nil
}

func checkRegular(meta FileMeta) error {
	if meta.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return fmt.Errorf("writing file object: mode %o is not a regular file's", meta.Mode)
	}
	return nil
}

// WriteBytes writes a regular file whose bytes are data.
func (w *Writer) WriteBytes(meta FileMeta, data []byte) (Object, error) {
	var out [1]Object
	_, err := w.WriteBatch(data, []BatchFile{{Meta: meta, Len: len(data)}}, out[:])
	return out[0], err
}

// BatchFile is one file of a batch written with WriteBatch: its metadata
// and where its bytes lie in the batch's buffer.
type BatchFile struct {
	Meta     FileMeta
	Off, Len int
}

// WriteBatch writes many small regular files, whose bytes all lie in buf,
// and puts each file's object in out, which must be as long as files. A
// file whose object the repository or the transaction has is not written
// again. It returns how many files it saw to: when it fails, files[n] is
// the file that failed.
func (w *Writer) WriteBatch(buf []byte, files []BatchFile, out []Object) (int, error) {
	if len(out) < len(files) {
		return 0, fmt.Errorf("writing %d file objects: room for %d results", len(files), len(out))
	}
	for i, f := range files {
		if f.Off < 0 || f.Len < 0 || f.Off+f.Len > len(buf) {
			return 0, fmt.Errorf("writing file object %d: bytes %d+%d outside the batch's %d", i, f.Off, f.Len, len(buf))
		}
	}
	if w.txn.stage != nil {
		return w.stageBatch(buf, files, out)
	}
	// Through libostree, the files it must write go in one call: one
	// thread handoff for many files.
	var todo []int
	seen := map[Checksum]bool{}
	limit, stopped := len(files), error(nil)
	for i, f := range files {
		if stopped = checkRegular(f.Meta); stopped != nil {
			limit = i
			break
		}
		sum := contentChecksum(f.Meta, buf[f.Off:f.Off+f.Len])
		out[i] = Object{Sum: sum}
		if seen[sum] {
			continue
		}
		found, err := w.txn.has(sum)
		if err != nil {
			limit, stopped = i, err
			break
		}
		seen[sum] = true
		if !found {
			todo = append(todo, i)
		}
	}
	if k, err := w.libostreeBatch(buf, files, todo, out); err != nil {
		return todo[k], err
	}
	return limit, stopped
}

// stageBatch writes a batch's files into the stage, one by one.
func (w *Writer) stageBatch(buf []byte, files []BatchFile, out []Object) (int, error) {
	for i, f := range files {
		if err := checkRegular(f.Meta); err != nil {
			return i, err
		}
		data := buf[f.Off : f.Off+f.Len]
		sum := contentChecksum(f.Meta, data)
		out[i] = Object{Sum: sum}
		found, err := w.txn.stage.committed(sum)
		if err != nil {
			return i, err
		}
		if found {
			continue
		}
		if out[i].Written, err = w.txn.stage.writeBytes(sum, f.Meta, data); err != nil {
			return i, fmt.Errorf("writing file object of %d bytes: %w", len(data), err)
		}
	}
	return len(files), nil
}

// libostreeBatch writes files[i] for each i in todo in one call into
// libostree, and checks that libostree names each object as out[i]
// already does. It returns the position in todo of the file that failed.
func (w *Writer) libostreeBatch(buf []byte, files []BatchFile, todo []int, out []Object) (int, error) {
	if len(todo) == 0 {
		return 0, nil
	}
	uids := make([]C.guint32, len(todo))
	gids := make([]C.guint32, len(todo))
	modes := make([]C.guint32, len(todo))
	offs := make([]C.gsize, len(todo))
	lens := make([]C.gsize, len(todo))
	// The GVariants are C memory, so a Go slice may hold them.
	xattrs := make([]*C.GVariant, len(todo))
	defer func() {
		for _, x := range xattrs {
			C.ex_variant_unref(x)
		}
	}()
	for k, i := range todo {
		f := files[i]
		uids[k], gids[k], modes[k] = C.guint32(f.Meta.UID), C.guint32(f.Meta.GID), C.guint32(f.Meta.Mode)
		offs[k], lens[k] = C.gsize(f.Off), C.gsize(f.Len)
		xattrs[k] = newXattrs(f.Meta.Xattrs)
	}
	var p *C.guint8
	if len(buf) > 0 {
		p = (*C.guint8)(unsafe.Pointer(&buf[0]))
	}
	sums := make([]byte, len(todo)*65)
	var cerr *C.char
	n := int(C.ex_write_regfiles_inline(w.txn.repo.ptr, C.int(len(todo)), &uids[0], &gids[0], &modes[0],
		&xattrs[0], p, &offs[0], &lens[0], (*C.char)(unsafe.Pointer(&sums[0])), &cerr))
	for k := range n {
		i := todo[k]
		got, err := ParseChecksum(string(sums[k*65 : k*65+64]))
		if err == nil && got != out[i].Sum {
			err = fmt.Errorf("libostree named the file object %s, explodefs %s", got, out[i].Sum)
		}
		if err != nil {
			if n < len(todo) {
				C.g_free(C.gpointer(unsafe.Pointer(cerr)))
			}
			return k, err
		}
		out[i].Written = true
		w.txn.remember(got)
	}
	if n < len(todo) {
		return n, fmt.Errorf("writing file object of %d bytes: %w", files[todo[n]].Len, takeError(cerr))
	}
	return n, nil
}

// writeStream writes a large file through libostree chunk by chunk,
// reading src on the writer thread, so that the content writer stays on
// one thread.
func (w *Writer) writeStream(meta FileMeta, size int64, src io.Reader) (Checksum, error) {
	var out [65]byte
	err := func() error {
		xattrs := newXattrs(meta.Xattrs)
		defer C.ex_variant_unref(xattrs)
		var cerr *C.char
		cw := C.ex_regfile_begin(w.txn.repo.ptr, C.guint32(meta.UID), C.guint32(meta.GID), C.guint32(meta.Mode),
			C.guint64(size), xattrs, &cerr)
		if cw == nil {
			return fmt.Errorf("starting: %w", takeError(cerr))
		}
		buf := w.chunk[:min(size, chunkSize)]
		for left := size; left > 0; {
			n, err := io.ReadFull(src, buf[:min(left, int64(len(buf)))])
			if err != nil {
				C.ex_regfile_cancel(cw)
				return fmt.Errorf("reading content at %d: %w", size-left, err)
			}
			if C.ex_regfile_write(cw, (*C.guint8)(unsafe.Pointer(&buf[0])), C.gsize(n), &cerr) == 0 {
				C.ex_regfile_cancel(cw)
				return fmt.Errorf("writing at %d: %w", size-left, takeError(cerr))
			}
			left -= int64(n)
		}
		if C.ex_regfile_finish(cw, outPtr(&out), &cerr) == 0 {
			return fmt.Errorf("finishing: %w", takeError(cerr))
		}
		return nil
	}()
	if err != nil {
		return Checksum{}, fmt.Errorf("writing file object of %d bytes: %w", size, err)
	}
	return checksumOut(&out)
}

// WriteSymlink is Txn.WriteSymlink on the Writer's thread.
func (w *Writer) WriteSymlink(meta FileMeta, target string) (Checksum, error) {
	var out [65]byte
	xattrs := newXattrs(meta.Xattrs)
	defer C.ex_variant_unref(xattrs)
	ctarget := C.CString(target)
	defer C.free(unsafe.Pointer(ctarget))
	var cerr *C.char
	if C.ex_write_symlink(w.txn.repo.ptr, C.guint32(meta.UID), C.guint32(meta.GID), xattrs, ctarget,
		outPtr(&out), &cerr) == 0 {
		return Checksum{}, fmt.Errorf("writing symlink object to %q: %w", target, takeError(cerr))
	}
	return checksumOut(&out)
}

// WriteDirMeta writes a directory's metadata object.
func (t *Txn) WriteDirMeta(meta FileMeta) (Checksum, error) {
	if t.done {
		return Checksum{}, ErrTxnDone
	}
	var out [65]byte
	err := t.repo.call(func() error {
		xattrs := newXattrs(meta.Xattrs)
		defer C.ex_variant_unref(xattrs)
		var cerr *C.char
		if C.ex_write_dirmeta(t.repo.ptr, C.guint32(meta.UID), C.guint32(meta.GID), C.guint32(meta.Mode),
			xattrs, outPtr(&out), &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return Checksum{}, fmt.Errorf("writing directory metadata object: %w", err)
	}
	return checksumOut(&out)
}

// Metadata is a commit's metadata: each value a string or a []string.
type Metadata map[string]any

// CommitTree writes root's tree objects and a commit of them with subject,
// metadata and timestamp, and returns the commit checksum.
func (t *Txn) CommitTree(root *Tree, subject string, meta Metadata, when time.Time) (Checksum, error) {
	if t.done {
		return Checksum{}, ErrTxnDone
	}
	if root.parent != nil {
		return Checksum{}, errors.New("committing a tree: not a root tree")
	}
	for _, k := range slices.Sorted(mapsKeys(meta)) {
		switch v := meta[k].(type) {
		case string:
		case []string:
			for _, s := range v {
				if strings.ContainsRune(s, 0) {
					return Checksum{}, fmt.Errorf("commit metadata %s: value contains NUL", k)
				}
			}
		default:
			return Checksum{}, fmt.Errorf("commit metadata %s: unsupported type %T", k, v)
		}
	}
	var out [65]byte
	err := t.repo.call(func() error {
		b := C.ex_meta_new()
		for _, k := range slices.Sorted(mapsKeys(meta)) {
			ck := C.CString(k)
			switch v := meta[k].(type) {
			case string:
				cv := C.CString(v)
				C.ex_meta_string(b, ck, cv)
				C.free(unsafe.Pointer(cv))
			case []string:
				joined := C.CString(strings.Join(v, "\x00") + "\x00")
				C.ex_meta_strv(b, ck, C.int(len(v)), joined)
				C.free(unsafe.Pointer(joined))
			}
			C.free(unsafe.Pointer(ck))
		}
		csubject := C.CString(subject)
		defer C.free(unsafe.Pointer(csubject))
		var cerr *C.char
		// ex_write_commit consumes the builder.
		if C.ex_write_commit(t.repo.ptr, root.ptr, csubject, b, C.guint64(when.Unix()), outPtr(&out), &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return Checksum{}, fmt.Errorf("writing commit %q: %w", subject, err)
	}
	return checksumOut(&out)
}

func mapsKeys(m Metadata) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// newXattrs builds the GVariant of a set of xattrs, sorted by name as
// OSTree reads them from disk, or nil for none. The caller unrefs it.
func newXattrs(xs []Xattr) *C.GVariant {
	if len(xs) == 0 {
		return nil
	}
	xs = sortedXattrs(xs)
	var names strings.Builder
	var values []byte
	lens := make([]C.gsize, len(xs))
	for i, x := range xs {
		names.WriteString(x.Name)
		names.WriteByte(0)
		values = append(values, x.Value...)
		lens[i] = C.gsize(len(x.Value))
	}
	cnames := C.CString(names.String())
	defer C.free(unsafe.Pointer(cnames))
	cvalues := C.CBytes(append(values, 0))
	defer C.free(cvalues)
	clens := C.malloc(C.size_t(len(lens)) * C.size_t(unsafe.Sizeof(C.gsize(0))))
	defer C.free(clens)
	copy(unsafe.Slice((*C.gsize)(clens), len(lens)), lens)
	return C.ex_xattrs_new(C.int(len(xs)), cnames, (*C.guint8)(cvalues), (*C.gsize)(clens))
}
