package index

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// Blob is a layer blob opened for random access. The index declares what
// it reads through; whoever knows where layers live implements it.
type Blob interface {
	io.ReaderAt
	io.Closer
	// Size is the blob's length in bytes.
	Size() int64
}

// BlobOpener opens the blob of a layer for the lazy reader. It decides
// which source a layer's bytes come from, and may answer differently over
// time: a Reader opens a layer again after a read from it failed.
type BlobOpener interface {
	OpenLayer(ctx context.Context, layer digest.Digest) (Blob, error)
}

// BlobOpenerFunc adapts a function to BlobOpener.
type BlobOpenerFunc func(ctx context.Context, layer digest.Digest) (Blob, error)

// OpenLayer implements BlobOpener.
func (f BlobOpenerFunc) OpenLayer(ctx context.Context, layer digest.Digest) (Blob, error) {
	return f(ctx, layer)
}
