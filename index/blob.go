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

// ReadSizer is implemented by blobs for which each read costs a round
// trip, such as a registry's over HTTP: the lazy reader then fetches
// compressed input in pieces of ReadSize bytes rather than 64 KiB, so a
// cold read usually costs one request.
type ReadSizer interface {
	ReadSize() int
}

// readSizeOf returns b's preferred read size, or 0 for the default.
func readSizeOf(b io.ReaderAt) int {
	if rs, ok := b.(ReadSizer); ok {
		return rs.ReadSize()
	}
	return 0
}
