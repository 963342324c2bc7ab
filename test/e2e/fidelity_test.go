package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/treecmp"
	"github.com/explodefs/explodefs/test/umoci"
)

// requireGNUTar fails in CI, and skips elsewhere, without GNU tar, the
// only writer of every sparse format.
func requireGNUTar(t *testing.T) {
	t.Helper()
	out, err := exec.Command("tar", "--version").Output()
	if err == nil && bytes.Contains(out, []byte("GNU tar")) {
		return
	}
	msg := "the fidelity test needs GNU tar (apt-get install tar)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// fidelityEnv is a daemon serving sparse files in every format, empty
// xattr values and ".wh." directories, beside images refused for their
// xattrs.
type fidelityEnv struct {
	dir, src, mnt string
	d             *daemon
	// sparseTars are the raw tars of the sparse layers, by format.
	sparseTars map[imagegen.SparseFormat][]byte
	bad        []imagegen.BadImage
}

func (e *fidelityEnv) tag(stream string) string { return filepath.Join(e.mnt, "fid", stream, "latest") }

func TestFidelity(t *testing.T) {
	requireHost(t)
	requireGNUTar(t)
	dir := t.TempDir()
	e := &fidelityEnv{dir: dir, src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"), sparseTars: map[imagegen.SparseFormat][]byte{}}
	bin := buildDaemon(t, dir)

	// umoci reads PAX sparse files with archive/tar but refuses GNU 'S'
	// entries, so the old GNU format gets an image of its own, whose
	// reference is umoci's extraction of the same files written as PAX 1.0.
	pax, err := imagegen.SparseLayers(dir, imagegen.SparsePAX00, imagegen.SparsePAX01, imagegen.SparsePAX10)
	if err != nil {
		t.Fatal(err)
	}
	gnu, err := imagegen.SparseLayers(dir, imagegen.SparseOldGNU)
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range []imagegen.SparseFormat{imagegen.SparsePAX00, imagegen.SparsePAX01, imagegen.SparsePAX10} {
		e.sparseTars[f] = pax[i].RawTar
	}
	e.sparseTars[imagegen.SparseOldGNU] = gnu[0].RawTar
	gnuAsPAX, err := imagegen.GNUTarSparse(dir, imagegen.SparsePAX10, imagegen.SparseSamples(string(imagegen.SparseOldGNU)))
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(e.src, "fid", "sparse-xattrs"), imagegen.SingleImage(append(pax, imagegen.EmptyXattrLayer())...))
	write(t, filepath.Join(e.src, "fid", "sparse-gnu"), imagegen.SingleImage(gnu...))
	write(t, filepath.Join(dir, "ref", "sparse-gnu-as-pax"), imagegen.SingleImage(imagegen.Layer{Compression: imagegen.Gzip, RawTar: gnuAsPAX}))
	write(t, filepath.Join(e.src, "fid", "whiteout-dirs"), imagegen.WhiteoutDirsImage())
	refs := []string{"fid/sparse-xattrs:latest", "fid/sparse-gnu:latest", "fid/whiteout-dirs:latest"}
	e.bad = imagegen.BadXattrImages()
	for _, b := range e.bad {
		write(t, filepath.Join(e.src, "fid", b.Name), b.Image)
		refs = append(refs, "fid/"+b.Name+":latest")
	}

	e.d = newDaemon(t, bin, e.src, e.mnt, filepath.Join(dir, "state"))
	e.d.start()
	e.d.settle(refs, 5*time.Minute)

	t.Run("SparseAndEmptyXattrsMatchUmoci", e.testSparseAndEmptyXattrs)
	t.Run("SparseFilesReadAsArchiveTar", e.testSparseReadAsArchiveTar)
	t.Run("OldGNUSparseMatchesUmociOfPAX", e.testOldGNUSparse)
	t.Run("WhiteoutDirectoriesNeverShow", e.testWhiteoutDirs)
	t.Run("BadXattrsRefused", e.testBadXattrs)
}

func (e *fidelityEnv) requireReady(t *testing.T, stream string) {
	t.Helper()
	img, _ := e.d.image("fid/" + stream + ":latest")
	if img.State != status.Ready {
		t.Fatalf("image %s: %s: %s", img.Digest, img.State, img.Reason)
	}
}

// The PAX sparse files and the xattrs match umoci's extraction; the one
// difference allowed is an xattr whose value is empty, which umoci drops,
// and the strict comparison shows that it is the only one.
func (e *fidelityEnv) testSparseAndEmptyXattrs(t *testing.T) {
	e.requireReady(t, "sparse-xattrs")
	rootfs, err := umoci.Unpack(context.Background(), filepath.Join(e.src, "fid", "sparse-xattrs"), "latest", filepath.Join(e.dir, "umoci-sparse"))
	if err != nil {
		t.Fatal(err)
	}
	opts := treecmp.Options{LooseMetadata: []string{"."}}
	strict, err := treecmp.Compare(rootfs, e.tag("sparse-xattrs")+"/", opts)
	if err != nil {
		t.Fatal(err)
	}
	var empties []string
	for _, d := range strict {
		if d.Kind != treecmp.Xattr || !strings.HasSuffix(d.Want, " absent") || !strings.HasSuffix(d.Got, `=""`) {
			t.Errorf("difference other than an empty xattr value: %s", d)
			continue
		}
		empties = append(empties, d.Path+" "+d.Got)
	}
	if want := `xattrs/dir-with-empty trusted.empty=""|xattrs/empty-value user.empty=""`; strings.Join(empties, "|") != want {
		t.Errorf("empty xattr differences %q, want %q", empties, want)
	}
	opts.AllowDroppedEmptyXattrs = true
	diffs, err := treecmp.Compare(rootfs, e.tag("sparse-xattrs")+"/", opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("%d differences from umoci unpack:\n%s", len(diffs), treecmp.Report(diffs, 40))
	}

	// listxattr works with a buffer, whatever the list holds, and an
	// empty value reads as 0 bytes.
	buf := make([]byte, 256)
	for p, want := range map[string]string{"xattrs/none": "", "xattrs/empty-value": "user.empty\x00user.full\x00", "xattrs/dir-with-empty": "trusted.empty\x00"} {
		n, err := unix.Llistxattr(filepath.Join(e.tag("sparse-xattrs"), p), buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("listxattr %s = %q, %v; want %q", p, buf[:max(n, 0)], err, want)
		}
	}
	if n, err := unix.Lgetxattr(filepath.Join(e.tag("sparse-xattrs"), "xattrs/empty-value"), "user.empty", buf); err != nil || n != 0 {
		t.Errorf("getxattr user.empty = %d bytes, %v; want 0 bytes", n, err)
	}
}

// Every file of every sparse layer, the old GNU format included, reads
// through the mount exactly as archive/tar expands it.
func (e *fidelityEnv) testSparseReadAsArchiveTar(t *testing.T) {
	for format, raw := range e.sparseTars {
		stream := "sparse-xattrs"
		if format == imagegen.SparseOldGNU {
			stream = "sparse-gnu"
		}
		e.requireReady(t, stream)
		tr := tar.NewReader(bytes.NewReader(raw))
		files, holey := 0, 0
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeGNUSparse {
				continue
			}
			want, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(e.tag(stream), path.Clean(h.Name))
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s (%s): %d bytes, %v; archive/tar expands it to %d other bytes", h.Name, format, len(got), err, len(want))
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err == nil && st.Size != int64(len(want)) {
				t.Errorf("%s (%s): st_size %d, want %d", h.Name, format, st.Size, len(want))
			}
			files++
			if bytes.Count(want, []byte{0}) > len(want)/2 {
				holey++
			}
		}
		if files != len(imagegen.SparseSamples("")) || holey < 4 {
			t.Errorf("%s: %d files, %d mostly holes; the layer is not what SparseSamples describes", format, files, holey)
		}
	}
}

