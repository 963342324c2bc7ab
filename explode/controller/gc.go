package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// CollectOptions tunes CollectLayers.
type CollectOptions struct {
	// Grace is how long no wanted image may have held a layer before its
	// index and caches go: a stream that drops an image and names it again
	// soon after, or a process still reading a removed image's files,
	// keeps it meanwhile.
	Grace time.Duration
	// DryRun reports what would go and deletes nothing.
	DryRun bool
}

// CollectedLayer is a layer whose index and cache a collection deleted,
// or would delete.
type CollectedLayer struct {
	Digest digest.Digest `json:"digest"`
	// IndexBytes is what the layer's records take in the index, before
	// the database's own compression; 0 when the store cannot tell.
	IndexBytes int64 `json:"indexBytes"`
	// CacheBytes is the size of the layer's decompressed copy (zstd
	// layers only).
	CacheBytes int64 `json:"cacheBytes"`
	// Unreferenced is when the controller first saw no wanted image hold
	// the layer; zero for a cache file whose layer the index lacks.
	Unreferenced time.Time `json:"unreferencedSince,omitzero"`
}

// LayerCollection says what CollectLayers did, or would do.
type LayerCollection struct {
	DryRun bool             `json:"dryRun,omitempty"`
	Layers []CollectedLayer `json:"layers"`
	// Waiting counts unreferenced layers still inside their grace period.
	Waiting int `json:"waiting"`
	// Bytes is the sum of the layers' index and cache bytes.
	Bytes int64 `json:"bytes"`
}

// layerSizer is implemented by stores that can tell what a layer's
// records take (badgerstore).
type layerSizer interface {
	LayerBytes(d digest.Digest) (entries, spans, windows int64, err error)
}

// ErrNotSynced is returned by CollectLayers before the sources delivered
// their first full state: until then every layer looks unreferenced.
var ErrNotSynced = errors.New("the sources have not delivered their first full state yet")

// CollectLayers deletes the index records, content object records and
// decompressed caches of layers that no image a stream names has held
// for at least opts.Grace, and cache files of layers the index does not
// hold. Nothing a wanted image holds is touched. A layer being collected
// is marked under the controller's lock, and a worker that needs it waits
// for the collection to end and then indexes it again, so a collection
// racing a new reference loses nothing.
func (c *Controller) CollectLayers(ctx context.Context, opts CollectOptions) (LayerCollection, error) {
	res := LayerCollection{DryRun: opts.DryRun, Layers: []CollectedLayer{}}
	if !c.Ready() {
		return res, ErrNotSynced
	}
	stored := map[digest.Digest]bool{}
	if err := c.store.Layers(ctx, func(info index.LayerInfo) error {
		stored[info.Digest] = true
		return nil
	}); err != nil {
		return res, fmt.Errorf("listing indexed layers: %w", err)
	}
	strays, err := c.strayCaches(stored)
	if err != nil {
		return res, err
	}

	c.mu.Lock()
	now := time.Now()
	for d := range c.unreferenced {
		if !stored[d] {
			delete(c.unreferenced, d)
		}
	}
	var todo []CollectedLayer
	for d := range stored {
		if c.layerInUse(d) {
			delete(c.unreferenced, d)
			continue
		}
		since, ok := c.unreferenced[d]
		if !ok {
			since = now
			c.unreferenced[d] = now
		}
		if now.Sub(since) < opts.Grace {
			res.Waiting++
			continue
		}
		todo = append(todo, CollectedLayer{Digest: d, Unreferenced: since})
	}
	for _, d := range strays {
		if !c.layerInUse(d) {
			todo = append(todo, CollectedLayer{Digest: d})
		}
	}
	if !opts.DryRun {
		for _, l := range todo {
			c.collecting[l.Digest] = make(chan struct{})
		}
	}
	c.mu.Unlock()

	var errs []error
	for _, l := range todo {
		l.IndexBytes, l.CacheBytes = c.layerBytes(l.Digest, stored[l.Digest])
		if !opts.DryRun {
			if err := c.deleteLayerData(ctx, l.Digest); err != nil {
				errs = append(errs, err)
				continue
			}
			c.log.Info("collected layer no image holds", "layer", l.Digest, "index_bytes", l.IndexBytes,
				"cache_bytes", l.CacheBytes, "unreferenced_since", l.Unreferenced)
		}
		res.Layers = append(res.Layers, l)
		res.Bytes += l.IndexBytes + l.CacheBytes
	}
	return res, errors.Join(errs...)
}

// layerInUse reports whether a wanted image holds the layer, or a pass, a
// repair or a collection of it runs. c.mu must be held.
func (c *Controller) layerInUse(d digest.Digest) bool {
	return len(c.refs.imagesOf[d]) > 0 || c.flights[d] != nil || c.repairing[d] || c.collecting[d] != nil
}

// layerBytes measures what collecting a layer frees.
func (c *Controller) layerBytes(d digest.Digest, indexed bool) (indexBytes, cacheBytes int64) {
	if sizer, ok := c.store.(layerSizer); ok && indexed {
		if e, s, w, err := sizer.LayerBytes(d); err == nil {
			indexBytes = e + s + w
		}
	}
	if c.opts.CacheDir != "" {
		if fi, err := os.Stat(index.CachePath(c.opts.CacheDir, d)); err == nil {
			cacheBytes = fi.Size()
		}
	}
	return indexBytes, cacheBytes
}

// deleteLayerData deletes a layer's records and cache file, then ends its
// collection, waking workers that wait for it.
func (c *Controller) deleteLayerData(ctx context.Context, d digest.Digest) error {
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		close(c.collecting[d])
		delete(c.collecting, d)
		delete(c.unreferenced, d)
	}()
	c.releaseLayer(d)
	if err := c.store.DeleteLayer(ctx, d); err != nil {
		return fmt.Errorf("collecting layer %s: %w", d, err)
	}
	if c.opts.CacheDir != "" {
		p := index.CachePath(c.opts.CacheDir, d)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("collecting layer %s: removing its cache %s: %w", d, p, err)
		}
	}
	c.status.RemoveLayer(d)
	c.mu.Lock()
	c.retired.remove(d)
	c.mu.Unlock()
	return nil
}

// strayCaches lists the layers of decompressed caches the index does not
// hold: what a crash during a pass, or a layer deleted by hand, leaves.
func (c *Controller) strayCaches(stored map[digest.Digest]bool) ([]digest.Digest, error) {
	if c.opts.CacheDir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(c.opts.CacheDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing layer caches: %w", err)
	}
	var out []digest.Digest
	for _, e := range entries {
		hex, ok := strings.CutSuffix(e.Name(), ".tar")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		if d.Validate() == nil && !stored[d] {
			out = append(out, d)
		}
	}
	return out, nil
}

// waitCollected waits while layer d is being collected. c.mu must be
// held; it is released while waiting and held again on return.
func (c *Controller) waitCollected(ctx context.Context, d digest.Digest) error {
	for {
		done, ok := c.collecting[d]
		if !ok {
			return nil
		}
		c.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			c.mu.Lock()
			return ctx.Err()
		}
		c.mu.Lock()
	}
}
