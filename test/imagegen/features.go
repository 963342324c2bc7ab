package imagegen

import (
	"fmt"
	"time"
)

// DefaultBigFileSize is the size of the feature image's big file: large
// enough that lazy, ranged reads matter. Unit tests pass a smaller one.
const DefaultBigFileSize = 100 << 20

// FeatureOptions parameterises FeatureImage.
type FeatureOptions struct {
	Seed        uint64
	BigFileSize int64 // 0 means DefaultBigFileSize
}

func (o FeatureOptions) bigFileSize() int64 {
	if o.BigFileSize == 0 {
		return DefaultBigFileSize
	}
	return o.BigFileSize
}

// FeatureFacts names the paths of the feature image that tests check
// directly. All paths are relative to the image root, without "./".
type FeatureFacts struct {
	WhitedOutFile   string    // deleted by a whiteout in the top layer
	WhitedOutDir    string    // deleted with its contents by a whiteout
	OpaqueDir       string    // made opaque by the middle layer
	OpaqueHidden    []string  // lower-layer entries the opaque marker hides
	OpaqueVisible   []string  // entries added beside the marker; must exist
	SetuidFile      string    // mode 04755
	CharDevice      string    // 1:3
	BlockDevice     string    // 8:0
	CapabilityFile  string    // security.capability = NetBindServiceCapability
	HardLinkGroup   []string  // names of one inode in the final tree
	DuplicateFile   string    // written twice in one layer
	DuplicateWinner string    // content of the later (winning) entry
	BigFile         string    // FeatureOptions.BigFileSize bytes
	ImplicitDirs    []string  // created only as parents; their metadata is up to the implementation
	LayerMtimeBase  time.Time // mtimes of layer i start at LayerMtimeBase + i days
}

// Features describes the feature image.
func Features() FeatureFacts {
	return FeatureFacts{
		WhitedOutFile:   "wh/remove-me.txt",
		WhitedOutDir:    "wh/gone-dir",
		OpaqueDir:       "opaque",
		OpaqueHidden:    []string{"opaque/old1", "opaque/oldsub/x"},
		OpaqueVisible:   []string{"opaque/new1", "opaque/newsub/y"},
		SetuidFile:      "bin/setuid-tool",
		CharDevice:      "dev/null",
		BlockDevice:     "dev/sda",
		CapabilityFile:  "xattrs/ping",
		HardLinkGroup:   []string{"hardlinks/original", "hardlinks/second", "hardlinks/upper-link"},
		DuplicateFile:   "dup/file",
		DuplicateWinner: "second version, wins\n",
		BigFile:         "big/big-file",
		ImplicitDirs:    []string{"implicit", "implicit/a", "implicit/a/b", "implicit/a/b/c", "implicit/x", "implicit/x/y"},
		LayerMtimeBase:  BaseTime(),
	}
}

// FeatureImage is a three-layer gzip image exercising every tar feature and
// overlay rule explodefs must get right; see featurelayers.go for the list.
func FeatureImage(opts FeatureOptions) Image {
	layers := [][]Entry{baseLayer(opts), dotSlashLayer(opts), upperLayer(opts)}
	names := []string{"base: every entry type", "./-prefixed: opaque dirs, type changes, big file", "upper: whiteouts, links"}
	img := Image{Manifests: []Manifest{{}}}
	for i, entries := range layers {
		base := Features().LayerMtimeBase.Add(time.Duration(i) * 24 * time.Hour)
		img.Manifests[0].Layers = append(img.Manifests[0].Layers, Layer{
			Compression: Gzip,
			Entries:     Entries(withDistinctMtimes(entries, base)...),
			CreatedBy:   names[i],
		})
	}
	return img
}

// Variant is one encoding of an image, written as its own stream.
type Variant struct {
	Name  string // stream name, e.g. "features-gzip"
	Image Image
}

// FeatureVariants is the feature image in every layer compression and as a
// Docker manifest; all of them must produce identical trees.
func FeatureVariants(opts FeatureOptions) []Variant {
	img := FeatureImage(opts)
	var variants []Variant
	for _, c := range []Compression{Gzip, GzipMultiMember, Uncompressed, Zstd} {
		variants = append(variants, Variant{Name: "features-" + c.String(), Image: img.WithCompression(c)})
	}
	return append(variants, Variant{Name: "features-docker", Image: img.WithFormat(FormatDocker)})
}

// MultiPlatformImage is an image index with linux/amd64 and linux/arm64
// manifests whose trees differ: etc/arch names the platform, and each has a
// file only it contains. Serving it must pick the host's platform.
func MultiPlatformImage(seed uint64) Image {
	img := Image{}
	for i, platform := range []Platform{LinuxAMD64(), LinuxARM64()} {
		arch := platform.Architecture
		layer := Layer{Compression: Gzip, CreatedBy: "platform " + arch, Entries: Entries(
			Dir("etc", 0o755),
			File("etc/arch", 0o644, String(arch+"\n")),
			Dir("usr/bin", 0o755),
			File(fmt.Sprintf("usr/bin/only-on-%s", arch), 0o755, Binary(seed+uint64(i), 20000, 50)),
		)}
		img.Manifests = append(img.Manifests, Manifest{
			Platform: platform,
			Layers:   []Layer{demoLayer(seed), layer},
		})
	}
	return img
}
