package controller_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/source/ocidir"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
	"github.com/explodefs/explodefs/test/imagegen"
)

// recorder is a Publisher that remembers what each stream shows.
type recorder struct {
	mu      sync.Mutex
	streams map[string]shown
}

type shown struct {
	tags   map[string]digest.Digest
	images map[digest.Digest]*index.View
}

func (r *recorder) SetStream(ns, st string, tags map[string]digest.Digest, images map[digest.Digest]*index.View) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// A tag must never name an image that is not shown with it.
	for tag, d := range tags {
		if images[d] == nil {
			panic("tag " + tag + " published without its image")
		}
	}
	r.streams[ns+"/"+st] = shown{tags: tags, images: images}
}

func (r *recorder) RemoveStream(ns, st string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.streams, ns+"/"+st)
}

func (r *recorder) get(key string) (shown, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.streams[key]
	return s, ok
}

// countingStore counts layer passes, and can damage what a layer's
// records read back as, as a torn or bit-rotted index would.
type countingStore struct {
	index.Store
	mu      sync.Mutex
	passes  map[digest.Digest]int
	damaged map[digest.Digest]int // reads of a layer left to fail
	gate    *gate                 // holds deletions (gc_test.go)
}

func (s *countingStore) NewLayerWriter(ctx context.Context, d digest.Digest) (index.LayerWriter, error) {
	s.mu.Lock()
	s.passes[d]++
	s.mu.Unlock()
	return s.Store.NewLayerWriter(ctx, d)
}

func (s *countingStore) passCount(d digest.Digest) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.passes[d]
}

// damage makes the next n reads of the layer's entries or spans fail as
// damaged records do.
func (s *countingStore) damage(d digest.Digest, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.damaged[d] = n
}

func (s *countingStore) takeDamage(d digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.damaged[d] > 0 {
		s.damaged[d]--
		return fmt.Errorf("layer %s: entry record missing: %w", d, index.ErrCorrupt)
	}
	return nil
}

func (s *countingStore) Entries(ctx context.Context, d digest.Digest, fn func(index.Entry) error) error {
	if err := s.takeDamage(d); err != nil {
		return err
	}
	return s.Store.Entries(ctx, d, fn)
}

func (s *countingStore) Spans(ctx context.Context, d digest.Digest) ([]index.Span, error) {
	if err := s.takeDamage(d); err != nil {
		return nil, err
	}
	return s.Store.Spans(ctx, d)
}

type harness struct {
	root     string
	cacheDir string
	pub      *recorder
	store    *countingStore
	reg      *status.Registry
	ctrl     *controller.Controller
	reader   *index.Reader
}

// start runs a controller with an oci-dir source over a temporary root.
// Retries are fast unless configure says otherwise.
func start(t *testing.T, configure ...func(*controller.Options)) *harness {
	t.Helper()
	h := &harness{
		root:  t.TempDir(),
		pub:   &recorder{streams: map[string]shown{}},
		store: &countingStore{Store: memstore.New(), passes: map[digest.Digest]int{}, damaged: map[digest.Digest]int{}},
		reg:   status.NewRegistry(),
	}
	opts := controller.Options{
		Platform:     v1.Platform{OS: "linux", Architecture: "amd64"},
		CacheDir:     t.TempDir(),
		RetryBackoff: 100 * time.Millisecond,
		RetryMax:     400 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, f := range configure {
		f(&opts)
	}
	h.cacheDir = opts.CacheDir
	h.reader = index.NewReader(h.store, index.BlobOpenerFunc(func(ctx context.Context, d digest.Digest) (index.Blob, error) {
		return h.ctrl.OpenLayer(ctx, d)
	}), index.ReaderOptions{
		CacheDir:   opts.CacheDir,
		CacheBytes: 1 << 20,
		OnCorrupt:  func(d digest.Digest, err error) { h.ctrl.LayerDamaged(d, err) },
	})
	h.ctrl = controller.New(h.store, h.reader, h.pub, h.reg, opts)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.ctrl.Run(ctx) })
	wg.Go(func() { _ = ocidir.New(h.root, ocidir.WithResync(time.Second)).Run(ctx, h.ctrl) })
	t.Cleanup(func() { cancel(); wg.Wait(); h.reader.Close() })
	return h
}

func (h *harness) write(t *testing.T, ns, stream, tag string, img imagegen.Image) digest.Digest {
	t.Helper()
	d, err := imagegen.WriteImage(filepath.Join(h.root, ns, stream), tag, img)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s", what)
}

func layer(name, content string) imagegen.Layer {
	return imagegen.Layer{Compression: imagegen.Gzip, Entries: imagegen.Entries(
		imagegen.File(name, 0o644, imagegen.String(content)))}
}

