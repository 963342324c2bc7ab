package imagegen

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ZstdWindowBomb returns a zstd layer blob whose one frame declares a
// window of the given size (a power of two from 1 KiB to 2 GiB) and whose
// tar holds one file of zeros bytes. Zeros compress to almost nothing, so
// the blob is tiny while a decoder that honours the window holds up to
// window bytes of history. The frame is otherwise ordinary: it is written
// by klauspost's encoder with an 8 MiB window, which only ever refers
// back 8 MiB, and then its window descriptor is raised; a decoder
// without a bound decodes it correctly. Its diffID is returned too.
func ZstdWindowBomb(window, zeros int64) (blob []byte, diffID digest.Digest, err error) {
	if window < 1<<10 || window > 1<<31 || window&(window-1) != 0 {
		return nil, "", fmt.Errorf("zstd window bomb: window %d is not a power of two from 1 KiB to 2 GiB", window)
	}
	var out bytes.Buffer
	zw, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(8<<20))
	if err != nil {
		return nil, "", fmt.Errorf("zstd window bomb: %w", err)
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: zeros, ModTime: BaseTime()}); err != nil {
		return nil, "", fmt.Errorf("zstd window bomb: %w", err)
	}
	chunk := make([]byte, 1<<20)
	for left := zeros; left > 0; left -= int64(len(chunk)) {
		if _, err := tw.Write(chunk[:min(left, int64(len(chunk)))]); err != nil {
			return nil, "", fmt.Errorf("zstd window bomb: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("zstd window bomb: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("zstd window bomb: %w", err)
	}
	blob = out.Bytes()
	// A streamed frame has no content size and is not single-segment, so
	// byte 5, after the magic and the frame header descriptor, is the
	// window descriptor: exponent<<3 | mantissa, window = 2^(10+exponent).
	const descriptorAt = 5
	if len(blob) <= descriptorAt || blob[4]&(1<<5|3<<6) != 0 {
		return nil, "", fmt.Errorf("zstd window bomb: the encoder wrote a frame header this generator does not know (descriptor %#x)", blob[4])
	}
	blob[descriptorAt] = byte(bits.TrailingZeros64(uint64(window))-10) << 3
	var h zstd.Header
	if err := h.Decode(blob); err != nil || h.WindowSize != uint64(window) {
		return nil, "", fmt.Errorf("zstd window bomb: patched header declares %d, want %d (%v)", h.WindowSize, window, err)
	}
	return blob, digest.NewDigest(digest.SHA256, diff), nil
}

// WriteZstdWindowBomb writes a one-layer image made of ZstdWindowBomb's
// blob into the OCI layout at layoutDir and points tag at it. It returns
// the manifest digest and the layer digest.
func WriteZstdWindowBomb(layoutDir, tag string, window, zeros int64) (manifest, layer digest.Digest, err error) {
	blob, diffID, err := ZstdWindowBomb(window, zeros)
	if err != nil {
		return "", "", err
	}
	if err := initLayout(layoutDir); err != nil {
		return "", "", err
	}
	written := writtenLayer{digest: digest.FromBytes(blob), size: int64(len(blob)), diffID: diffID}
	if err := os.WriteFile(filepath.Join(layoutDir, blobSubdir, written.digest.Encoded()), blob, 0o644); err != nil {
		return "", "", fmt.Errorf("write zstd window bomb: %w", err)
	}
	m := Manifest{Layers: []Layer{{Compression: Zstd, CreatedBy: "zstd window bomb"}}}
	configDesc, err := writeJSONBlob(layoutDir, ispec.MediaTypeImageConfig, imageConfig(m, LinuxAMD64(), []writtenLayer{written}))
	if err != nil {
		return "", "", fmt.Errorf("write zstd window bomb config: %w", err)
	}
	desc, err := writeJSONBlob(layoutDir, ispec.MediaTypeImageManifest, ispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayerZstd, Digest: written.digest, Size: written.size}},
	})
	if err != nil {
		return "", "", fmt.Errorf("write zstd window bomb manifest: %w", err)
	}
	desc.Annotations = map[string]string{ispec.AnnotationRefName: tag}
	err = editIndex(layoutDir, func(manifests []ispec.Descriptor) ([]ispec.Descriptor, error) {
		return append(withoutTag(manifests, tag), desc), nil
	})
	if err != nil {
		return "", "", fmt.Errorf("write zstd window bomb %s:%s: %w", layoutDir, tag, err)
	}
	return desc.Digest, written.digest, nil
}
