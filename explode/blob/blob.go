// Package blob is the seam between explodefs and wherever layer blobs live:
// an OCI layout's blobs/ directory, a registry's filesystem storage, or a
// registry over HTTP. Implementations live in subpackages, one each.
package blob

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// Blob is a blob opened for random access.
type Blob interface {
	io.ReaderAt
	io.Closer
	// Size is the blob's length in bytes.
	Size() int64
}

// Source opens blobs by digest. Open fails with an error wrapping
// fs.ErrNotExist when the source has no such blob.
type Source interface {
	Open(ctx context.Context, d digest.Digest) (Blob, error)
}
