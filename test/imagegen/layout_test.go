package imagegen

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readBlob reads a blob and checks it against its descriptor.
func readBlob(t *testing.T, layoutDir string, desc ispec.Descriptor) []byte {
	t.Helper()
	data, err := os.ReadFile(blobPath(layoutDir, desc.Digest))
	if err != nil {
		t.Fatalf("read blob %s: %v", desc.Digest, err)
	}
	if int64(len(data)) != desc.Size {
		t.Fatalf("blob %s is %d bytes, descriptor says %d", desc.Digest, len(data), desc.Size)
	}
	if got := digest.FromBytes(data); got != desc.Digest {
		t.Fatalf("blob %s hashes to %s", desc.Digest, got)
	}
	return data
}

func blobPath(layoutDir string, d digest.Digest) string {
	return filepath.Join(layoutDir, "blobs", d.Algorithm().String(), d.Encoded())
}

func readJSONBlob(t *testing.T, layoutDir string, desc ispec.Descriptor, v any) {
	t.Helper()
	if err := json.Unmarshal(readBlob(t, layoutDir, desc), v); err != nil {
		t.Fatalf("parse %s %s: %v", desc.MediaType, desc.Digest, err)
	}
}

// tagDescriptor finds tag in index.json, checking the layout's frame.
func tagDescriptor(t *testing.T, layoutDir, tag string) ispec.Descriptor {
	t.Helper()
	layout, err := os.ReadFile(filepath.Join(layoutDir, ispec.ImageLayoutFile))
	if err != nil || string(layout) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout = %q, %v", layout, err)
	}
	var index ispec.Index
	data, err := os.ReadFile(filepath.Join(layoutDir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatalf("parse index.json: %v", err)
	}
	if index.SchemaVersion != 2 {
		t.Fatalf("index.json schemaVersion %d", index.SchemaVersion)
	}
	var found []ispec.Descriptor
	for _, d := range index.Manifests {
		if d.Annotations[ispec.AnnotationRefName] == tag {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("tag %q appears %d times in index.json", tag, len(found))
	}
	return found[0]
}

// verifyImage walks tag down to every layer and checks digests, sizes and
// that each layer decompresses to a well-formed tar matching its diff_id.
// It returns the manifests it found.
func verifyImage(t *testing.T, layoutDir, tag string) []ispec.Manifest {
	t.Helper()
	top := tagDescriptor(t, layoutDir, tag)
	manifestDescs := []ispec.Descriptor{top}
	if top.MediaType == ispec.MediaTypeImageIndex {
		var index ispec.Index
		readJSONBlob(t, layoutDir, top, &index)
		manifestDescs = index.Manifests
		for _, d := range manifestDescs {
			if d.Platform == nil || d.Platform.OS == "" || d.Platform.Architecture == "" {
				t.Errorf("index entry %s has no platform", d.Digest)
			}
		}
	}
	var manifests []ispec.Manifest
	for _, md := range manifestDescs {
		var m ispec.Manifest
		readJSONBlob(t, layoutDir, md, &m)
		if m.SchemaVersion != 2 || m.MediaType != md.MediaType {
			t.Fatalf("manifest %s: schemaVersion %d mediaType %q (descriptor %q)", md.Digest, m.SchemaVersion, m.MediaType, md.MediaType)
		}
		var config ispec.Image
		readJSONBlob(t, layoutDir, m.Config, &config)
		if config.RootFS.Type != "layers" || len(config.RootFS.DiffIDs) != len(m.Layers) {
			t.Fatalf("config %s: rootfs %+v for %d layers", m.Config.Digest, config.RootFS, len(m.Layers))
		}
		for i, layer := range m.Layers {
			readBlob(t, layoutDir, layer)
			diffID, err := layerDiffID(blobPath(layoutDir, layer.Digest), layer.MediaType)
			if err != nil {
				t.Fatalf("layer %d (%s): %v", i, layer.Digest, err)
			}
			if diffID != config.RootFS.DiffIDs[i] {
				t.Errorf("layer %d: uncompressed tar hashes to %s, config diff_id %s", i, diffID, config.RootFS.DiffIDs[i])
			}
		}
		manifests = append(manifests, m)
	}
	return manifests
}

// layerDiffID decompresses a layer blob, parses it as tar to the end, and
// returns the sha256 of the tar stream.
func layerDiffID(path, mediaType string) (digest.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	tarStream, err := decompressor(bufio.NewReader(f), mediaType)
	if err != nil {
		return "", err
	}
	defer tarStream.Close()
	h := sha256.New()
	tr := tar.NewReader(io.TeeReader(tarStream, h))
	for {
		if _, err := tr.Next(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return "", fmt.Errorf("read tar: %w", err)
		}
	}
	// archive/tar stops at the first end-of-archive block; hash the rest.
	if _, err := io.Copy(h, tarStream); err != nil {
		return "", fmt.Errorf("read tar trailer: %w", err)
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

func decompressor(r io.Reader, mediaType string) (io.ReadCloser, error) {
	switch mediaType {
	case ispec.MediaTypeImageLayerGzip, MediaTypeDockerLayerGzip:
		return gzip.NewReader(r) // reads all members, as the spec requires
	case ispec.MediaTypeImageLayerZstd:
		z, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		return z.IOReadCloser(), nil
	case ispec.MediaTypeImageLayer, MediaTypeDockerLayerTar:
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("unexpected layer media type %q", mediaType)
}

// layerHeaders lists the tar headers of a verified layer.
func layerHeaders(t *testing.T, layoutDir string, layer ispec.Descriptor) []*tar.Header {
	t.Helper()
	f, err := os.Open(blobPath(layoutDir, layer.Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := decompressor(f, layer.MediaType)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var headers []*tar.Header
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers
		}
		if err != nil {
			t.Fatalf("layer %s: %v", layer.Digest, err)
		}
		headers = append(headers, hdr)
	}
}
