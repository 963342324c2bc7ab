// Package e2e runs the real explodefs binary with a real FUSE mount over
// generated OCI layouts, and checks the mounted trees against umoci's
// extraction of the same images.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
	"github.com/explodefs/explodefs/test/treecmp"
	"github.com/explodefs/explodefs/test/umoci"
)

type env struct {
	dir, src, mnt, state string
	d                    *daemon
	features             []imagegen.Variant
	bad                  []imagegen.BadImage
}

func (e *env) tagPath(ns, stream string) string { return filepath.Join(e.mnt, ns, stream, "latest") }

// TestEndToEnd shares one daemon and one set of generated images between
// its subtests, because generating and indexing them is the slow part.
func TestEndToEnd(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	// t.TempDir makes 0700 directories; non-root readers must reach the mount.
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{dir: dir, src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"), state: filepath.Join(dir, "state")}
	bin := buildDaemon(t, dir)

	e.features = imagegen.FeatureVariants(imagegen.FeatureOptions{})
	e.bad = imagegen.BadImages(0)
	var refs []string
	for _, v := range e.features {
		write(t, filepath.Join(e.src, "e2e", v.Name), v.Image)
		refs = append(refs, "e2e/"+v.Name+":latest")
	}
	write(t, filepath.Join(e.src, "e2e", "multi-platform"), imagegen.MultiPlatformImage(3))
	refs = append(refs, "e2e/multi-platform:latest")
	for _, b := range e.bad {
		write(t, filepath.Join(e.src, "bad", b.Name), b.Image)
		refs = append(refs, "bad/"+b.Name+":latest")
	}

	e.d = newDaemon(t, bin, e.src, e.mnt, e.state)
	e.d.start()
	e.d.settle(refs, 10*time.Minute)

	t.Run("FeaturesMatchUmoci", e.testFeaturesMatchUmoci)
	t.Run("MultiPlatform", e.testMultiPlatform)
	t.Run("BadInput", e.testBadInput)
	t.Run("ReadOnly", e.testReadOnly)
	t.Run("NonRootReader", e.testNonRootReader)
	t.Run("TagMove", e.testTagMove)
	t.Run("RestartAfterKill", e.testRestartAfterKill)
}

func write(t *testing.T, layout string, img imagegen.Image) {
	t.Helper()
	if _, err := imagegen.WriteImage(layout, "latest", img); err != nil {
		t.Fatalf("writing %s: %v", layout, err)
	}
}

// testFeaturesMatchUmoci compares every variant (gzip, multi-member gzip,
// tar, zstd, Docker manifest) with umoci's extraction of the gzip variant:
// the layers carry the same tar streams, so the trees must be identical.
func (e *env) testFeaturesMatchUmoci(t *testing.T) {
	rootfs, err := umoci.Unpack(context.Background(), filepath.Join(e.src, "e2e", "features-gzip"), "latest", filepath.Join(e.dir, "umoci-bundle"))
	if err != nil {
		t.Fatal(err)
	}
	facts := imagegen.Features()
	opts := treecmp.Options{LooseMetadata: append([]string{"."}, facts.ImplicitDirs...)}
	for _, v := range e.features {
		t.Run(v.Name, func(t *testing.T) {
			if img, _ := e.d.image("e2e/" + v.Name + ":latest"); img.State != status.Ready {
				t.Fatalf("image %s: %s: %s", img.Digest, img.State, img.Reason)
			}
			diffs, err := treecmp.Compare(rootfs, e.tagPath("e2e", v.Name)+"/", opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(diffs) > 0 {
				t.Errorf("%d differences from umoci unpack:\n%s", len(diffs), treecmp.Report(diffs, 40))
			}
		})
	}
	// The comparison is only as good as the features it met; check the
	// tree holds what the image was built to exercise.
	root := e.tagPath("e2e", "features-gzip")
	for _, p := range append([]string{facts.SetuidFile, facts.CharDevice, facts.CapabilityFile, facts.BigFile}, facts.OpaqueVisible...) {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("feature path %s: %v", p, err)
		}
	}
	for _, p := range append([]string{facts.WhitedOutFile, facts.WhitedOutDir}, facts.OpaqueHidden...) {
		if _, err := os.Lstat(filepath.Join(root, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("hidden path %s: %v, want it absent", p, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, facts.BigFile)); err != nil || fi.Size() != imagegen.DefaultBigFileSize {
		t.Errorf("big file: %v, %v", fi, err)
	}
}

func (e *env) testMultiPlatform(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(e.tagPath("e2e", "multi-platform"), "etc", "arch"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(raw)); got != runtime.GOARCH {
		t.Errorf("etc/arch = %q, want the host's %q", got, runtime.GOARCH)
	}
}

func (e *env) testBadInput(t *testing.T) {
	for _, b := range e.bad {
		t.Run(b.Name, func(t *testing.T) {
			img, ok := e.d.image("bad/" + b.Name + ":latest")
			if !ok {
				t.Fatal("no status for the image")
			}
			tag := e.tagPath("bad", b.Name)
			switch {
			case img.State == status.Failed && b.Outcome != imagegen.MustServe:
				if !strings.Contains(strings.ToLower(img.Reason), strings.ToLower(b.Reason)) {
					t.Errorf("reason %q lacks %q", img.Reason, b.Reason)
				}
				if !mentionsALayer(img) {
					t.Errorf("reason %q names no layer of %v", img.Reason, img.Layers)
				}
				if _, err := os.Lstat(tag); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("failed image's tag is visible: %v", err)
				}
			case img.State == status.Ready && b.Outcome != imagegen.MustRefuse:
				checkServed(t, b, tag)
			default:
				t.Errorf("state %s (%s), want outcome %v", img.State, img.Reason, b.Outcome)
			}
		})
	}
	for _, p := range []string{"/etc/evil", "/abs/path/file", "/b"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists on the host", p)
		}
	}
}

func mentionsALayer(img status.Image) bool {
	for _, l := range img.Layers {
		if strings.Contains(img.Reason, l.String()) {
			return true
		}
	}
	return false
}

// checkServed checks images that are served despite being extreme.
func checkServed(t *testing.T, b imagegen.BadImage, tag string) {
	switch b.Name {
	case "many-entries":
		files := 0
		err := filepath.WalkDir(tag+"/", func(_ string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				files++
			}
			return err
		})
		if err != nil || files != imagegen.DefaultManyEntries {
			t.Errorf("walked %d files (err %v), want %d", files, err, imagegen.DefaultManyEntries)
		}
	case "bad-deep-path":
		// The leaf's path is beyond PATH_MAX, so walk to it a component at a time.
		fd, err := unix.Open(tag+"/", unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range imagegen.DeepPathDepth {
			next, err := unix.Openat(fd, dirName(i), unix.O_PATH|unix.O_DIRECTORY, 0)
			unix.Close(fd)
			if err != nil {
				t.Fatalf("component %d: %v", i, err)
			}
			fd = next
		}
		leaf, err := unix.Openat(fd, "leaf.txt", unix.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(leaf), "leaf.txt")
		defer f.Close()
		if raw, _ := io.ReadAll(f); string(raw) != "at the bottom\n" {
			t.Errorf("leaf content %q", raw)
		}
	case "bad-escaping-paths":
		for _, p := range []string{"etc/evil", "link/passwd"} {
			if _, err := os.Lstat(filepath.Join(tag, p)); err == nil {
				t.Errorf("sanitized image shows %s", p)
			}
		}
	default:
		t.Errorf("served, but no check says what a served %s must look like", b.Name)
	}
}

func dirName(i int) string { return "d" + leftPad(i) }

func leftPad(i int) string {
	s := []byte("000")
	for j := 2; j >= 0 && i > 0; j-- {
		s[j] = byte('0' + i%10)
		i /= 10
	}
	return string(s)
}

func (e *env) testReadOnly(t *testing.T) {
	root := e.tagPath("e2e", "features-gzip")
	attempts := map[string]error{
		"create":  os.WriteFile(filepath.Join(root, "new-file"), []byte("x"), 0o644),
		"mkdir":   os.Mkdir(filepath.Join(root, "new-dir"), 0o755),
		"remove":  os.Remove(filepath.Join(root, imagegen.Features().SetuidFile)),
		"chmod":   os.Chmod(filepath.Join(root, imagegen.Features().SetuidFile), 0o777),
		"symlink": os.Symlink("x", filepath.Join(root, "new-link")),
		"rename":  os.Rename(filepath.Join(root, "bin"), filepath.Join(root, "bin2")),
		"catalog": os.Mkdir(filepath.Join(e.mnt, "new-namespace"), 0o755),
	}
	f, err := os.OpenFile(filepath.Join(root, imagegen.Features().SetuidFile), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	attempts["open for writing"] = err
	for op, err := range attempts {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", op, err)
		}
	}
}

// A non-root reader gets the image's own modes: default_permissions.
func (e *env) testNonRootReader(t *testing.T) {
	root := e.tagPath("e2e", "features-gzip")
	private := filepath.Join(root, "modes", "private")
	fi, err := os.Stat(private)
	if err != nil || fi.Mode().Perm()&0o004 != 0 {
		t.Fatalf("feature image lost its unreadable-to-others file %s: %v %v", private, fi, err)
	}
	if out, err := runAs(65534, "cat", private); err == nil {
		t.Errorf("nobody read %s (mode %v): %q", private, fi.Mode(), out)
	}
	public := filepath.Join(root, "dup", "other")
	if fi, err := os.Stat(public); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("feature image lost its 0644 file %s: %v %v", public, fi, err)
	}
	if out, err := runAs(65534, "cat", public); err != nil {
		t.Errorf("nobody could not read a 0644 file: %v %s", err, out)
	}
}

