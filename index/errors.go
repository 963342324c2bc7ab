package index

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/opencontainers/go-digest"
)

// EntryError says which layer and which tar entry a failure is about.
type EntryError struct {
	Layer digest.Digest
	// Path is the entry's name as the tar header wrote it, or the cleaned
	// path when the failure happened after cleaning.
	Path string
	Err  error
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("layer %s: entry %q: %v", e.Layer, e.Path, e.Err)
}

func (e *EntryError) Unwrap() error { return e.Err }

// LayerError says which layer a failure is about, when no single entry is.
type LayerError struct {
	Layer digest.Digest
	Err   error
}

func (e *LayerError) Error() string {
	return fmt.Sprintf("layer %s: %v", e.Layer, e.Err)
}

func (e *LayerError) Unwrap() error { return e.Err }

// ErrStateDiskFull reports that the state directory ran out of space while
// a pass wrote the index or a decompressed cache. It says nothing about
// the layer: the pass can run again once there is room.
var ErrStateDiskFull = errors.New("the state directory's disk is full")

// StoreError is a failure to record a pass's results in the state
// directory (the index or a decompressed cache), as opposed to a fault of
// the layer's content. Such failures are worth retrying.
type StoreError struct {
	Layer digest.Digest
	// Image is set instead of Layer for records about a whole image.
	Image digest.Digest
	Err   error
}

func (e *StoreError) Error() string {
	subject := "layer " + e.Layer.String()
	if e.Image != "" {
		subject = "image " + e.Image.String()
	}
	if errors.Is(e.Err, syscall.ENOSPC) {
		return fmt.Sprintf("%s: %v: %v", subject, ErrStateDiskFull, e.Err)
	}
	return fmt.Sprintf("%s: recording the index: %v", subject, e.Err)
}

// Unwrap lets errors.Is find both the cause and ErrStateDiskFull.
func (e *StoreError) Unwrap() []error {
	if errors.Is(e.Err, syscall.ENOSPC) {
		return []error{e.Err, ErrStateDiskFull}
	}
	return []error{e.Err}
}
