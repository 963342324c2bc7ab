package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
	"github.com/explodefs/explodefs/test/imagegen"
)

func (h *harness) image(d digest.Digest) (status.Image, bool) {
	for _, s := range h.reg.Snapshot().Images {
		if s.Digest == d {
			return s, true
		}
	}
	return status.Image{}, false
}

func (h *harness) shows(key, tag string) digest.Digest {
	s, _ := h.pub.get(key)
	return s.tags[tag]
}

func (h *harness) failed(d digest.Digest) bool {
	s, ok := h.image(d)
	return ok && s.State == status.Failed
}

// readFile reads a whole file of a published image through the reader.
func (h *harness) readFile(t *testing.T, key string, img digest.Digest, name string) (string, error) {
	t.Helper()
	s, _ := h.pub.get(key)
	view := s.images[img]
	if view == nil {
		t.Fatalf("%s does not show %s", key, img)
	}
	ino, ok := view.LookupPath(name)
	if !ok {
		t.Fatalf("%s of %s has no %s", key, img, name)
	}
	in := view.Inode(ino)
	buf := make([]byte, in.Size)
	n, err := index.ReadFile(context.Background(), h.reader, view.Layers()[in.Layer], in, buf, 0)
	if err == io.EOF {
		err = nil
	}
	return string(buf[:n]), err
}

// A tag moved to an image that then fails keeps showing its old image.
func TestTagKeepsOldImageWhenNewOneFails(t *testing.T) {
	h := start(t)
	good := h.write(t, "ns", "app", "latest", imagegen.SingleImage(layer("a", "good")))
	eventually(t, "the good image is shown", func() bool { return h.shows("ns/app", "latest") == good })

	broken := layer("b", "broken")
	broken.Damage = imagegen.MismatchDigest
	bad := h.write(t, "ns", "app", "latest", imagegen.SingleImage(broken))
	eventually(t, "the new image fails", func() bool { return h.failed(bad) })
	// Give the failure time to be published, then look again.
	time.Sleep(300 * time.Millisecond)
	if got := h.shows("ns/app", "latest"); got != good {
		t.Fatalf("tag shows %q after its new image failed; want the old image %s", got, good)
	}
	if s, _ := h.pub.get("ns/app"); s.images[good] == nil || s.images[bad] != nil {
		t.Errorf("stream shows images %v; want only the old good one", s.images)
	}
}

// A failure that may pass is retried with capped backoff, and the status
// says how often it was tried and when it is tried next.
func TestTransientFailureRetriedWithBackoff(t *testing.T) {
	h := start(t, func(o *controller.Options) { o.RetryBackoff, o.RetryMax = 50*time.Millisecond, 200*time.Millisecond })
	d := h.write(t, "ns", "late", "latest", imagegen.SingleImage(layer("z", "late blob")))
	lay := h.findLayerBlob(t, filepath.Join(h.root, "ns", "late"), d)
	hidden := lay + ".hidden"
	if err := os.Rename(lay, hidden); err != nil {
		t.Fatal(err)
	}
	eventually(t, "several attempts", func() bool {
		s, _ := h.image(d)
		return s.State == status.Failed && s.Attempts >= 3
	})
	s, _ := h.image(d)
	if s.Permanent || s.NextRetry.IsZero() || time.Until(s.NextRetry) > time.Second {
		t.Errorf("status after %d attempts: permanent %v, next retry %v; want a transient failure retried within the 200ms cap", s.Attempts, s.Permanent, s.NextRetry)
	}
	if !strings.Contains(s.Reason, "no such file") {
		t.Errorf("reason %q does not say the blob is missing", s.Reason)
	}
	if err := os.Rename(hidden, lay); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the image is published once its blob is back", func() bool { return h.shows("ns/late", "latest") == d })
	if s, _ := h.image(d); s.Attempts != 0 || !s.NextRetry.IsZero() || s.Reason != "" {
		t.Errorf("ready image still reports a failure: %+v", s)
	}
}

