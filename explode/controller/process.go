package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/manifest"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// process resolves one image, indexes the layers it lacks and merges them.
func (c *Controller) process(ctx context.Context, d digest.Digest) (*index.View, error) {
	c.status.UpdateImage(d, func(s *status.Image) {
		s.State, s.Started, s.Finished, s.NextRetry = status.Indexing, time.Now(), time.Time{}, time.Time{}
	})
	c.mu.Lock()
	srcs := c.imageSources(d)
	c.mu.Unlock()
	img, err := resolve(ctx, srcs, d, c.opts)
	if err != nil {
		return nil, fmtImage(d, err)
	}
	layers := make([]digest.Digest, len(img.Layers))
	var total int64
	for i, l := range img.Layers {
		layers[i] = l.Digest
		total += l.Size
	}
	c.mu.Lock()
	if st, ok := c.images[d]; ok {
		c.setLayers(d, st, layers)
		st.sources = srcs
	}
	c.mu.Unlock()
	c.status.UpdateImage(d, func(s *status.Image) {
		s.Manifest, s.Config, s.Layers, s.BytesTotal = img.Manifest, img.Config, layers, total
	})

	if err := c.ensureLayers(ctx, img.Layers); err != nil {
		return nil, fmtImage(d, err)
	}
	view, err := index.BuildView(ctx, c.store, layers)
	if errors.Is(err, index.ErrCorrupt) {
		// A damaged index is rebuilt from the blobs, once per run.
		c.log.Warn("index damaged; indexing its layers again", "image", d, "err", err)
		if err := c.dropDamaged(ctx, layers); err != nil {
			return nil, fmtImage(d, err)
		}
		if err := c.ensureLayers(ctx, img.Layers); err != nil {
			return nil, fmtImage(d, err)
		}
		view, err = index.BuildView(ctx, c.store, layers)
	}
	if err != nil {
		return nil, fmtImage(d, fmt.Errorf("merging layers: %w", err))
	}
	return view, nil
}

// resolve reads the image's manifest from the first source that has a
// good copy of it.
func resolve(ctx context.Context, srcs []blob.Source, d digest.Digest, opts Options) (manifest.Image, error) {
	if len(srcs) == 0 {
		return manifest.Image{}, &transientError{errors.New("no stream holds the image")}
	}
	failures := &sourceFailures{}
	for _, src := range srcs {
		img, err := manifest.Resolve(ctx, src, d, opts.Platform)
		if err == nil {
			return img, nil
		}
		if ctx.Err() != nil {
			return manifest.Image{}, ctx.Err()
		}
		failures.errs = append(failures.errs, fmt.Errorf("from %s: %w", src, err))
	}
	return manifest.Image{}, failures
}

// ensureLayers indexes the image's layers in parallel and reports the
// lowest failing one: the first a reader would meet.
func (c *Controller) ensureLayers(ctx context.Context, layers []manifest.Layer) error {
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Go(func() { errs[i] = c.ensureLayer(ctx, l) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("layer %d of %d: %w", i+1, len(layers), err)
		}
	}
	return nil
}

// ensureLayer makes sure the layer is indexed, running its pass unless it
// is indexed already or another image's worker is running it right now.
func (c *Controller) ensureLayer(ctx context.Context, l manifest.Layer) error {
	c.mu.Lock()
	// A layer being garbage collected is indexed again once it is gone.
	if err := c.waitCollected(ctx, l.Digest); err != nil {
		c.mu.Unlock()
		return err
	}
	if f, ok := c.flights[l.Digest]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &layerFlight{done: make(chan struct{})}
	c.flights[l.Digest] = f
	c.mu.Unlock()

	f.err = c.indexLayer(ctx, l)

	c.mu.Lock()
	delete(c.flights, l.Digest)
	c.mu.Unlock()
	close(f.done)
	return f.err
}