func (e *env) testTagMove(t *testing.T) {
	layout := filepath.Join(e.src, "e2e", "moving")
	first := imagegen.DemoImage()
	write(t, layout, first)
	tag := e.tagPath("e2e", "moving")
	eventually(t, time.Minute, "the tag appears", func() bool { _, err := os.Readlink(tag); return err == nil })
	oldTarget, _ := os.Readlink(tag)
	held, err := os.Open(filepath.Join(filepath.Dir(tag), oldTarget, "README"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	second := imagegen.SingleImage(imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.File("README", 0o644, imagegen.String("the second image\n")))})
	write(t, layout, second)
	eventually(t, time.Minute, "the tag moves", func() bool {
		target, err := os.Readlink(tag)
		return err == nil && target != oldTarget
	})
	if raw, err := os.ReadFile(filepath.Join(tag, "README")); err != nil || string(raw) != "the second image\n" {
		t.Errorf("through the moved tag: %q, %v", raw, err)
	}
	raw, err := io.ReadAll(held)
	if err != nil || !bytes.HasPrefix(raw, []byte("This tree is an OCI image")) {
		t.Errorf("file held open through the old image: %q, %v", raw, err)
	}
}

// A killed daemon leaves a dead mount; a new one clears it and serves the
// indexed images again without re-reading any layer.
func (e *env) testRestartAfterKill(t *testing.T) {
	e.d.stop(syscall.SIGKILL)
	// A name the kernel has not cached must be looked up, and nobody answers.
	if _, err := os.Lstat(filepath.Join(e.mnt, "not-cached")); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("after SIGKILL a lookup gives %v, want ENOTCONN (a dead mount left behind)", err)
	}
	logBefore, _ := os.ReadFile(e.d.log)
	e.d.start()
	ref := "e2e/features-gzip:latest"
	e.d.settle([]string{ref}, time.Minute)
	if img, _ := e.d.image(ref); img.State != status.Ready {
		t.Fatalf("after restart: %s %s", img.State, img.Reason)
	}
	if _, err := os.Stat(filepath.Join(e.tagPath("e2e", "features-gzip"), imagegen.Features().SetuidFile)); err != nil {
		t.Fatal(err)
	}
	logAll, _ := os.ReadFile(e.d.log)
	if after := logAll[len(logBefore):]; bytes.Contains(after, []byte(`msg="layer indexed"`)) {
		t.Errorf("restart re-indexed layers:\n%s", after)
	}
}