func TestPublishesAndMovesTags(t *testing.T) {
	h := start(t)
	base := layer("base", "shared base layer")
	d1 := h.write(t, "ns", "app", "v1", imagegen.SingleImage(base, layer("one", "1")))
	eventually(t, "v1 shows image 1", func() bool {
		s, ok := h.pub.get("ns/app")
		return ok && s.tags["v1"] == d1
	})
	s, _ := h.pub.get("ns/app")
	if _, ok := s.images[d1].LookupPath("one"); !ok {
		t.Errorf("image 1 lacks its file")
	}
	baseLayer := h.layerDigest(t, d1, 0)

	d2 := h.write(t, "ns", "app", "v1", imagegen.SingleImage(base, layer("two", "2")))
	eventually(t, "v1 moves to image 2", func() bool {
		s, _ := h.pub.get("ns/app")
		return s.tags["v1"] == d2
	})
	if n := h.store.passCount(baseLayer); n != 1 {
		t.Errorf("shared base layer passed %d times, want once", n)
	}

	if err := imagegen.RemoveTag(filepath.Join(h.root, "ns", "app"), "v1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "v1 disappears", func() bool {
		s, _ := h.pub.get("ns/app")
		_, ok := s.tags["v1"]
		return !ok
	})
	if err := os.RemoveAll(filepath.Join(h.root, "ns", "app")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the stream disappears", func() bool {
		_, ok := h.pub.get("ns/app")
		return !ok
	})
}

func (h *harness) layerDigest(t *testing.T, img digest.Digest, i int) digest.Digest {
	t.Helper()
	for _, s := range h.reg.Snapshot().Images {
		if s.Digest == img && len(s.Layers) > i {
			return s.Layers[i]
		}
	}
	t.Fatalf("no status for image %s", img)
	return ""
}

func TestBadImageFailsAlone(t *testing.T) {
	h := start(t)
	bad := layer("x", "corrupted")
	bad.Damage = imagegen.MismatchDigest
	badImage := h.write(t, "ns", "bad", "latest", imagegen.SingleImage(bad))
	good := h.write(t, "ns", "good", "latest", imagegen.SingleImage(layer("y", "fine")))

	eventually(t, "the good image is published", func() bool {
		s, _ := h.pub.get("ns/good")
		return s.tags["latest"] == good
	})
	eventually(t, "the bad image fails", func() bool {
		for _, s := range h.reg.Snapshot().Images {
			if s.Digest == badImage && s.State == status.Failed {
				return true
			}
		}
		return false
	})
	for _, s := range h.reg.Snapshot().Images {
		if s.Digest != badImage {
			continue
		}
		for _, want := range []string{badImage.String(), s.Layers[0].String(), "does not match its digest"} {
			if !strings.Contains(s.Reason, want) {
				t.Errorf("reason %q does not mention %q", s.Reason, want)
			}
		}
	}
	if s, _ := h.pub.get("ns/bad"); len(s.tags) != 0 || len(s.images) != 0 {
		t.Errorf("failed image is visible: %+v", s)
	}
}

// A blob that is not there yet is retried, and the image appears once it is.
func TestMissingBlobIsRetried(t *testing.T) {
	h := start(t)
	dir := filepath.Join(h.root, "ns", "late")
	d := h.write(t, "ns", "late", "latest", imagegen.SingleImage(layer("z", "late blob")))
	lay := h.findLayerBlob(t, dir, d)
	hidden := lay + ".hidden"
	if err := os.Rename(lay, hidden); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the image fails for the missing blob", func() bool {
		for _, s := range h.reg.Snapshot().Images {
			if s.Digest == d && s.State == status.Failed {
				return true
			}
		}
		return false
	})
	if err := os.Rename(hidden, lay); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if s, _ := h.pub.get("ns/late"); s.tags["latest"] == d {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("image not published after its blob appeared")
}

// findLayerBlob returns the path of the largest blob, which is the layer in
// a one-layer image with a short config.
func (h *harness) findLayerBlob(t *testing.T, dir string, _ digest.Digest) string {
	t.Helper()
	var best string
	var size int64 = -1
	_ = filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if fi, _ := e.Info(); fi.Size() > size && isGzip(p) {
				best, size = p, fi.Size()
			}
		}
		return nil
	})
	if best == "" {
		t.Fatal("no layer blob found")
	}
	return best
}

func isGzip(p string) bool {
	b := make([]byte, 2)
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	_, _ = f.Read(b)
	return b[0] == 0x1f && b[1] == 0x8b
}
