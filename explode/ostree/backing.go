package ostree

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/index"
)

// Backing returns the OSTree object that holds the bytes of regular file
// ino of a committed image, open for reading, for FUSE passthrough. It
// returns nil and no error while the image is not committed or when the
// index does not name the file's object. Each object is verified against
// its checksum before it is first handed out.
func (m *Materializer) Backing(ctx context.Context, image digest.Digest, view *index.View, ino index.Ino) (*os.File, error) {
	m.mu.Lock()
	img, ok := m.images[image]
	committed := ok && img.state == index.MaterialDone
	m.mu.Unlock()
	if !committed {
		return nil, nil
	}
	in, ok := view.Stat(ino)
	layers := view.Layers()
	if !ok || in.Type != index.TypeRegular || in.Layer < 0 || in.Layer >= len(layers) {
		return nil, nil
	}
	layer := layers[in.Layer]
	id, err := m.store.ContentObject(ctx, layer, in.Offset, metaFingerprint(&in))
	if errors.Is(err, index.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image %s: looking up the object of inode %d: %w", image, ino, err)
	}
	sum := libostree.Checksum(id)
	if err := m.verifyOnce(sum); err != nil {
		return nil, fmt.Errorf("image %s, inode %d: %w", image, ino, err)
	}
	f, fi, err := index.OpenRegular(m.repo.ObjectPath(sum))
	if err != nil {
		return nil, fmt.Errorf("image %s, inode %d: opening object: %w", image, ino, err)
	}
	if fi.Size() != in.Size {
		f.Close()
		return nil, fmt.Errorf("image %s, inode %d: object %s holds %d bytes, the file has %d", image, ino, sum, fi.Size(), in.Size)
	}
	return f, nil
}

// verifyOnce checks an object's checksum the first time it is asked for.
// Objects are immutable once committed, so once is enough.
func (m *Materializer) verifyOnce(sum libostree.Checksum) error {
	m.verifiedMu.Lock()
	ok := m.verified[sum]
	m.verifiedMu.Unlock()
	if ok {
		return nil
	}
	if err := m.verifier.FsckFile(sum); err != nil {
		return err
	}
	m.verifiedMu.Lock()
	m.verified[sum] = true
	m.verifiedMu.Unlock()
	return nil
}
