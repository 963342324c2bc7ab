package blob_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/blob/blobtest"
	"github.com/explodefs/explodefs/explode/blob/distribution"
	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/index"
)

func layoutWith(t *testing.T, blobs ...[]byte) *ocilayout.Source {
	t.Helper()
	dir := t.TempDir()
	for _, b := range blobs {
		d := digest.FromBytes(b)
		p := filepath.Join(dir, "blobs", "sha256", d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ocilayout.New(dir)
}

// Blobs split between two sources read as if one source held them all.
func TestFirstOfConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T, blobs map[digest.Digest][]byte) blob.Source {
		var even, odd [][]byte
		i := 0
		for _, b := range blobs {
			if i%2 == 0 {
				even = append(even, b)
			} else {
				odd = append(odd, b)
			}
			i++
		}
		return blob.FirstOf(layoutWith(t, even...), layoutWith(t, odd...))
	})
}

func TestFirstOfPrefersEarlierSources(t *testing.T) {
	content := []byte("in both")
	d := digest.FromBytes(content)
	first, second := layoutWith(t, content), layoutWith(t, content)
	src := blob.FirstOf(first, second)
	b, err := src.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fromFirst, err := first.Open(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	defer fromFirst.Close()
	if got, want := blob.VersionOf(b), "0/"+blob.VersionOf(fromFirst); got != want {
		t.Errorf("version %q, want %q: the blob did not come from the first source", got, want)
	}
}

func TestFirstOfFailures(t *testing.T) {
	d := digest.FromString("nowhere")
	src := blob.FirstOf(layoutWith(t), layoutWith(t))
	_, err := src.Open(t.Context(), d)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing everywhere: %v, want fs.ErrNotExist", err)
	}

	// One source has something unreadable where the blob should be: that
	// is the failure to report, not "missing".
	root := t.TempDir()
	storage := distribution.New(root)
	p, _ := storage.Path(d)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = blob.FirstOf(layoutWith(t), storage).Open(t.Context(), d)
	if !errors.Is(err, blob.ErrNotRegular) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing in one, a FIFO in the other: %v, want blob.ErrNotRegular and not fs.ErrNotExist", err)
	}

	if _, err := blob.FirstOf().Open(t.Context(), d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no sources: %v, want fs.ErrNotExist", err)
	}
}

// The controller keys what it knows about a source by its name, so a
// combination must not share a name with another combination or a member.
func TestFirstOfString(t *testing.T) {
	a, b := distribution.New("/a"), distribution.New("/b")
	names := map[string]bool{}
	for _, s := range []blob.Source{a, b, blob.FirstOf(a, b), blob.FirstOf(b, a), blob.FirstOf(a)} {
		if names[s.String()] {
			t.Errorf("two sources are named %q", s)
		}
		names[s.String()] = true
	}
	if got, want := blob.FirstOf(a, b).String(), "first-of(file:///a, file:///b)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// sizedReader is a blob with a preferred read size.
type sizedReader struct{ blob.Blob }

func (sizedReader) ReadSize() int { return 12345 }

// fixedSource opens the same blob for every digest.
type fixedSource struct {
	name string
	b    blob.Blob
}

func (s fixedSource) Open(context.Context, digest.Digest) (blob.Blob, error) { return s.b, nil }
func (s fixedSource) String() string                                         { return s.name }

// A member's preferred read size passes through FirstOf, so the lazy
// reader still fetches a registry's blobs in big pieces.
func TestFirstOfPassesReadSize(t *testing.T) {
	src := blob.FirstOf(fixedSource{name: "sized", b: sizedReader{}})
	b, err := src.Open(context.Background(), digest.FromString("x"))
	if err != nil {
		t.Fatal(err)
	}
	if rs, ok := b.(index.ReadSizer); !ok || rs.ReadSize() != 12345 {
		t.Errorf("FirstOf's blob does not pass on the read size: %T", b)
	}
}
