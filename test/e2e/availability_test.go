package e2e

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/test/imagegen"
)

// availEnv is a daemon whose images fail in ways that must never hurt the
// others: FIFO blobs, a layer shared with a layout that goes away, a tag
// moved to a broken image, a torn index.json, a shutdown with a file held.
type availEnv struct {
	dir, src, mnt string
	d             *daemon
	images        map[string]digest.Digest // stream -> image of its latest tag
}

func TestAvailability(t *testing.T) {
	requireHost(t)
	dir := t.TempDir()
	e := &availEnv{dir: dir, src: filepath.Join(dir, "src"), mnt: filepath.Join(dir, "mnt"), images: map[string]digest.Digest{}}
	bin := buildDaemon(t, dir)

	base := fileLayer("base", "a layer two layouts share")
	e.write(t, "one", imagegen.SingleImage(base, fileLayer("one", "1")))
	e.write(t, "two", imagegen.SingleImage(base, fileLayer("two", "2")))
	e.write(t, "moving", imagegen.SingleImage(fileLayer("file", "the first image")))
	e.write(t, "torn", imagegen.SingleImage(fileLayer("file", "kept through a torn index.json")))
	// More FIFO images than image workers: none may hold a worker.
	for i := range 3 {
		e.writeFIFOImage(t, "fifo-"+strconv.Itoa(i))
	}
	e.write(t, "good", imagegen.SingleImage(fileLayer("file", "queued behind the FIFOs")))

	e.d = newDaemon(t, bin, e.src, e.mnt, filepath.Join(dir, "state"))
	e.d.args = append(e.d.args, "--image-workers", "1", "--retry-backoff", "200ms", "--retry-max", "1s", "--shutdown-timeout", "2s")
	e.d.start()
	var refs []string
	for stream := range e.images {
		refs = append(refs, "avail/"+stream+":latest")
	}
	e.d.settle(refs, 5*time.Minute)

	t.Run("FIFOBlobsRefused", e.testFIFOBlobs)
	t.Run("SharedLayerOutlivesItsLayout", e.testSharedLayer)
	t.Run("TagMovedToFailingImage", e.testTagMovedToFailingImage)
	t.Run("TornIndexJSON", e.testTornIndexJSON)
	t.Run("SIGTERMWithFileHeldOpen", e.testSIGTERMWithFileHeld)
}

func fileLayer(name, content string) imagegen.Layer {
	return imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.File(name, 0o644, imagegen.String(content)))}
}

func (e *availEnv) write(t *testing.T, stream string, img imagegen.Image) {
	t.Helper()
	d, err := imagegen.WriteImage(filepath.Join(e.src, "avail", stream), "latest", img)
	if err != nil {
		t.Fatal(err)
	}
	e.images[stream] = d
}

// writeFIFOImage writes an image whose layer blob is a FIFO.
func (e *availEnv) writeFIFOImage(t *testing.T, stream string) {
	t.Helper()
	e.write(t, stream, imagegen.SingleImage(fileLayer("never", "read")))
	blob := largestBlob(t, filepath.Join(e.src, "avail", stream))
	if err := os.Remove(blob); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(blob, 0o644); err != nil {
		t.Fatal(err)
	}
}

// largestBlob is the layer blob of a one-layer image with a small config.
func largestBlob(t *testing.T, layout string) string {
	t.Helper()
	var best string
	var size int64 = -1
	err := filepath.WalkDir(filepath.Join(layout, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil && fi.Size() > size {
			best, size = p, fi.Size()
		}
		return err
	})
	if err != nil || best == "" {
		t.Fatalf("no blob in %s: %v", layout, err)
	}
	return best
}

func (e *availEnv) tag(stream string) string { return filepath.Join(e.mnt, "avail", stream, "latest") }

func (e *availEnv) testFIFOBlobs(t *testing.T) {
	for i := range 3 {
		img, _ := e.d.image("avail/fifo-" + strconv.Itoa(i) + ":latest")
		if img.State != status.Failed || !strings.Contains(img.Reason, "not a regular file") {
			t.Errorf("FIFO image %d: %s %q; want failed, not a regular file", i, img.State, img.Reason)
		}
	}
	got, err := os.ReadFile(filepath.Join(e.tag("good"), "file"))
	if err != nil || string(got) != "queued behind the FIFOs" {
		t.Errorf("image queued behind the FIFOs: %q, %v", got, err)
	}
}

