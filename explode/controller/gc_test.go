package controller_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/memstore"
	"github.com/explodefs/explodefs/test/imagegen"
)

// gate holds DeleteLayer calls until the test lets them go, so that a
// collection can be caught halfway.
type gate struct {
	deleting chan digest.Digest
	release  chan struct{}
}

func (s *countingStore) DeleteLayer(ctx context.Context, d digest.Digest) error {
	s.mu.Lock()
	g := s.gate
	s.mu.Unlock()
	if g != nil {
		g.deleting <- d
		<-g.release
	}
	return s.Store.DeleteLayer(ctx, d)
}

func (h *harness) published(t *testing.T, key, tag string, d digest.Digest) {
	t.Helper()
	eventually(t, key+":"+tag+" shows "+d.String(), func() bool { return h.shows(key, tag) == d })
}

func (h *harness) fileIs(t *testing.T, key string, img digest.Digest, name, want string) {
	t.Helper()
	if got, err := h.readFile(t, key, img, name); err != nil || got != want {
		t.Errorf("%s of %s reads %q, %v; want %q", name, key, got, err, want)
	}
}

func collect(t *testing.T, h *harness, opts controller.CollectOptions) controller.LayerCollection {
	t.Helper()
	res, err := h.ctrl.CollectLayers(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func collectedDigests(res controller.LayerCollection) map[digest.Digest]controller.CollectedLayer {
	out := map[digest.Digest]controller.CollectedLayer{}
	for _, l := range res.Layers {
		out[l.Digest] = l
	}
	return out
}

func TestCollectLayersTakesOnlyUnreferenced(t *testing.T) {
	h := start(t)
	base := layer("base", "shared base layer")
	zstd := imagegen.Layer{Compression: imagegen.Zstd, Entries: imagegen.Entries(
		imagegen.File("z", 0o644, imagegen.String("a zstd layer, copied to the cache")))}
	a := h.write(t, "ns", "a", "latest", imagegen.SingleImage(base, layer("a", "only in a"), zstd))
	b := h.write(t, "ns", "b", "latest", imagegen.SingleImage(base, layer("b", "only in b")))
	h.published(t, "ns/a", "latest", a)
	h.published(t, "ns/b", "latest", b)
	baseLayer, onlyA, zstdLayer := h.layerDigest(t, a, 0), h.layerDigest(t, a, 1), h.layerDigest(t, a, 2)
	cache := index.CachePath(h.cacheDir, zstdLayer)
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("the zstd layer has no cache: %v", err)
	}
	stray := digest.FromString("a layer the index never finished")
	strayCache := index.CachePath(h.cacheDir, stray)
	if err := os.WriteFile(strayCache, []byte("half a layer"), 0o600); err != nil {
		t.Fatal(err)
	}

	if res := collect(t, h, controller.CollectOptions{DryRun: true}); len(res.Layers) != 1 || res.Layers[0].Digest != stray {
		t.Fatalf("with every layer held, a dry run would collect %+v; want only the stray cache", res.Layers)
	}

	if err := os.RemoveAll(filepath.Join(h.root, "ns", "a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ns/a disappears", func() bool { _, ok := h.pub.get("ns/a"); return !ok })

	res := collect(t, h, controller.CollectOptions{Grace: time.Hour, DryRun: true})
	if res.Waiting != 2 || len(res.Layers) != 1 {
		t.Fatalf("inside the grace period: waiting %d, layers %+v; want 2 waiting and the stray cache", res.Waiting, res.Layers)
	}
	res = collect(t, h, controller.CollectOptions{DryRun: true})
	got := collectedDigests(res)
	if len(got) != 3 || got[onlyA].Digest == "" || got[zstdLayer].Digest == "" || got[stray].Digest == "" {
		t.Fatalf("a dry run would collect %+v; want a's two own layers and the stray cache", res.Layers)
	}
	if got[zstdLayer].CacheBytes == 0 || got[stray].CacheBytes != int64(len("half a layer")) {
		t.Errorf("cache bytes: zstd layer %d, stray %d", got[zstdLayer].CacheBytes, got[stray].CacheBytes)
	}
	if got[onlyA].Unreferenced.IsZero() || !got[stray].Unreferenced.IsZero() {
		t.Errorf("unreferenced since: %v (layer), %v (stray cache)", got[onlyA].Unreferenced, got[stray].Unreferenced)
	}
	if _, err := h.store.Layer(context.Background(), onlyA); err != nil {
		t.Fatalf("a dry run deleted a layer: %v", err)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("a dry run deleted a cache: %v", err)
	}

	res = collect(t, h, controller.CollectOptions{})
	if len(res.Layers) != 3 || res.Bytes == 0 {
		t.Fatalf("collected %+v (%d bytes); want 3 layers", res.Layers, res.Bytes)
	}
	for _, d := range []digest.Digest{onlyA, zstdLayer} {
		if _, err := h.store.Layer(context.Background(), d); !errors.Is(err, index.ErrNotFound) {
			t.Errorf("layer %s is still indexed: %v", d, err)
		}
	}
	for _, p := range []string{cache, strayCache} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("cache %s is still there: %v", p, err)
		}
	}
	if _, err := h.store.Layer(context.Background(), baseLayer); err != nil {
		t.Errorf("the base layer b holds was collected: %v", err)
	}
	h.fileIs(t, "ns/b", b, "base", "shared base layer")
	h.fileIs(t, "ns/b", b, "b", "only in b")
	if res := collect(t, h, controller.CollectOptions{}); len(res.Layers) != 0 || res.Waiting != 0 {
		t.Errorf("a second collection found %+v, %d waiting", res.Layers, res.Waiting)
	}
}

