// Package ocilayout reads blobs from an OCI image layout's blobs/ directory.
package ocilayout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

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
	f, fi, err := OpenRegular(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s of layout %s: %w", d, s.dir, err)
	}
	return &file{File: f, info: fi}, nil
}

// OpenRegular opens a file for reading and refuses anything but a regular
// file with blob.ErrNotRegular. The open itself does not block: opening a
// FIFO for reading would otherwise wait for a writer that never comes.
func OpenRegular(name string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w (%s)", name, blob.ErrNotRegular, fi.Mode().Type())
	}
	return f, fi, nil
}

type file struct {
	*os.File
	info os.FileInfo
}

func (f *file) Size() int64 { return f.info.Size() }

// Version implements blob.Versioned: a rewritten or replaced file changes
// its inode, size or modification time.
func (f *file) Version() string {
	v := fmt.Sprintf("%d@%d", f.info.Size(), f.info.ModTime().UnixNano())
	if st, ok := f.info.Sys().(*syscall.Stat_t); ok {
		v = fmt.Sprintf("%d:%d:%s", st.Dev, st.Ino, v)
	}
	return v
}