// A digest mismatch is permanent for that copy: it is not passed again
// until the copy changes or another source brings a good one.
func TestContentFailureRetriedOnlyWhenTheBlobChanges(t *testing.T) {
	h := start(t)
	broken := layer("x", "the same bytes in two layouts")
	broken.Damage = imagegen.MismatchDigest
	d := h.write(t, "ns", "bad", "latest", imagegen.SingleImage(broken))
	eventually(t, "the image fails", func() bool { return h.failed(d) })
	s, _ := h.image(d)
	if !s.Permanent {
		t.Errorf("a digest mismatch is reported as transient: %+v", s)
	}
	lay := s.Layers[0]
	// RetryMax is 400ms: several looks, but the unchanged copy is not
	// read again.
	time.Sleep(1500 * time.Millisecond)
	if n := h.store.passCount(lay); n != 1 {
		t.Errorf("unchanged bad copy passed %d times; want once", n)
	}
	if s, _ := h.image(d); !strings.Contains(s.Reason, "unchanged since it failed") || !strings.Contains(s.Reason, "does not match its digest") {
		t.Errorf("reason %q does not say the copy is unchanged and why it failed", s.Reason)
	}

	// The same image, intact, in another layout: the image is served
	// from there, in both streams.
	good := layer("x", "the same bytes in two layouts")
	if d2 := h.write(t, "ns", "good", "latest", imagegen.SingleImage(good)); d2 != d {
		t.Fatalf("generator is not deterministic: %s != %s", d2, d)
	}
	eventually(t, "the image is shown in both streams", func() bool {
		return h.shows("ns/good", "latest") == d && h.shows("ns/bad", "latest") == d
	})
	if got, err := h.readFile(t, "ns/bad", d, "x"); err != nil || got != "the same bytes in two layouts" {
		t.Errorf("reading through the stream with the bad copy: %q, %v", got, err)
	}
}

