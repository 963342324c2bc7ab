package imagegen

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testFeatureOptions keep the big file small but larger than several
// gzip members.
func testFeatureOptions() FeatureOptions { return FeatureOptions{Seed: 7, BigFileSize: 2 << 20} }

func write(t *testing.T, layoutDir, tag string, img Image) digest.Digest {
	t.Helper()
	d, err := WriteImage(layoutDir, tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestFeatureVariantsAreValidLayouts(t *testing.T) {
	for _, v := range FeatureVariants(testFeatureOptions()) {
		t.Run(v.Name, func(t *testing.T) {
			dir := t.TempDir()
			d := write(t, dir, "latest", v.Image)
			manifests := verifyImage(t, dir, "latest")
			if tagDescriptor(t, dir, "latest").Digest != d {
				t.Errorf("WriteImage returned %s, index.json says otherwise", d)
			}
			if len(manifests) != 1 || len(manifests[0].Layers) != 3 {
				t.Fatalf("want one manifest of 3 layers, got %+v", manifests)
			}
		})
	}
}

func TestOtherImagesAreValidLayouts(t *testing.T) {
	images := map[string]Image{
		"demo":       DemoImage(),
		"multiarch":  MultiPlatformImage(1),
		"bench-tiny": BenchImage(BenchOptions{Seed: 1, Files: 200, LargeFileSizes: []int64{300 << 10}}).Image,
		"many":       ManyEntries(5000).Image,
		"deep":       DeepPath().Image,
		"escaping":   EscapingPaths().Image,
		"hardlinks":  BadHardlinks().Image,
	}
	for name, img := range images {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "latest", img)
			manifests := verifyImage(t, dir, "latest")
			if len(manifests) != len(img.Manifests) {
				t.Errorf("%d manifests written, %d described", len(manifests), len(img.Manifests))
			}
		})
	}
}

func TestMultiPlatformIndexNamesPlatforms(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "latest", MultiPlatformImage(1))
	top := tagDescriptor(t, dir, "latest")
	if top.MediaType != ispec.MediaTypeImageIndex {
		t.Fatalf("tag names a %s, want an image index", top.MediaType)
	}
	var index ispec.Index
	readJSONBlob(t, dir, top, &index)
	var archs []string
	for _, m := range index.Manifests {
		archs = append(archs, m.Platform.OS+"/"+m.Platform.Architecture)
	}
	if strings.Join(archs, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("platforms %v", archs)
	}
	if index.Manifests[0].Digest == index.Manifests[1].Digest {
		t.Error("both platforms have the same manifest")
	}
}

func TestSameSeedSameDigests(t *testing.T) {
	// Two independent descriptions, so shared state between them could not
	// hide nondeterminism.
	first, second := FeatureVariants(testFeatureOptions()), FeatureVariants(testFeatureOptions())
	for i := range first {
		a := write(t, t.TempDir(), "latest", first[i].Image)
		b := write(t, t.TempDir(), "latest", second[i].Image)
		if a != b {
			t.Errorf("%s: two writes gave %s and %s", first[i].Name, a, b)
		}
	}
	bench := func() Image {
		return BenchImage(BenchOptions{Seed: 3, Files: 300, LargeFileSizes: []int64{1 << 20}}).Image
	}
	if a, b := write(t, t.TempDir(), "x", bench()), write(t, t.TempDir(), "x", bench()); a != b {
		t.Errorf("bench: two writes gave %s and %s", a, b)
	}
	other := testFeatureOptions()
	other.Seed++
	if write(t, t.TempDir(), "x", FeatureImage(other)) == write(t, t.TempDir(), "x", FeatureImage(testFeatureOptions())) {
		t.Error("a different seed gave the same image")
	}
}

// countGzipMembers decompresses member by member.
func countGzipMembers(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	members := 0
	for {
		zr.Multistream(false)
		if _, err := io.Copy(io.Discard, zr); err != nil {
			t.Fatalf("member %d: %v", members, err)
		}
		members++
		if err := zr.Reset(r); errors.Is(err, io.EOF) {
			return members
		} else if err != nil {
			t.Fatalf("member %d header: %v", members, err)
		}
	}
}

func TestMultiMemberGzipHasSeveralMembers(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "latest", FeatureImage(testFeatureOptions()).WithCompression(GzipMultiMember))
	manifests := verifyImage(t, dir, "latest")
	for i, layer := range manifests[0].Layers {
		members := countGzipMembers(t, blobPath(dir, layer.Digest))
		if members < minMembers {
			t.Errorf("layer %d has %d gzip members, want at least %d", i, members, minMembers)
		}
		t.Logf("layer %d: %d members", i, members)
	}
	// The middle layer holds the 2 MiB big file, so it is split every
	// 256 KiB rather than in thirds.
	if members := countGzipMembers(t, blobPath(dir, manifests[0].Layers[1].Digest)); members < 8 {
		t.Errorf("big layer has %d members, want one per 256 KiB", members)
	}
	single := t.TempDir()
	write(t, single, "latest", FeatureImage(testFeatureOptions()))
	if members := countGzipMembers(t, blobPath(single, verifyImage(t, single, "latest")[0].Layers[1].Digest)); members != 1 {
		t.Errorf("plain gzip layer has %d members", members)
	}
}

func TestTagsAreReplacedAndRemoved(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a", DemoImage())
	write(t, dir, "b", MultiPlatformImage(1))
	replaced := write(t, dir, "a", FeatureImage(testFeatureOptions()))
	if got := tagDescriptor(t, dir, "a").Digest; got != replaced {
		t.Errorf("tag a names %s after replacement, want %s", got, replaced)
	}
	if err := RemoveTag(dir, "a"); err != nil {
		t.Fatal(err)
	}
	tagDescriptor(t, dir, "b")
	if err := RemoveTag(dir, "a"); !errors.Is(err, ErrTagNotFound) {
		t.Errorf("removing a missing tag: %v, want ErrTagNotFound", err)
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".*"))
	tmpBlobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", ".*"))
	if len(leftovers)+len(tmpBlobs) != 0 {
		t.Errorf("temporary files left behind: %v %v", leftovers, tmpBlobs)
	}
}

