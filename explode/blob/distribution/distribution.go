// Package distribution reads blobs from the filesystem storage of a
// docker/distribution registry, the layout OpenShift's integrated registry
// writes: <root>/docker/registry/v2/blobs/<algorithm>/<2 hex>/<hex>/data.
// Manifests are blobs there too, so one Source serves manifests, configs
// and layers of every repository the registry holds.
package distribution

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// Source opens blobs of the registry storage rooted at a directory (the
// registry's rootdirectory, which holds docker/registry/v2).
type Source struct {
	root string
}

var _ blob.Source = (*Source)(nil)

// New returns a Source for the registry storage rooted at root.
func New(root string) *Source { return &Source{root: filepath.Clean(root)} }

// FromURL returns a Source for a file:// URL naming the storage root, as
// --blob-source file:///registry does. Only a local absolute path is
// taken: a host, a query or a fragment would be silently ignored otherwise.
func FromURL(raw string) (*Source, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("blob source %q: %w", raw, err)
	}
	switch {
	case u.Scheme != "file":
		return nil, fmt.Errorf("blob source %q: not a file:// URL", raw)
	case u.Host != "" && u.Host != "localhost":
		return nil, fmt.Errorf("blob source %q: file URLs name local paths, not host %q", raw, u.Host)
	case u.Opaque != "" || !filepath.IsAbs(u.Path):
		return nil, fmt.Errorf("blob source %q: the path must be absolute (file:///registry)", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("blob source %q: a query or fragment means nothing here", raw)
	}
	return New(u.Path), nil
}

// String implements blob.Source with the URL the source was named by.
func (s *Source) String() string {
	return (&url.URL{Scheme: "file", Path: s.root}).String()
}

// Path returns the file that holds d. The digest is validated first, so a
// hostile manifest cannot name a path outside the storage: a valid digest
// is an algorithm name and a fixed-length lowercase hex string.
func (s *Source) Path(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob %q: %w", d, err)
	}
	hex := d.Encoded()
	return filepath.Join(s.root, "docker", "registry", "v2", "blobs", d.Algorithm().String(), hex[:2], hex, "data"), nil
}

// Open implements blob.Source. The blob is blob.Versioned, so a copy that
// failed on its content is read again only once the registry rewrote it.
func (s *Source) Open(_ context.Context, d digest.Digest) (blob.Blob, error) {
	p, err := s.Path(d)
	if err != nil {
		return nil, err
	}
	b, err := blob.OpenFile(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s of registry storage %s: %w", d, s.root, err)
	}
	return b, nil
}