// A copy that failed is passed again once its bytes change.
func TestContentFailureRetriedWhenTheBlobIsRewritten(t *testing.T) {
	h := start(t)
	broken := layer("y", "rewritten later")
	broken.Damage = imagegen.MismatchDigest
	d := h.write(t, "ns", "app", "latest", imagegen.SingleImage(broken))
	eventually(t, "the image fails", func() bool { return h.failed(d) })

	// Write the intact blob elsewhere and copy it over the bad one.
	other := t.TempDir()
	if _, err := imagegen.WriteImage(other, "latest", imagegen.SingleImage(layer("y", "rewritten later"))); err != nil {
		t.Fatal(err)
	}
	lay := h.findLayerBlob(t, filepath.Join(h.root, "ns", "app"), d)
	good, err := os.ReadFile(filepath.Join(other, "blobs", "sha256", filepath.Base(lay)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lay+".new", good, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(lay+".new", lay); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rewritten image is shown", func() bool { return h.shows("ns/app", "latest") == d })
}

// A blob that is a FIFO is refused at once: it never holds a worker, and
// images queued behind it appear.
func TestFIFOBlobNeverBlocksAWorker(t *testing.T) {
	h := start(t, func(o *controller.Options) { o.ImageWorkers = 1 })
	dir := filepath.Join(h.root, "ns", "fifo")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Write the layout elsewhere first so the source never sees it whole.
	staging := filepath.Join(t.TempDir(), "fifo")
	d, err := imagegen.WriteImage(staging, "latest", imagegen.SingleImage(layer("f", "never read")))
	if err != nil {
		t.Fatal(err)
	}
	lay := h.findLayerBlob(t, staging, d)
	if err := os.Remove(lay); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(lay, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(staging, dir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the FIFO image fails", func() bool { return h.failed(d) })
	if s, _ := h.image(d); !strings.Contains(s.Reason, "not a regular file") {
		t.Errorf("reason %q does not say the blob is not a regular file", s.Reason)
	}
	good := h.write(t, "ns", "good", "latest", imagegen.SingleImage(layer("g", "fine")))
	eventually(t, "an image queued after it appears", func() bool { return h.shows("ns/good", "latest") == good })
}

// An index.json caught mid-rewrite keeps the stream's last good state and
// reports the error, until the file is whole again.
func TestTornIndexJSONKeepsLastGoodState(t *testing.T) {
	h := start(t)
	d := h.write(t, "ns", "app", "latest", imagegen.SingleImage(layer("a", "kept")))
	eventually(t, "the image is shown", func() bool { return h.shows("ns/app", "latest") == d })
	idx := filepath.Join(h.root, "ns", "app", "index.json")
	whole, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(idx, whole[:len(whole)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the status reports the stream", func() bool {
		for _, st := range h.reg.Snapshot().Streams {
			if st.Name == "ns/app" && strings.Contains(st.Reason, "index.json") {
				return true
			}
		}
		return false
	})
	if got := h.shows("ns/app", "latest"); got != d {
		t.Fatalf("torn index.json changed what the stream shows: %q", got)
	}
	if err := os.WriteFile(idx, whole, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream error clears", func() bool { return len(h.reg.Snapshot().Streams) == 0 })
	if got := h.shows("ns/app", "latest"); got != d {
		t.Fatalf("stream shows %q after index.json was repaired", got)
	}
}

// A layer shared by two layouts keeps being read after one layout is
// deleted, and the deleted copy's file is let go.
func TestSharedLayerSurvivesLayoutRemoval(t *testing.T) {
	h := start(t)
	base := layer("base", "shared by two layouts")
	d1 := h.write(t, "ns", "one", "latest", imagegen.SingleImage(base, layer("1", "one")))
	d2 := h.write(t, "ns", "two", "latest", imagegen.SingleImage(base, layer("2", "two")))
	eventually(t, "both images are shown", func() bool {
		return h.shows("ns/one", "latest") == d1 && h.shows("ns/two", "latest") == d2
	})
	// Read the shared file through both streams; the first read opens
	// the blob from whichever layout the controller picks.
	for key, d := range map[string]digest.Digest{"ns/one": d1, "ns/two": d2} {
		if got, err := h.readFile(t, key, d, "base"); err != nil || got != "shared by two layouts" {
			t.Fatalf("%s: %q, %v", key, got, err)
		}
	}
	for _, gone := range []string{"one", "two"} {
		t.Run("remove "+gone, func(t *testing.T) {
			h := start(t)
			d1 := h.write(t, "ns", "one", "latest", imagegen.SingleImage(base, layer("1", "one")))
			d2 := h.write(t, "ns", "two", "latest", imagegen.SingleImage(base, layer("2", "two")))
			eventually(t, "both images are shown", func() bool {
				return h.shows("ns/one", "latest") == d1 && h.shows("ns/two", "latest") == d2
			})
			kept, keptImage := "two", d2
			if gone == "two" {
				kept, keptImage = "one", d1
			}
			if _, err := h.readFile(t, "ns/"+gone, map[string]digest.Digest{"one": d1, "two": d2}[gone], "base"); err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(h.root, "ns", gone)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the removed stream goes", func() bool { _, ok := h.pub.get("ns/" + gone); return !ok })
			if got, err := h.readFile(t, "ns/"+kept, keptImage, "base"); err != nil || got != "shared by two layouts" {
				t.Fatalf("after removing %s, reading the shared file of %s: %q, %v", gone, kept, got, err)
			}
			if fds := deletedFilesUnder(t, filepath.Join(h.root, "ns", gone)); len(fds) > 0 {
				t.Errorf("the removed layout's blobs are still open: %v", fds)
			}
		})
	}
}

// deletedFilesUnder lists this process's open files below dir.
func deletedFilesUnder(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, target)
		}
	}
	return out
}

// writeStaged writes an image beside the watched root and returns it with
// its one layer's digest, so a test can prepare for that layer before the
// controller sees the image; publish moves it in.
func (h *harness) writeStaged(t *testing.T, ns, stream string, img imagegen.Image) (d, lay digest.Digest, publish func()) {
	t.Helper()
	staging := filepath.Join(t.TempDir(), stream)
	d, err := imagegen.WriteImage(staging, "latest", img)
	if err != nil {
		t.Fatal(err)
	}
	lay = digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(h.findLayerBlob(t, staging, d)))
	return d, lay, func() {
		if err := os.MkdirAll(filepath.Join(h.root, ns), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(staging, filepath.Join(h.root, ns, stream)); err != nil {
			t.Fatal(err)
		}
	}
}

// A damaged index found while merging is rebuilt, and the image appears.
func TestDamagedIndexFoundWhileMergingIsRebuilt(t *testing.T) {
	h := start(t)
	d, lay, publish := h.writeStaged(t, "ns", "app", imagegen.SingleImage(layer("a", "merged from damage")))
	// The merge reads damaged records, and so does the check after it.
	h.store.damage(lay, 2)
	publish()
	eventually(t, "the image is shown", func() bool { return h.shows("ns/app", "latest") == d })
	if n := h.store.passCount(lay); n != 2 {
		t.Errorf("layer passed %d times; want a second pass after the damage", n)
	}
	if got, err := h.readFile(t, "ns/app", d, "a"); err != nil || got != "merged from damage" {
		t.Errorf("reading after the repair: %q, %v", got, err)
	}
}

// A damaged index found by a read is rebuilt while the image stays shown,
// and reads work again.
func TestDamagedIndexFoundByAReadIsRebuilt(t *testing.T) {
	h := start(t)
	d := h.write(t, "ns", "app", "latest", imagegen.SingleImage(layer("a", "read from damage")))
	eventually(t, "the image is shown", func() bool { return h.shows("ns/app", "latest") == d })
	s, _ := h.image(d)
	lay := s.Layers[0]
	h.store.damage(lay, 1)
	if _, err := h.readFile(t, "ns/app", d, "a"); !errors.Is(err, index.ErrCorrupt) {
		t.Fatalf("read of a damaged layer: %v; want ErrCorrupt", err)
	}
	eventually(t, "the layer is indexed again", func() bool { return h.store.passCount(lay) == 2 })
	eventually(t, "reads work again", func() bool {
		got, err := h.readFile(t, "ns/app", d, "a")
		return err == nil && got == "read from damage"
	})
	if h.shows("ns/app", "latest") != d {
		t.Errorf("the image left the view during its repair")
	}
}

// The controller is ready only after the source's first full scan.
func TestReadyAfterFirstScan(t *testing.T) {
	h := start(t)
	eventually(t, "ready", h.ctrl.Ready)
	c := controller.New(memstore.New(), h.reader, h.pub, status.NewRegistry(), controller.Options{})
	if c.Ready() {
		t.Fatal("a controller no source has synced is ready")
	}
	c.Synced()
	if !c.Ready() {
		t.Fatal("not ready after the source synced")
	}
}

// A file of an image that left every stream stays readable for processes
// that hold it, while its blob exists, although the blob is not kept open.
func TestRemovedImageStaysReadable(t *testing.T) {
	h := start(t)
	old := h.write(t, "ns", "app", "latest", imagegen.SingleImage(layer("f", "the old image")))
	eventually(t, "the old image is shown", func() bool { return h.shows("ns/app", "latest") == old })
	s, _ := h.pub.get("ns/app")
	view := s.images[old]
	ino, _ := view.LookupPath("f")
	in := view.Inode(ino)
	lay := view.Layers()[in.Layer]
	if _, err := index.ReadFile(context.Background(), h.reader, lay, in, make([]byte, in.Size), 0); err != nil {
		t.Fatal(err)
	}

	moved := h.write(t, "ns", "app", "latest", imagegen.SingleImage(layer("f", "the new image")))
	eventually(t, "the tag moves and the old image goes", func() bool {
		s, _ := h.pub.get("ns/app")
		return s.tags["latest"] == moved && s.images[old] == nil
	})
	if open := h.reader.OpenLayers(); slices.Contains(open, lay) {
		t.Errorf("the removed image's layer is still open")
	}
	buf := make([]byte, in.Size)
	if n, err := index.ReadFile(context.Background(), h.reader, lay, in, buf, 0); (err != nil && err != io.EOF) || string(buf[:n]) != "the old image" {
		t.Fatalf("reading a held file of the removed image: %q, %v", buf[:n], err)
	}
}

// A stream's tagged images are indexed before its history.
func TestTaggedImagesFirst(t *testing.T) {
	layout := filepath.Join(t.TempDir(), "app")
	var history []digest.Digest
	for i := range 4 {
		d, err := imagegen.WriteImage(layout, fmt.Sprintf("v%d", i), imagegen.SingleImage(layer("f", fmt.Sprintf("image %d", i))))
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, d)
	}
	tagged := history[3]
	pub := &recorder{streams: map[string]shown{}}
	reg := status.NewRegistry()
	store := memstore.New()
	reader := index.NewReader(store, nil, index.ReaderOptions{})
	defer reader.Close()
	ctrl := controller.New(store, reader, pub, reg, controller.Options{
		Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, ImageWorkers: 1, CacheDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctrl.StreamChanged(source.Stream{Namespace: "ns", Name: "app", Tags: map[string]digest.Digest{"latest": tagged},
		History: history, Blobs: ocilayout.New(layout)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	eventually(t, "all images ready", func() bool {
		s, _ := pub.get("ns/app")
		return len(s.images) == len(history)
	})
	finished := map[digest.Digest]time.Time{}
	for _, s := range reg.Snapshot().Images {
		finished[s.Digest] = s.Finished
	}
	for _, d := range history[:3] {
		if !finished[tagged].Before(finished[d]) {
			t.Errorf("history image %s finished at %v, before the tagged image at %v", d, finished[d], finished[tagged])
		}
	}
}
