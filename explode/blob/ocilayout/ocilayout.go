// Package ocilayout reads blobs from an OCI image layout's blobs/ directory.
package ocilayout

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// Source opens blobs of the OCI image layout rooted at a directory.
type Source struct {
	dir string
}

var _ blob.Source = (*Source)(nil)

// New returns a Source for the layout at dir.
func New(dir string) *Source { return &Source{dir: dir} }

// String implements blob.Source.
func (s *Source) String() string { return "oci-layout:" + s.dir }

// Path returns the file that holds d. The digest is validated first so a
// hostile manifest cannot name a path outside blobs/.
func (s *Source) Path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob %q: %w", d, err)
	}
	return filepath.Join(s.dir, "blobs", d.Algorithm().String(), d.Encoded()), nil
}

// Open implements blob.Source.
func (s *Source) Open(_ context.Context, d digest.Digest) (blob.Blob, error) {
	p, err := s.Path(d)
	if err != nil {
		return nil, err
	}
	b, err := blob.OpenFile(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s of layout %s: %w", d, s.dir, err)
	}
	return b, nil
}
