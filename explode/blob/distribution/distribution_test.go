package distribution_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/distribution"
)

// writeBlob puts b where docker/distribution's filesystem driver does,
// written by hand so that the test does not take the layout from the code
// under test.
func writeBlob(t *testing.T, root string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	hex := d.Encoded()
	p := filepath.Join(root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		root := t.TempDir()
		for _, b := range blobs {
			writeBlob(t, root, b)
		}
		src, err := distribution.FromURL("file://" + root)
		if err != nil {
			t.Fatal(err)
		}
		return src
	})
}

func TestFromURL(t *testing.T) {
	for raw, want := range map[string]string{
		"file:///registry":           "file:///registry",
		"file:///var/lib/registry/":  "file:///var/lib/registry",
		"file://localhost/registry":  "file:///registry",
		"file:///registry/../srv/r2": "file:///srv/r2",
	} {
		src, err := distribution.FromURL(raw)
		if err != nil {
			t.Errorf("FromURL(%q): %v", raw, err)
			continue
		}
		if src.String() != want {
			t.Errorf("FromURL(%q).String() = %q, want %q", raw, src.String(), want)
		}
	}
	for _, raw := range []string{
		"https://registry:5000", "file://otherhost/registry", "file:registry",
		"file://", "/registry", "file:///registry?x=1", "file:///registry#frag",
	} {
		if src, err := distribution.FromURL(raw); err == nil {
			t.Errorf("FromURL(%q) = %s, want an error", raw, src)
		}
	}
}

// The path is the one distribution writes, and a manifest blob is found
// the same way as a layer.
func TestPath(t *testing.T) {
	src := distribution.New("/registry")
	d := digest.FromString("manifest")
	p, err := src.Path(d)
	if err != nil {
		t.Fatal(err)
	}
	want := "/registry/docker/registry/v2/blobs/sha256/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data"
	if p != want {
		t.Errorf("Path = %s, want %s", p, want)
	}
}

// A FIFO where a blob should be is refused at once instead of blocking the
// worker that opens it, and a directory is refused too.
func TestNotRegular(t *testing.T) {
	root := t.TempDir()
	fifo := digest.FromString("fifo")
	dir := digest.FromString("dir")
	for _, d := range []digest.Digest{fifo, dir} {
		p, _ := distribution.New(root).Path(d)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if d == dir {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := distribution.New(root).Open(t.Context(), d)
		if err == nil {
			b.Close()
			t.Fatalf("Open(%s) succeeded", d)
		}
		if !errors.Is(err, blob.ErrNotRegular) {
			t.Errorf("Open(%s): %v, want blob.ErrNotRegular", d, err)
		}
	}
}

// A blob rewritten in place gets a new version, so that the controller
// reads a repaired copy again; an unchanged one keeps its version.
func TestVersionChangesWithTheFile(t *testing.T) {
	root := t.TempDir()
	d := writeBlob(t, root, []byte("first copy"))
	src := distribution.New(root)
	version := func() string {
		b, err := src.Open(t.Context(), d)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		return blob.VersionOf(b)
	}
	v1 := version()
	if v1 == "" || version() != v1 {
		t.Fatalf("version %q is empty or unstable", v1)
	}
	p, _ := src.Path(d)
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte("second copy!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if v2 := version(); v2 == v1 {
		t.Errorf("version %q did not change after the blob was replaced", v2)
	}
}

// Errors name the blob and the storage, so a status line says where to look.
func TestErrorsNameTheBlobAndStorage(t *testing.T) {
	root := t.TempDir()
	d := digest.FromString("absent")
	_, err := distribution.New(root).Open(t.Context(), d)
	if err == nil || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), root) {
		t.Errorf("Open(missing) = %v, want it to name %s and %s", err, d, root)
	}
}
