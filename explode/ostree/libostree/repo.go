// Package libostree is explodefs's binding to libostree, through cgo: the
// second and last cgo leaf of the module (the first is index/zran).
//
// It covers what github.com/ostreedev/ostree-go lacks or gets wrong for a
// long-running daemon: file content written from a stream inside a
// transaction, trees assembled in a mutable tree, refs listed and deleted,
// prune, fsck of one object, and a repo that is closed (ostree-go never
// releases its repos and leaks their descriptors). In a bare repository
// it writes regular files' content objects itself, in libostree's layout
// (stage.go): libostree's own path costs most of a commit's CPU time.
//
// Thread safety: every call on a Repo runs on an OS thread that the Repo
// owns. libostree's repository lock and transaction state belong to the
// OstreeRepo object and are not safe to touch from two threads at once,
// and a transaction must begin and end on the thread that holds the
// repo's lock, so every call but the writing of file and symlink objects
// runs on one main thread, one at a time. Object writes run on up to
// Writers threads at once: libostree writes content concurrently within a
// transaction itself (ostree_repo_write_content_async runs each write on
// a worker thread; pull keeps many in flight), counting its statistics
// under its own lock. This makes every method safe to call from any
// goroutine. Callers that must not wait behind a long materialization
// (the FUSE open path) open a second Repo.
package libostree

