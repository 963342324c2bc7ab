package index

import (
	"fmt"

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
