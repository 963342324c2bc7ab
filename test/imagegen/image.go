package imagegen

import (
	"fmt"
	"iter"
	"slices"
)

// Compression selects how a layer's tar stream is stored as a blob.
type Compression int

const (
	// Gzip is one gzip member over the whole tar, the common case.
	Gzip Compression = iota
	// GzipMultiMember compresses consecutive chunks of the tar as separate
	// gzip members and concatenates them, as parallel compressors (pigz,
	// pgzip) do; a reader that stops after the first member loses data.
	GzipMultiMember
	// Uncompressed stores the tar itself.
	Uncompressed
	// Zstd is one zstd frame over the whole tar.
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case GzipMultiMember:
		return "multigzip"
	case Uncompressed:
		return "tar"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// Damage deliberately corrupts a layer blob after it has been written, for
// the bad-input images.
type Damage int

const (
	// Intact leaves the blob as written.
	Intact Damage = iota
	// TruncateBlob cuts the compressed blob in half and records the digest
	// and size of the cut bytes, so digest verification passes and the
	// failure can only come from decompression or tar parsing.
	TruncateBlob
	// MismatchDigest changes one blob byte after the digest was taken, so
	// the file named by the digest does not hash to it. For gzip layers the
	// changed byte is in the member header's MTIME field, which no CRC
	// covers: the blob still decompresses to the right tar and only digest
	// verification can notice. For other compressions the last byte flips.
	MismatchDigest
)

// Layer is one layer of an image. Exactly one of Entries and RawTar is set.
type Layer struct {
	Compression Compression
	// Entries yields the tar entries in archive order. It may be called more
	// than once (for example when the same Image is written twice) and must
	// yield the same entries each time.
	Entries iter.Seq[Entry]
	// RawTar is used verbatim as the uncompressed layer, for archives that
	// archive/tar refuses to produce (such as a truncated entry).
	RawTar []byte
	Damage Damage
	// CreatedBy is recorded in the config history so a human reading the
	// layout can tell the layers apart.
	CreatedBy string
}

// ManifestFormat selects the manifest and media-type family.
type ManifestFormat int

const (
	// FormatOCI writes an OCI image manifest with OCI media types.
	FormatOCI ManifestFormat = iota
	// FormatDocker writes a Docker image manifest v2 schema 2 with Docker
	// media types, as `docker save`-era registries hand out.
	FormatDocker
)

// Platform names the os/architecture an image manifest is for.
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// LinuxAMD64 is the platform used when a Manifest does not name one.
func LinuxAMD64() Platform { return Platform{OS: "linux", Architecture: "amd64"} }

// LinuxARM64 is the second platform of multi-platform images.
func LinuxARM64() Platform { return Platform{OS: "linux", Architecture: "arm64", Variant: "v8"} }

// Manifest is one image for one platform.
type Manifest struct {
	Format   ManifestFormat
	Platform Platform // zero value means LinuxAMD64
	Layers   []Layer
}

// Image is what a tag points to. With one manifest and AsIndex false the
// tag names the manifest directly; otherwise the tag names an OCI image
// index that lists each manifest with its platform.
type Image struct {
	Manifests []Manifest
	AsIndex   bool
}

// SingleImage is an OCI image for linux/amd64 made of the given layers.
func SingleImage(layers ...Layer) Image {
	return Image{Manifests: []Manifest{{Layers: layers}}}
}

// Entries turns a fixed list into a layer's entry sequence.
func Entries(entries ...Entry) iter.Seq[Entry] { return slices.Values(entries) }

// WithCompression returns a copy of img whose layers all use c; the entry
// sequences are shared, which is safe because they are only read.
func (img Image) WithCompression(c Compression) Image {
	return img.mapLayers(func(l Layer) Layer { l.Compression = c; return l })
}

// WithFormat returns a copy of img whose manifests all use format.
func (img Image) WithFormat(format ManifestFormat) Image {
	out := img.mapLayers(func(l Layer) Layer { return l })
	for i := range out.Manifests {
		out.Manifests[i].Format = format
	}
	return out
}

func (img Image) mapLayers(f func(Layer) Layer) Image {
	out := Image{AsIndex: img.AsIndex, Manifests: make([]Manifest, len(img.Manifests))}
	for i, m := range img.Manifests {
		m.Layers = slices.Clone(m.Layers)
		for j := range m.Layers {
			m.Layers[j] = f(m.Layers[j])
		}
		out.Manifests[i] = m
	}
	return out
}
