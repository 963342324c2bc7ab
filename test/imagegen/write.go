package imagegen

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker image manifest v2 schema 2 media types; image-spec does not define
// them.
const (
	MediaTypeDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig    = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerTar  = "application/vnd.docker.image.rootfs.diff.tar"
)

const (
	layoutVersionFileContent = `{"imageLayoutVersion":"1.0.0"}`
	indexFileName            = "index.json"
	blobSubdir               = "blobs/sha256"
	createdByDefault         = "imagegen"
	defaultPathEnv           = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// ErrTagNotFound is returned by RemoveTag when the layout has no such tag.
var ErrTagNotFound = errors.New("tag not found")

// WriteImage writes img into the OCI layout at layoutDir (created if
// missing) and points tag at it, replacing an existing entry for the same
// tag. It returns the digest the tag now names: the manifest's, or the image
// index's for multi-platform images.
//
// Blobs are written before index.json, and index.json is replaced
// atomically, so a watcher never sees a tag whose blobs are missing.
// Concurrent writers to one layout are not supported.
func WriteImage(layoutDir, tag string, img Image) (digest.Digest, error) {
	if len(img.Manifests) == 0 {
		return "", fmt.Errorf("write image %s:%s: image has no manifests", layoutDir, tag)
	}
	if err := initLayout(layoutDir); err != nil {
		return "", err
	}
	descs := make([]ispec.Descriptor, len(img.Manifests))
	for i, m := range img.Manifests {
		desc, err := writeManifest(layoutDir, m)
		if err != nil {
			return "", fmt.Errorf("write image %s:%s manifest %d: %w", layoutDir, tag, i, err)
		}
		descs[i] = desc
	}
	top := descs[0]
	if len(descs) > 1 || img.AsIndex {
		index := ispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ispec.MediaTypeImageIndex,
			Manifests: descs,
		}
		var err error
		if top, err = writeJSONBlob(layoutDir, ispec.MediaTypeImageIndex, index); err != nil {
			return "", fmt.Errorf("write image %s:%s index: %w", layoutDir, tag, err)
		}
	}
	top.Platform = nil // the tag entry names the whole image, not one platform
	top.Annotations = map[string]string{ispec.AnnotationRefName: tag}
	err := editIndex(layoutDir, func(manifests []ispec.Descriptor) ([]ispec.Descriptor, error) {
		return append(withoutTag(manifests, tag), top), nil
	})
	if err != nil {
		return "", fmt.Errorf("write image %s:%s: %w", layoutDir, tag, err)
	}
	return top.Digest, nil
}

// RemoveTag deletes tag from the layout's index.json. Blobs stay; the tests
// only need the tag to disappear, not garbage collection.
func RemoveTag(layoutDir, tag string) error {
	err := editIndex(layoutDir, func(manifests []ispec.Descriptor) ([]ispec.Descriptor, error) {
		kept := withoutTag(manifests, tag)
		if len(kept) == len(manifests) {
			return nil, fmt.Errorf("tag %q in %s: %w", tag, layoutDir, ErrTagNotFound)
		}
		return kept, nil
	})
	if err != nil {
		return fmt.Errorf("remove tag: %w", err)
	}
	return nil
}

func withoutTag(manifests []ispec.Descriptor, tag string) []ispec.Descriptor {
	return slices.DeleteFunc(slices.Clone(manifests), func(d ispec.Descriptor) bool {
		return d.Annotations[ispec.AnnotationRefName] == tag
	})
}

func initLayout(layoutDir string) error {
	if err := os.MkdirAll(filepath.Join(layoutDir, blobSubdir), 0o755); err != nil {
		return fmt.Errorf("create layout %s: %w", layoutDir, err)
	}
	layoutFile := filepath.Join(layoutDir, ispec.ImageLayoutFile)
	if _, err := os.Stat(layoutFile); err == nil {
		return nil
	}
	if err := writeFileAtomically(layoutFile, []byte(layoutVersionFileContent)); err != nil {
		return fmt.Errorf("create layout %s: %w", layoutDir, err)
	}
	return nil
}