// TestFeatureLayersUseTheIntendedEncodings checks the raw tar, which an
// extraction cannot show: GNU and PAX long names, xattr records, "./"
// prefixes, duplicates and sub-second mtimes.
func TestFeatureLayersUseTheIntendedEncodings(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "latest", FeatureImage(testFeatureOptions()).WithCompression(Uncompressed))
	layers := verifyImage(t, dir, "latest")[0].Layers
	base := layerHeaders(t, dir, layers[0])
	seen := map[string]int{}
	var gnuLong, gnuLongLink, paxLong, capability, subSecond bool
	for _, h := range base {
		seen[h.Name]++
		gnuLong = gnuLong || (h.Format == tar.FormatGNU && len(h.Name) > 100)
		gnuLongLink = gnuLongLink || (h.Format == tar.FormatGNU && len(h.Linkname) > 100)
		paxLong = paxLong || (h.Format == tar.FormatPAX && len(h.Name) > 100)
		subSecond = subSecond || h.ModTime.Nanosecond() != 0
		if v, ok := h.PAXRecords["SCHILY.xattr.security.capability"]; ok {
			capability = bytes.Equal([]byte(v), NetBindServiceCapability())
		}
	}
	if !gnuLong || !gnuLongLink || !paxLong || !capability || !subSecond {
		t.Errorf("base layer: GNU long name %v, GNU long link %v, PAX long name %v, capability xattr %v, sub-second mtime %v",
			gnuLong, gnuLongLink, paxLong, capability, subSecond)
	}
	if seen[Features().DuplicateFile] != 2 {
		t.Errorf("%s appears %d times, want 2", Features().DuplicateFile, seen[Features().DuplicateFile])
	}
	for _, dir := range Features().ImplicitDirs {
		if seen[dir+"/"] != 0 {
			t.Errorf("implicit directory %s has an entry", dir)
		}
	}
	for _, h := range layerHeaders(t, dir, layers[1]) {
		if !strings.HasPrefix(h.Name, "./") {
			t.Errorf("middle layer entry %q lacks the ./ prefix", h.Name)
		}
	}
}

func TestDamagedBlobs(t *testing.T) {
	t.Run("truncated gzip", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "latest", TruncatedGzip().Image)
		m := tagDescriptor(t, dir, "latest")
		var manifest ispec.Manifest
		readJSONBlob(t, dir, m, &manifest)
		readBlob(t, dir, manifest.Layers[0]) // digest and size agree with the cut bytes
		if _, err := layerDiffID(blobPath(dir, manifest.Layers[0].Digest), manifest.Layers[0].MediaType); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("decompressing the truncated layer: %v, want unexpected EOF", err)
		}
	})
	t.Run("digest mismatch", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "latest", DigestMismatch().Image)
		var manifest ispec.Manifest
		readJSONBlob(t, dir, tagDescriptor(t, dir, "latest"), &manifest)
		var config ispec.Image
		readJSONBlob(t, dir, manifest.Config, &config)
		layer := manifest.Layers[0]
		data, err := os.ReadFile(blobPath(dir, layer.Digest))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(data)) != layer.Size || digest.FromBytes(data) == layer.Digest {
			t.Fatalf("blob: %d bytes (want %d), digest matches: %v", len(data), layer.Size, digest.FromBytes(data) == layer.Digest)
		}
		diffID, err := layerDiffID(blobPath(dir, layer.Digest), layer.MediaType)
		if err != nil || diffID != config.RootFS.DiffIDs[0] {
			t.Errorf("the altered blob should still decompress to the intended tar: %s, %v", diffID, err)
		}
	})
	t.Run("lying tar size", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "latest", LyingTarSize().Image)
		var manifest ispec.Manifest
		readJSONBlob(t, dir, tagDescriptor(t, dir, "latest"), &manifest)
		readBlob(t, dir, manifest.Layers[0])
		if _, err := layerDiffID(blobPath(dir, manifest.Layers[0].Digest), manifest.Layers[0].MediaType); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("reading the lying tar: %v, want unexpected EOF", err)
		}
	})
}

func TestBenchImageShape(t *testing.T) {
	// Describing the default bench image generates no content, so the
	// size promises can be checked cheaply.
	bench := BenchImage(BenchOptions{Seed: 1})
	if bench.Files < 8500 || bench.ContentBytes < 300_000_000 || len(bench.Image.Manifests[0].Layers) < 2 {
		t.Errorf("bench image: %d files, %d content bytes, %d layers", bench.Files, bench.ContentBytes, len(bench.Image.Manifests[0].Layers))
	}
	if bench.LargestFileSize < 20<<20 || bench.LargestFile == "" {
		t.Errorf("largest file %s is %d bytes", bench.LargestFile, bench.LargestFileSize)
	}
}

func TestGeneratedContentSizes(t *testing.T) {
	for _, c := range []Content{Text(1, 0), Text(1, 1), Text(1, 512), Text(2, 200_001), Binary(1, 0, 50), Binary(1, 4097, 50), Binary(3, 1<<20+3, 0), Binary(3, 70_000, 100)} {
		data, err := ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := ReadAll(c)
		if int64(len(data)) != c.Size() || !bytes.Equal(data, again) {
			t.Errorf("%T of %d bytes: got %d bytes, deterministic %v", c, c.Size(), len(data), bytes.Equal(data, again))
		}
	}
}
