package libostree

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// Tree is a directory of a commit being assembled (an OstreeMutableTree).
// A Tree is used by one goroutine at a time; it holds no repository state,
// so its calls do not go through the Repo's thread.
type Tree struct {
	ptr    *C.OstreeMutableTree
	parent *Tree
}

// NewTree returns an empty root tree. Free it when done.
func NewTree() *Tree { return &Tree{ptr: C.ex_mtree_new()} }

// Free releases a root tree and all of its directories, and gives the
// memory back to the system: a tree of a million entries is hundreds of
// MiB of small GLib allocations, which malloc would otherwise keep.
func (t *Tree) Free() {
	if t.parent == nil && t.ptr != nil {
		C.ex_mtree_free(t.ptr)
		t.ptr = nil
		C.ex_trim_memory()
	}
}

// Dir returns the subdirectory name, creating it. It lives as long as the
// root does.
func (t *Tree) Dir(name string) (*Tree, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var cerr *C.char
	sub := C.ex_mtree_dir(t.ptr, cname, &cerr)
	if sub == nil {
		return nil, fmt.Errorf("adding directory %q: %w", name, takeError(cerr))
	}
	return &Tree{ptr: sub, parent: t}, nil
}

// SetFile names the file (regular or symlink) object c in this directory.
func (t *Tree) SetFile(name string, c Checksum) error {
	if err := checkName(name); err != nil {
		return err
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	csum := C.CString(c.String())
	defer C.free(unsafe.Pointer(csum))
	var cerr *C.char
	if C.ex_mtree_file(t.ptr, cname, csum, &cerr) == 0 {
		return fmt.Errorf("adding file %q: %w", name, takeError(cerr))
	}
	return nil
}

// SetMeta sets the directory's metadata object.
func (t *Tree) SetMeta(c Checksum) {
	csum := C.CString(c.String())
	defer C.free(unsafe.Pointer(csum))
	C.ex_mtree_set_meta(t.ptr, csum)
}

// checkName refuses names libostree would abort on rather than report.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid file name %q in a tree", name)
	}
	return nil
}