// writeManifest writes the layers (in parallel, one per core: compression
// dominates generation time), then the config and the manifest.
func writeManifest(layoutDir string, m Manifest) (ispec.Descriptor, error) {
	layers := make([]writtenLayer, len(m.Layers))
	errs := make([]error, len(m.Layers))
	slots := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, l := range m.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots <- struct{}{}
			defer func() { <-slots }()
			layers[i], errs[i] = writeLayer(filepath.Join(layoutDir, blobSubdir), l)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("layer %d: %w", i, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return ispec.Descriptor{}, err
	}

	platform := m.Platform
	if platform == (Platform{}) {
		platform = LinuxAMD64()
	}
	configMediaType, manifestMediaType := ispec.MediaTypeImageConfig, ispec.MediaTypeImageManifest
	if m.Format == FormatDocker {
		configMediaType, manifestMediaType = MediaTypeDockerConfig, MediaTypeDockerManifest
	}
	configDesc, err := writeJSONBlob(layoutDir, configMediaType, imageConfig(m, platform, layers))
	if err != nil {
		return ispec.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	manifest := ispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: manifestMediaType,
		Config:    configDesc,
	}
	for i, l := range layers {
		mediaType, err := layerMediaType(m.Format, m.Layers[i].Compression)
		if err != nil {
			return ispec.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		manifest.Layers = append(manifest.Layers, ispec.Descriptor{MediaType: mediaType, Digest: l.digest, Size: l.size})
	}
	desc, err := writeJSONBlob(layoutDir, manifestMediaType, manifest)
	if err != nil {
		return ispec.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	desc.Platform = &ispec.Platform{OS: platform.OS, Architecture: platform.Architecture, Variant: platform.Variant}
	return desc, nil
}

func imageConfig(m Manifest, platform Platform, layers []writtenLayer) ispec.Image {
	created := BaseTime().Truncate(time.Second)
	config := ispec.Image{
		Created:  &created,
		Platform: ispec.Platform{OS: platform.OS, Architecture: platform.Architecture, Variant: platform.Variant},
		Config:   ispec.ImageConfig{Env: []string{defaultPathEnv}, Cmd: []string{"/bin/sh"}, WorkingDir: "/"},
		RootFS:   ispec.RootFS{Type: "layers"},
	}
	for i, l := range layers {
		config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, l.diffID)
		createdBy := m.Layers[i].CreatedBy
		if createdBy == "" {
			createdBy = createdByDefault
		}
		config.History = append(config.History, ispec.History{Created: &created, CreatedBy: createdBy})
	}
	return config
}

func layerMediaType(format ManifestFormat, c Compression) (string, error) {
	switch {
	case format == FormatOCI && (c == Gzip || c == GzipMultiMember):
		return ispec.MediaTypeImageLayerGzip, nil
	case format == FormatOCI && c == Uncompressed:
		return ispec.MediaTypeImageLayer, nil
	case format == FormatOCI && c == Zstd:
		return ispec.MediaTypeImageLayerZstd, nil
	case format == FormatDocker && (c == Gzip || c == GzipMultiMember):
		return MediaTypeDockerLayerGzip, nil
	case format == FormatDocker && c == Uncompressed:
		return MediaTypeDockerLayerTar, nil
	}
	return "", fmt.Errorf("no media type for %v layers in manifest format %d", c, format)
}

func writeJSONBlob(layoutDir, mediaType string, v any) (ispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ispec.Descriptor{}, fmt.Errorf("encode %s: %w", mediaType, err)
	}
	d := digest.FromBytes(data)
	path := filepath.Join(layoutDir, blobSubdir, d.Encoded())
	if err := writeFileAtomically(path, data); err != nil {
		return ispec.Descriptor{}, fmt.Errorf("store %s: %w", mediaType, err)
	}
	return ispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

// editIndex rewrites index.json with edit applied to its manifest list.
func editIndex(layoutDir string, edit func([]ispec.Descriptor) ([]ispec.Descriptor, error)) error {
	path := filepath.Join(layoutDir, indexFileName)
	index := ispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageIndex}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &index); err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read index: %w", err)
	}
	if index.Manifests, err = edit(index.Manifests); err != nil {
		return err
	}
	if index.Manifests == nil {
		index.Manifests = []ispec.Descriptor{} // the spec requires the key
	}
	if data, err = json.MarshalIndent(index, "", "  "); err != nil {
		return fmt.Errorf("encode index: %w", err)
	}
	if err := writeFileAtomically(path, data); err != nil {
		return fmt.Errorf("replace index: %w", err)
	}
	return nil
}

// writeFileAtomically writes data to a temporary file beside path and
// renames it into place, so readers see either the old or the new file.
func writeFileAtomically(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("create temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return nil
}
