// Package blob is the seam between explodefs and wherever layer blobs live:
// an OCI layout's blobs/ directory, a registry's filesystem storage, or a
// registry over HTTP. Implementations live in subpackages, one each.
package blob

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Blob is a blob opened for random access: what the index reads layers
// through, so that any source's blobs can be handed to it as they are.
type Blob = index.Blob

// Versioned is implemented by blobs that can tell whether their bytes may
// have changed since an earlier open: two opens with the same Version saw
// the same bytes. A layer whose copy in a source failed on its content is
// tried again only once that copy's version changes.
type Versioned interface {
	Version() string
}

// VersionOf returns b's version, or "" when b cannot tell.
func VersionOf(b Blob) string {
	if v, ok := b.(Versioned); ok {
		return v.Version()
	}
	return ""
}

// Source opens blobs by digest. Open fails with an error wrapping
// fs.ErrNotExist when the source has no such blob, and with ErrNotRegular
// when what it has cannot be read as a blob (a FIFO, a directory).
type Source interface {
	Open(ctx context.Context, d digest.Digest) (Blob, error)
	// String names the source in messages. Two sources with the same
	// name hold the same blobs.
	String() string
}

// ErrUnavailable is wrapped by the failures of a source that could not be
// reached or kept failing to answer (a registry down, restarting, or
// overloaded) after the retries it makes itself. They may pass: unlike a
// failure of the bytes, they say nothing about the blob.
var ErrUnavailable = errors.New("the source is unavailable")

// ErrNotRegular reports a blob path that is not a regular file (a FIFO,
// a directory); it is index.ErrNotRegular.
var ErrNotRegular = index.ErrNotRegular