func (e *availEnv) testSharedLayer(t *testing.T) {
	// The first read opens the shared blob from one of the layouts.
	for _, s := range []string{"one", "two"} {
		if got, err := os.ReadFile(filepath.Join(e.tag(s), "base")); err != nil || string(got) != "a layer two layouts share" {
			t.Fatalf("%s: %q, %v", s, got, err)
		}
	}
	removed := filepath.Join(e.src, "avail", "one")
	if err := os.RemoveAll(removed); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the removed stream leaves the mount", func() bool {
		_, err := os.Lstat(filepath.Join(e.mnt, "avail", "one"))
		return errors.Is(err, fs.ErrNotExist)
	})
	// Read past the kernel's page cache: a fresh open with O_DIRECT is
	// not possible on this mount, so drop the caches instead.
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	if got, err := os.ReadFile(filepath.Join(e.tag("two"), "base")); err != nil || string(got) != "a layer two layouts share" {
		t.Errorf("shared file after its other layout was deleted: %q, %v", got, err)
	}
	eventually(t, 10*time.Second, "the daemon lets go of the deleted blobs", func() bool {
		return len(openFilesOf(t, e.d.cmd.Process.Pid, removed)) == 0
	})
}

// openFilesOf lists the files below dir that process pid holds open.
func openFilesOf(t *testing.T, pid int, dir string) []string {
	t.Helper()
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ent := range ents {
		if target, err := os.Readlink(filepath.Join(fdDir, ent.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, target)
		}
	}
	return out
}

func (e *availEnv) testTagMovedToFailingImage(t *testing.T) {
	old := e.images["moving"]
	broken := fileLayer("file", "never shown")
	broken.Damage = imagegen.MismatchDigest
	e.write(t, "moving", imagegen.SingleImage(broken))
	eventually(t, time.Minute, "the new image fails", func() bool {
		img, ok := e.d.image("avail/moving:latest")
		return ok && img.Digest == e.images["moving"] && img.State == status.Failed
	})
	time.Sleep(2 * time.Second) // past the catalog's cache timeout
	target, err := os.Readlink(e.tag("moving"))
	if err != nil || target != "@"+old.String() {
		t.Fatalf("tag points at %q (%v); want the old image @%s", target, err, old)
	}
	if got, err := os.ReadFile(filepath.Join(e.tag("moving"), "file")); err != nil || string(got) != "the first image" {
		t.Errorf("reading through the tag: %q, %v", got, err)
	}
}

func (e *availEnv) testTornIndexJSON(t *testing.T) {
	idx := filepath.Join(e.src, "avail", "torn", "index.json")
	whole, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idx, whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the status reports the torn stream", func() bool {
		for _, st := range e.d.status().Streams {
			if st.Name == "avail/torn" {
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second) // a resync and the catalog's cache timeout
	if got, err := os.ReadFile(filepath.Join(e.tag("torn"), "file")); err != nil || string(got) != "kept through a torn index.json" {
		t.Errorf("stream with a torn index.json: %q, %v", got, err)
	}
	if err := os.WriteFile(idx, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the stream error clears", func() bool { return len(e.d.status().Streams) == 0 })
}

func (e *availEnv) testSIGTERMWithFileHeld(t *testing.T) {
	held, err := os.Open(filepath.Join(e.tag("good"), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	start := time.Now()
	e.d.stop(syscall.SIGTERM)
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("shutdown with a file held open took %s", took)
	}
	if log, _ := os.ReadFile(e.d.log); !strings.Contains(string(log), "detaching it lazily") {
		t.Errorf("the daemon log does not say it detached a busy mount")
	}
	e.d.start()
	e.d.settle([]string{"avail/good:latest"}, time.Minute)
	if got, err := os.ReadFile(filepath.Join(e.tag("good"), "file")); err != nil || string(got) != "queued behind the FIFOs" {
		t.Errorf("after restarting on the same mountpoint: %q, %v", got, err)
	}
}