// A collection that is deleting a layer when a new image names it again
// loses nothing: the image's worker waits for the deletion and indexes
// the layer again.
func TestCollectLayersRacingANewReference(t *testing.T) {
	h := start(t)
	gate := &gate{deleting: make(chan digest.Digest, 1), release: make(chan struct{})}
	h.store.mu.Lock()
	h.store.gate = gate
	h.store.mu.Unlock()
	shared := layer("shared", "a layer that comes back")
	a := h.write(t, "ns", "a", "latest", imagegen.SingleImage(shared))
	h.published(t, "ns/a", "latest", a)
	l := h.layerDigest(t, a, 0)
	if err := os.RemoveAll(filepath.Join(h.root, "ns", "a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ns/a disappears", func() bool { _, ok := h.pub.get("ns/a"); return !ok })

	done := make(chan controller.LayerCollection, 1)
	go func() {
		res, err := h.ctrl.CollectLayers(context.Background(), controller.CollectOptions{})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	if d := <-gate.deleting; d != l {
		t.Fatalf("collection deletes %s, want %s", d, l)
	}
	// The layer is on its way out; a new stream names it.
	c := h.write(t, "ns", "c", "latest", imagegen.SingleImage(shared, layer("c", "new on top")))
	time.Sleep(300 * time.Millisecond)
	if s, ok := h.pub.get("ns/c"); ok && s.tags["latest"] == c {
		t.Fatal("the new image was published while its layer was being deleted")
	}
	close(gate.release)
	if res := <-done; len(res.Layers) != 1 || res.Layers[0].Digest != l {
		t.Fatalf("collected %+v, want %s", res.Layers, l)
	}
	h.published(t, "ns/c", "latest", c)
	h.fileIs(t, "ns/c", c, "shared", "a layer that comes back")
	if n := h.store.passCount(l); n != 2 {
		t.Errorf("the layer was passed %d times, want twice (before and after its collection)", n)
	}
	// Held again, it is not collected.
	go func() {
		for d := range gate.deleting {
			t.Errorf("collected %s, which image c holds", d)
		}
	}()
	if res := collect(t, h, controller.CollectOptions{}); len(res.Layers) != 0 {
		t.Errorf("collected %+v while image c holds them", res.Layers)
	}
	close(gate.deleting)
}

func TestCollectLayersWaitsForTheFirstSync(t *testing.T) {
	c := controller.New(memstore.New(), nil, &recorder{streams: map[string]shown{}}, status.NewRegistry(), controller.Options{})
	if _, err := c.CollectLayers(context.Background(), controller.CollectOptions{}); !errors.Is(err, controller.ErrNotSynced) {
		t.Errorf("a collection before the first sync: %v, want ErrNotSynced", err)
	}
}
