package manifest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/explode/manifest"
	"github.com/explodefs/explodefs/test/imagegen"
)

func oneLayer(name string) imagegen.Layer {
	return imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.File(name, 0o644, imagegen.String(name)))}
}

func TestResolveFormats(t *testing.T) {
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	img := imagegen.SingleImage(oneLayer("a"), oneLayer("b"))
	for name, tc := range map[string]struct {
		img       imagegen.Image
		mediaType string
		layerType string
	}{
		"oci":    {img, "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"},
		"docker": {img.WithFormat(imagegen.FormatDocker), imagegen.MediaTypeDockerManifest, imagegen.MediaTypeDockerLayerGzip},
	} {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "layout")
			d, err := imagegen.WriteImage(dir, "latest", tc.img)
			if err != nil {
				t.Fatal(err)
			}
			got, err := manifest.Resolve(context.Background(), ocilayout.New(dir), d, amd64)
			if err != nil {
				t.Fatal(err)
			}
			if got.MediaType != tc.mediaType || len(got.Layers) != 2 || got.Layers[0].MediaType != tc.layerType || got.Manifest != d {
				t.Errorf("resolved %+v", got)
			}
		})
	}
}

func TestResolvePicksPlatform(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	d, err := imagegen.WriteImage(dir, "multi", imagegen.MultiPlatformImage(1))
	if err != nil {
		t.Fatal(err)
	}
	src := ocilayout.New(dir)
	amd, err := manifest.Resolve(context.Background(), src, d, v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	arm, err := manifest.Resolve(context.Background(), src, d, v1.Platform{OS: "linux", Architecture: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if amd.Digest != d || amd.Manifest == d || amd.Manifest == arm.Manifest {
		t.Errorf("amd64 manifest %s, arm64 %s, index %s: want two distinct children", amd.Manifest, arm.Manifest, d)
	}
	_, err = manifest.Resolve(context.Background(), src, d, v1.Platform{OS: "linux", Architecture: "s390x"})
	if !errors.Is(err, manifest.ErrNoPlatform) || !strings.Contains(err.Error(), "linux/amd64") {
		t.Errorf("missing platform: %v; want ErrNoPlatform listing what exists", err)
	}
}

func TestResolveRefusesTamperedManifest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	d, err := imagegen.WriteImage(dir, "latest", imagegen.SingleImage(oneLayer("a")))
	if err != nil {
		t.Fatal(err)
	}
	src := ocilayout.New(dir)
	p, _ := src.Path(d)
	if err := os.WriteFile(p, []byte(`{"schemaVersion":2,"layers":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Resolve(context.Background(), src, d, v1.Platform{OS: "linux", Architecture: "amd64"}); err == nil || !strings.Contains(err.Error(), "hashes to") {
		t.Errorf("tampered manifest: %v", err)
	}
}
