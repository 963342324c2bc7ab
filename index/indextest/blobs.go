package indextest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// MemBlob is a blob held in memory.
func MemBlob(b []byte) index.Blob { return memBlob{bytes.NewReader(b)} }

type memBlob struct{ *bytes.Reader }

func (memBlob) Close() error { return nil }

// MemBlobs opens layers from a map of blob bytes by digest. A missing
// layer fails with an error wrapping fs.ErrNotExist, as a real source does.
type MemBlobs map[digest.Digest][]byte

var _ index.BlobOpener = MemBlobs(nil)

// OpenLayer implements index.BlobOpener.
func (m MemBlobs) OpenLayer(_ context.Context, d digest.Digest) (index.Blob, error) {
	b, ok := m[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, fs.ErrNotExist)
	}
	return MemBlob(b), nil
}