// indexLayer runs the layer's pass from the first source whose copy is
// good. A source whose copy failed on its content is skipped until that
// copy changes, so one layout's bad copy never fails an image that can get
// the layer from another.
func (c *Controller) indexLayer(ctx context.Context, l manifest.Layer) error {
	if info, err := c.store.Layer(ctx, l.Digest); err == nil {
		c.status.UpdateLayer(l.Digest, func(s *status.Layer) { markIndexed(s, info) })
		return nil
	} else if !errors.Is(err, index.ErrNotFound) {
		return err
	}
	select {
	case c.passes <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.passes }()

	c.mu.Lock()
	srcs := c.layerSources(l.Digest)
	c.mu.Unlock()
	failures := &sourceFailures{}
	for _, src := range srcs {
		err := c.passFrom(ctx, l, src)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failures.errs = append(failures.errs, fmt.Errorf("from %s: %w", src, err))
	}
	if len(srcs) == 0 {
		failures.errs = append(failures.errs, &transientError{fmt.Errorf("layer %s: no stream holds it now", l.Digest)})
	}
	c.status.UpdateLayer(l.Digest, func(s *status.Layer) {
		s.State, s.Reason, s.Finished = status.Failed, failures.Error(), time.Now()
	})
	return failures
}

// passFrom runs the layer's pass over src's copy.
func (c *Controller) passFrom(ctx context.Context, l manifest.Layer, src blob.Source) error {
	b, err := src.Open(ctx, l.Digest)
	if err != nil {
		return err
	}
	defer b.Close()
	version := blob.VersionOf(b)
	if reason, ok := c.knownBad(l.Digest, src, version); ok {
		return &unchangedBadCopy{reason: reason}
	}
	if l.Size > 0 && b.Size() != l.Size {
		// Most likely still being written; the size settles.
		return &transientError{&index.LayerError{Layer: l.Digest, Err: fmt.Errorf("blob is %d bytes, the manifest says %d", b.Size(), l.Size)}}
	}
	progress := c.status.StartLayer(l.Digest, b.Size())
	start := time.Now()
	var ignored atomic.Int64
	info, err := index.IndexLayer(ctx, c.store, readTagged{b}, l.Digest, index.PassOptions{
		SpanSize: c.opts.SpanSize, CacheDir: c.opts.CacheDir, Progress: progress,
		MaxLayerSize: c.opts.MaxLayerSize, Ignored: &ignored,
	})
	if err != nil {
		if isPermanent(err) {
			c.noteBad(l.Digest, src, version, err)
		}
		return err
	}
	c.status.UpdateLayer(l.Digest, func(s *status.Layer) { markIndexed(s, info); s.Ignored = ignored.Load() })
	c.log.Info("layer indexed", "layer", l.Digest, "source", src.String(), "compression", info.Compression,
		"entries", info.Entries, "ignored", ignored.Load(), "bytes", info.UncompressedSize, "spans", info.Spans, "took", time.Since(start))
	return nil
}

// unchangedBadCopy is a copy of a layer that failed on its content before
// and has not changed since; it is not read again.
type unchangedBadCopy struct{ reason string }

func (e *unchangedBadCopy) Error() string {
	return "unchanged since it failed: " + e.reason
}

func (c *Controller) knownBad(layer digest.Digest, src blob.Source, version string) (string, bool) {
	if version == "" {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	bad, ok := c.badCopies[layer][src.String()]
	if !ok || bad.version != version {
		return "", false
	}
	return bad.reason, true
}

func (c *Controller) noteBad(layer digest.Digest, src blob.Source, version string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.badCopies[layer] == nil {
		c.badCopies[layer] = map[string]badCopy{}
	}
	c.badCopies[layer][src.String()] = badCopy{version: version, reason: err.Error()}
}

// dropDamaged deletes the index of every layer whose records turn out
// damaged, so that ensureLayer indexes it again.
func (c *Controller) dropDamaged(ctx context.Context, layers []digest.Digest) error {
	for _, l := range layers {
		err := c.store.Entries(ctx, l, func(index.Entry) error { return nil })
		if err == nil {
			_, err = c.store.Spans(ctx, l)
		}
		if errors.Is(err, index.ErrCorrupt) {
			if err := c.dropLayerIndex(ctx, l); err != nil {
				return err
			}
		}
	}
	return nil
}

func markIndexed(s *status.Layer, info index.LayerInfo) {
	s.State, s.Reason = status.Ready, ""
	s.Compression, s.Entries = info.Compression.String(), info.Entries
	s.BytesTotal, s.BytesDone = info.CompressedSize, info.CompressedSize
	if s.Finished.IsZero() {
		s.Finished = time.Now()
	}
}

func fmtImage(d digest.Digest, err error) error {
	return fmt.Errorf("image %s: %w", d, err)
}