/*
#cgo pkg-config: ostree-1
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mode is a repository's storage mode.
type Mode int

const (
	// Bare stores files as they are, owner and xattrs included; only root
	// can write it.
	Bare Mode = iota
	// BareUser stores files owned by the writing user and keeps the real
	// owner, mode and xattrs in a user.ostreemeta xattr.
	BareUser
)

func (m Mode) String() string {
	if m == BareUser {
		return "bare-user"
	}
	return "bare"
}

// Checksum is the sha256 of an OSTree object.
type Checksum [32]byte

// String returns the checksum in hex, as OSTree names objects.
func (c Checksum) String() string { return hex.EncodeToString(c[:]) }

// ParseChecksum parses a hex checksum.
func ParseChecksum(s string) (Checksum, error) {
	var c Checksum
	if len(s) != 64 {
		return c, fmt.Errorf("checksum %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(c[:], []byte(s)); err != nil {
		return c, fmt.Errorf("checksum %q: %w", s, err)
	}
	return c, nil
}

// Repo is an open OSTree repository.
type Repo struct {
	path string
	mode Mode
	ptr  *C.OstreeRepo
	// calls carries libostree calls to the Repo's main OS thread, and
	// writes object writes to its writer threads.
	calls  chan func()
	writes chan func()
	done   chan struct{}
	once   sync.Once
	opts   options
	// inTxn and stage are touched only on the Repo's thread.
	inTxn bool
	stage *stage
}

// ErrClosed is returned by calls on a closed Repo.
var ErrClosed = errors.New("ostree repo is closed")

// Option tunes a Repo.
type Option func(*options)

type options struct {
	writers int
	nice    int
	// libostreeWrites has libostree write a bare repository's regular
	// files too, for tests that hold the stage's objects against its.
	libostreeWrites bool
}

// Writers lets up to n file and symlink objects be written at once, each
// on a thread of its own (default 1).
func Writers(n int) Option { return func(o *options) { o.writers = max(1, n) } }

// Nice sets the scheduling niceness of the Repo's threads, where libostree
// hashes and writes, so that background commits give way to work users
// wait for. It is best effort.
func Nice(n int) Option { return func(o *options) { o.nice = n } }

// Create opens the repository at path, creating it in mode if it does not
// exist. An existing repository keeps its own mode, which Mode reports.
func Create(path string, mode Mode, opts ...Option) (*Repo, error) {
	return open(path, true, mode, opts)
}

// Open opens an existing repository.
func Open(path string, opts ...Option) (*Repo, error) { return open(path, false, Bare, opts) }

func open(path string, create bool, mode Mode, opts []Option) (*Repo, error) {
	r := &Repo{path: path, calls: make(chan func()), writes: make(chan func()), done: make(chan struct{}),
		opts: options{writers: 1}}
	for _, o := range opts {
		o(&r.opts)
	}
	ready := make(chan error, 1)
	go r.serve(func() error {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		var cerr *C.char
		userMode := C.int(0)
		if mode == BareUser {
			userMode = 1
		}
		createFlag := C.int(0)
		if create {
			createFlag = 1
		}
		r.ptr = C.ex_repo_open(cpath, createFlag, userMode, &cerr)
		if r.ptr == nil {
			return takeError(cerr)
		}
		return nil
	}, ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("opening ostree repo %s: %w", path, err)
	}
	m, err := readMode(path)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.mode = m
	return r, nil
}

// serve runs the Repo's calls on one locked OS thread until Close, and
// starts the writer threads.
//
// The threads are never unlocked: a goroutine that exits locked takes its
// thread with it, so that no other goroutine ever runs on a thread at the
// Repo's niceness.
func (r *Repo) serve(init func() error, ready chan<- error) {
	runtime.LockOSThread()
	setThreadNice(r.opts.nice)
	if err := init(); err != nil {
		ready <- err
		return
	}
	var writers, started sync.WaitGroup
	for range r.opts.writers {
		started.Add(1)
		writers.Go(func() { r.serveWrites(&started) })
	}
	started.Wait()
	ready <- nil
	for {
		select {
		case f := <-r.calls:
			f()
		case <-r.done:
			// Writers finish their call before the repo goes.
			writers.Wait()
			if r.inTxn {
				var cerr *C.char
				if C.ex_txn_abort(r.ptr, &cerr) == 0 {
					C.g_free(C.gpointer(unsafe.Pointer(cerr)))
				}
				r.discardStage()
			}
			C.ex_repo_close(r.ptr)
			r.ptr = nil
			return
		}
	}
}

// serveWrites runs object writes on a locked OS thread until Close; the
// thread ends with it.
func (r *Repo) serveWrites(started *sync.WaitGroup) {
	runtime.LockOSThread()
	setThreadNice(r.opts.nice)
	started.Done()
	for {
		select {
		case f := <-r.writes:
			f()
		case <-r.done:
			return
		}
	}
}

// setThreadNice sets the calling thread's niceness, as far as it is
// allowed: a lower priority is only a courtesy to other work, never a
// reason to fail. On Linux, PRIO_PROCESS with who 0 names the calling
// thread.
func setThreadNice(nice int) {
	if nice != 0 {
		_ = unix.Setpriority(unix.PRIO_PROCESS, 0, nice)
	}
}

// discardStage removes the stage of the transaction that just ended. A
// stage that cannot be removed is left to the next Begin.
func (r *Repo) discardStage() {
	if r.stage != nil {
		_ = r.stage.discard()
		r.stage = nil
	}
}

// call runs f on the Repo's main thread and waits for it.
func (r *Repo) call(f func() error) error { return r.run(r.calls, f) }

// write runs f on one of the Repo's writer threads and waits for it.
func (r *Repo) write(f func() error) error { return r.run(r.writes, f) }

func (r *Repo) run(ch chan func(), f func() error) (err error) {
	finished := make(chan struct{})
	select {
	case ch <- func() { defer close(finished); err = f() }:
	case <-r.done:
		return ErrClosed
	}
	<-finished
	return err
}

// Close aborts an open transaction and releases the repository and all of
// its descriptors.
func (r *Repo) Close() error {
	r.once.Do(func() { close(r.done) })
	return nil
}

// Path returns the repository's directory.
func (r *Repo) Path() string { return r.path }

// Mode returns the repository's storage mode.
func (r *Repo) Mode() Mode { return r.mode }

// ObjectPath returns the file that holds a content object in this
// repository. In both bare modes it holds the file's bytes as they are.
func (r *Repo) ObjectPath(c Checksum) string {
	h := c.String()
	return filepath.Join(r.path, "objects", h[:2], h[2:]+".file")
}

// takeError turns a message from the shim into an error and frees it.
func takeError(cerr *C.char) error {
	if cerr == nil {
		return errors.New("libostree failed without a message")
	}
	defer C.g_free(C.gpointer(unsafe.Pointer(cerr)))
	return errors.New(C.GoString(cerr))
}

// checksumOut converts the shim's 65-byte hex output.
func checksumOut(buf *[65]byte) (Checksum, error) {
	return ParseChecksum(string(buf[:64]))
}

func outPtr(buf *[65]byte) *C.char { return (*C.char)(unsafe.Pointer(&buf[0])) }

// SetRef points ref at commit at once, outside any transaction.
func (r *Repo) SetRef(ref string, commit Checksum) error {
	return r.setRef(ref, commit.String())
}

// DeleteRef removes ref; a missing ref is not an error.
func (r *Repo) DeleteRef(ref string) error { return r.setRef(ref, "") }

func (r *Repo) setRef(ref, commit string) error {
	err := r.call(func() error {
		cref := C.CString(ref)
		defer C.free(unsafe.Pointer(cref))
		var ccommit *C.char
		if commit != "" {
			ccommit = C.CString(commit)
			defer C.free(unsafe.Pointer(ccommit))
		}
		var cerr *C.char
		if C.ex_set_ref(r.ptr, cref, ccommit, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		if commit == "" {
			return fmt.Errorf("deleting ref %s: %w", ref, err)
		}
		return fmt.Errorf("setting ref %s to %s: %w", ref, commit, err)
	}
	return nil
}

// ListRefs returns the refs under prefix (all refs if it is empty) with
// the commits they point at.
func (r *Repo) ListRefs(prefix string) (map[string]Checksum, error) {
	var text string
	err := r.call(func() error {
		var cprefix *C.char
		if prefix != "" {
			cprefix = C.CString(prefix)
			defer C.free(unsafe.Pointer(cprefix))
		}
		var cerr *C.char
		out := C.ex_list_refs(r.ptr, cprefix, &cerr)
		if out == nil {
			return takeError(cerr)
		}
		defer C.g_free(C.gpointer(unsafe.Pointer(out)))
		text = C.GoString(out)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing refs under %q: %w", prefix, err)
	}
	refs := map[string]Checksum{}
	for line := range strings.Lines(text) {
		ref, sum, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		c, err := ParseChecksum(sum)
		if err != nil {
			return nil, fmt.Errorf("listing refs under %q: ref %s: %w", prefix, ref, err)
		}
		refs[ref] = c
	}
	return refs, nil
}

// Resolve returns the commit ref points at, and false if there is no such
// ref.
func (r *Repo) Resolve(ref string) (Checksum, bool, error) {
	var out [65]byte
	var found C.int
	err := r.call(func() error {
		cref := C.CString(ref)
		defer C.free(unsafe.Pointer(cref))
		var cerr *C.char
		if C.ex_resolve(r.ptr, cref, outPtr(&out), &found, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return Checksum{}, false, fmt.Errorf("resolving ref %s: %w", ref, err)
	}
	if found == 0 {
		return Checksum{}, false, nil
	}
	c, err := checksumOut(&out)
	return c, err == nil, err
}

// HasFile reports whether the content object c is committed in the
// repository. It looks for the object's file directly rather than asking
// libostree, so that it costs one stat and no trip to the Repo's thread:
// it is asked for every file of an image whose layers were committed
// before. Objects staged by a transaction still open are not seen.
func (r *Repo) HasFile(c Checksum) (bool, error) {
	_, err := os.Lstat(r.ObjectPath(c))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("looking up object %s: %w", c, err)
}

// FsckFile reads the content object c back and checks that it still hashes
// to c, owner, mode and xattrs included.
func (r *Repo) FsckFile(c Checksum) error {
	err := r.call(func() error {
		csum := C.CString(c.String())
		defer C.free(unsafe.Pointer(csum))
		var cerr *C.char
		if C.ex_fsck_file(r.ptr, csum, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verifying object %s: %w", c, err)
	}
	return nil
}

// PruneStats says what a prune found and removed.
type PruneStats struct {
	Objects, Pruned int
	Bytes           uint64
}

// Prune deletes every object that no ref reaches.
func (r *Repo) Prune() (PruneStats, error) {
	var total, pruned C.gint
	var size C.guint64
	err := r.call(func() error {
		var cerr *C.char
		if C.ex_prune(r.ptr, &total, &pruned, &size, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return PruneStats{}, fmt.Errorf("pruning ostree repo %s: %w", r.path, err)
	}
	return PruneStats{Objects: int(total), Pruned: int(pruned), Bytes: uint64(size)}, nil
}

// PruneEstimate says what Prune would delete once every ref but keep
// were deleted, and deletes nothing: a dry run of a GC that is about to
// drop refs.
func (r *Repo) PruneEstimate(keep []string) (PruneStats, error) {
	var total, pruned C.gint
	var size C.guint64
	err := r.call(func() error {
		ckeep := C.CString(strings.Join(keep, "\x00") + "\x00")
		defer C.free(unsafe.Pointer(ckeep))
		var cerr *C.char
		if C.ex_prune_estimate(r.ptr, C.int(len(keep)), ckeep, &total, &pruned, &size, &cerr) == 0 {
			return takeError(cerr)
		}
		return nil
	})
	if err != nil {
		return PruneStats{}, fmt.Errorf("estimating a prune of ostree repo %s: %w", r.path, err)
	}
	return PruneStats{Objects: int(total), Pruned: int(pruned), Bytes: uint64(size)}, nil
}

// CommitMetadata returns commit's metadata value under key: a string as
// it is, a list of strings one per line, anything else as GVariant text.
// It returns false when the commit has no such key.
func (r *Repo) CommitMetadata(commit Checksum, key string) (string, bool, error) {
	var value string
	var found bool
	err := r.call(func() error {
		csum := C.CString(commit.String())
		defer C.free(unsafe.Pointer(csum))
		ckey := C.CString(key)
		defer C.free(unsafe.Pointer(ckey))
		var cerr *C.char
		out := C.ex_commit_metadata(r.ptr, csum, ckey, &cerr)
		if out == nil {
			if cerr != nil {
				return takeError(cerr)
			}
			return nil
		}
		defer C.g_free(C.gpointer(unsafe.Pointer(out)))
		value, found = C.GoString(out), true
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("reading metadata %s of commit %s: %w", key, commit, err)
	}
	return value, found, nil
}

// readMode reads the storage mode from the repository's config. Only the
// bare modes keep files as plain files, which passthrough and hard-linked
// checkouts need.
func readMode(path string) (Mode, error) {
	config, err := os.ReadFile(filepath.Join(path, "config"))
	if err != nil {
		return 0, fmt.Errorf("reading ostree repo config: %w", err)
	}
	for line := range strings.Lines(string(config)) {
		key, value, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok || strings.TrimSpace(key) != "mode" {
			continue
		}
		switch v := strings.TrimSpace(value); v {
		case "bare":
			return Bare, nil
		case "bare-user":
			return BareUser, nil
		default:
			return 0, fmt.Errorf("ostree repo %s is in mode %q; explodefs needs bare or bare-user", path, v)
		}
	}
	return 0, fmt.Errorf("ostree repo %s: config names no mode", path)
}