func (e *fidelityEnv) testOldGNUSparse(t *testing.T) {
	e.requireReady(t, "sparse-gnu")
	rootfs, err := umoci.Unpack(context.Background(), filepath.Join(e.dir, "ref", "sparse-gnu-as-pax"), "latest", filepath.Join(e.dir, "umoci-gnu"))
	if err != nil {
		t.Fatal(err)
	}
	diffs, err := treecmp.Compare(rootfs, e.tag("sparse-gnu")+"/", treecmp.Options{LooseMetadata: []string{"."}})
	if err != nil {
		t.Fatal(err)
	}
	if len(diffs) > 0 {
		t.Errorf("%d differences from umoci unpack of the same files as PAX:\n%s", len(diffs), treecmp.Report(diffs, 40))
	}
}

// No path component starting with ".wh." is visible; umoci does create
// such directories, and they are the only difference from it.
func (e *fidelityEnv) testWhiteoutDirs(t *testing.T) {
	e.requireReady(t, "whiteout-dirs")
	root := e.tag("whiteout-dirs") + "/"
	var seen []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), imagegen.WhiteoutPrefix) {
			t.Errorf("%s is visible", p)
		}
		if rel := strings.TrimPrefix(p, root); rel != "" {
			seen = append(seen, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "keep keep/file keep/new"; strings.Join(seen, " ") != want {
		t.Errorf("tree holds %q, want %q", seen, want)
	}
	rootfs, err := umoci.Unpack(context.Background(), filepath.Join(e.src, "fid", "whiteout-dirs"), "latest", filepath.Join(e.dir, "umoci-wh"))
	if err != nil {
		t.Fatal(err)
	}
	// umoci's extra directories change the link counts and mtimes of
	// their parents.
	diffs, err := treecmp.Compare(rootfs, root, treecmp.Options{LooseMetadata: []string{".", "keep"}, IgnoreDirNlink: true})
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, d := range diffs {
		if d.Kind != treecmp.Missing {
			t.Errorf("difference other than a .wh. directory umoci made: %s", d)
		}
		missing = append(missing, d.Path)
	}
	if want := ".wh.x keep/.wh..wh..opq keep/.wh.sub"; strings.Join(missing, " ") != want {
		t.Errorf("umoci has %q that the mount lacks, want %q", missing, want)
	}
}

// Images refused for their xattrs fail with a reason naming the layer and
// the entry, and show nothing, while the other images are served.
func (e *fidelityEnv) testBadXattrs(t *testing.T) {
	entries := map[string]string{"bad-xattr-nul-name": "bin/fake-cap", "bad-xattr-namespace": "odd", "bad-xattr-bomb": "bomb/f"}
	for _, b := range e.bad {
		t.Run(b.Name, func(t *testing.T) {
			img, ok := e.d.image("fid/" + b.Name + ":latest")
			if !ok {
				t.Fatal("no status for the image")
			}
			if img.State != status.Failed {
				t.Fatalf("state %s, want failed", img.State)
			}
			for _, w := range []string{b.Reason, entries[b.Name]} {
				if !strings.Contains(img.Reason, w) {
					t.Errorf("reason %q lacks %q", img.Reason, w)
				}
			}
			if !mentionsALayer(img) {
				t.Errorf("reason %q names no layer of %v", img.Reason, img.Layers)
			}
			if _, err := os.Lstat(e.tag(b.Name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed image's tag is visible: %v", err)
			}
		})
	}
	for _, stream := range []string{"sparse-xattrs", "sparse-gnu", "whiteout-dirs"} {
		if _, err := os.Stat(e.tag(stream)); err != nil {
			t.Errorf("%s is not served beside the refused images: %v", stream, err)
		}
	}
}
