// Package manifest resolves an image reference (a manifest or an image
// index digest) to the ordered layer list of one platform's image, reading
// and verifying manifests from a blob.Source.
package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
)

// maxManifestSize bounds what is read for a manifest or index; registries
// refuse manifests over 4 MiB too.
const maxManifestSize = 4 << 20

// Layer is one layer of a resolved image.
type Layer struct {
	Digest    digest.Digest
	Size      int64
	MediaType string
}

// Image is an image resolved to one platform.
type Image struct {
	// Digest is what was asked for: a manifest or an index.
	Digest digest.Digest
	// Manifest is the platform's image manifest; equal to Digest unless
	// Digest named an index.
	Manifest  digest.Digest
	MediaType string
	Config    digest.Digest
	Platform  string
	Layers    []Layer
}

// ErrNoPlatform is returned when an index has no manifest for the platform.
var ErrNoPlatform = errors.New("no manifest for the platform")

// Resolve reads d from src and, for an index, picks the manifest of
// platform. Every manifest read is checked against its digest.
func Resolve(ctx context.Context, src blob.Source, d digest.Digest, platform v1.Platform) (Image, error) {
	raw, err := fetch(ctx, src, d)
	if err != nil {
		return Image{}, err
	}
	mt, err := mediaTypeOf(raw)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	img := Image{Digest: d, Manifest: d}
	if mt.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return Image{}, fmt.Errorf("image index %s: %w", d, err)
		}
		child, err := pick(idx, platform)
		if err != nil {
			return Image{}, fmt.Errorf("image index %s: %w", d, err)
		}
		img.Manifest = digest.Digest(child.Digest.String())
		if raw, err = fetch(ctx, src, img.Manifest); err != nil {
			return Image{}, err
		}
		if mt, err = mediaTypeOf(raw); err != nil || !mt.IsImage() {
			return Image{}, fmt.Errorf("manifest %s of index %s: not an image manifest (%q): %v", img.Manifest, d, mt, err)
		}
	}
	if !mt.IsImage() {
		return Image{}, fmt.Errorf("manifest %s: unsupported media type %q", d, mt)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", img.Manifest, err)
	}
	img.MediaType = string(mt)
	img.Config = digest.Digest(m.Config.Digest.String())
	img.Platform = platform.String()
	for i, l := range m.Layers {
		ld := digest.Digest(l.Digest.String())
		if err := ld.Validate(); err != nil {
			return Image{}, fmt.Errorf("manifest %s: layer %d: %w", img.Manifest, i, err)
		}
		if !supportedLayer(l.MediaType) {
			return Image{}, fmt.Errorf("manifest %s: layer %d (%s): unsupported media type %q", img.Manifest, i, ld, l.MediaType)
		}
		img.Layers = append(img.Layers, Layer{Digest: ld, Size: l.Size, MediaType: string(l.MediaType)})
	}
	return img, nil
}

func fetch(ctx context.Context, src blob.Source, d digest.Digest) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("manifest digest %q: %w", d, err)
	}
	b, err := src.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	defer b.Close()
	if b.Size() > maxManifestSize {
		return nil, fmt.Errorf("manifest %s: %d bytes, limit %d", d, b.Size(), maxManifestSize)
	}
	raw, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", d, err)
	}
	if got := d.Algorithm().FromBytes(raw); got != d {
		return nil, fmt.Errorf("manifest %s: content hashes to %s", d, got)
	}
	return raw, nil
}

// mediaTypeOf reads mediaType, which OCI allows to be absent; then the
// shape of the document decides.
func mediaTypeOf(raw []byte) (types.MediaType, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Layers        json.RawMessage `json:"layers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return "", fmt.Errorf("not JSON: %w", err)
	}
	if probe.SchemaVersion == 1 {
		return "", errors.New("schema 1 (Docker v2.1) manifests are not supported")
	}
	switch {
	case probe.MediaType != "":
		return types.MediaType(probe.MediaType), nil
	case probe.Manifests != nil:
		return types.OCIImageIndex, nil
	case probe.Layers != nil:
		return types.OCIManifestSchema1, nil
	}
	return "", errors.New("neither an image manifest nor an index")
}

func pick(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var seen []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		seen = append(seen, m.Platform.String())
		if m.Platform.OS == want.OS && m.Platform.Architecture == want.Architecture &&
			(want.Variant == "" || m.Platform.Variant == want.Variant) {
			return m, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w %s (has %s)", ErrNoPlatform, want.String(), strings.Join(seen, ", "))
}

func supportedLayer(mt types.MediaType) bool {
	switch mt {
	case types.OCILayer, types.OCIUncompressedLayer, types.OCILayerZStd,
		types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer,
		types.DockerLayer, types.DockerForeignLayer, types.DockerUncompressedLayer:
		return true
	}
	return false
}

// ParsePlatform parses "os/arch[/variant]".
func ParsePlatform(s string) (v1.Platform, error) {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}, fmt.Errorf("platform %q: %w", s, err)
	}
	if p.OS == "" || p.Architecture == "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want os/arch[/variant]", s)
	}
	return *p, nil
}
