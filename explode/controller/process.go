package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/manifest"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// process resolves one image, indexes the layers it lacks and merges them.
func (c *Controller) process(ctx context.Context, d digest.Digest, blobs blob.Source) (*index.View, error) {
	c.status.UpdateImage(d, func(s *status.Image) {
		s.State, s.Reason, s.Started, s.Finished = status.Indexing, "", time.Now(), time.Time{}
	})
	img, err := manifest.Resolve(ctx, blobs, d, c.opts.Platform)
	if err != nil {
		return nil, fmtImage(d, err)
	}
	layers := make([]digest.Digest, len(img.Layers))
	var total int64
	for i, l := range img.Layers {
		layers[i] = l.Digest
		total += l.Size
	}
	c.status.UpdateImage(d, func(s *status.Image) {
		s.Manifest, s.Layers, s.BytesTotal = img.Manifest, layers, total
	})

	errs := make([]error, len(img.Layers))
	var wg sync.WaitGroup
	for i, l := range img.Layers {
		wg.Go(func() { errs[i] = c.ensureLayer(ctx, l, blobs) })
	}
	wg.Wait()
	// Report the lowest failing layer: the first a reader would meet.
	for i, err := range errs {
		if err != nil {
			return nil, fmtImage(d, fmt.Errorf("layer %d of %d: %w", i+1, len(layers), err))
		}
	}
	view, err := index.BuildView(ctx, c.store, layers)
	if err != nil {
		return nil, fmtImage(d, fmt.Errorf("merging layers: %w", err))
	}
	return view, nil
}

// ensureLayer makes sure the layer is indexed, running its pass unless it
// is indexed already or another image's worker is running it right now.
func (c *Controller) ensureLayer(ctx context.Context, l manifest.Layer, blobs blob.Source) error {
	c.mu.Lock()
	c.noteLayerSource(l.Digest, blobs)
	if f, ok := c.flights[l.Digest]; ok {
		c.mu.Unlock()
		<-f.done
		return f.err
	}
	f := &layerFlight{done: make(chan struct{})}
	c.flights[l.Digest] = f
	c.mu.Unlock()

	f.err = c.indexLayer(ctx, l, blobs)

	c.mu.Lock()
	delete(c.flights, l.Digest)
	c.mu.Unlock()
	close(f.done)
	return f.err
}

func (c *Controller) indexLayer(ctx context.Context, l manifest.Layer, blobs blob.Source) error {
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

	b, err := blobs.Open(ctx, l.Digest)
	if err != nil {
		c.status.UpdateLayer(l.Digest, func(s *status.Layer) { s.State, s.Reason = status.Failed, err.Error() })
		return err
	}
	defer b.Close()
	if l.Size > 0 && b.Size() != l.Size {
		err := &index.LayerError{Layer: l.Digest, Err: fmt.Errorf("blob is %d bytes, manifest says %d", b.Size(), l.Size)}
		c.status.UpdateLayer(l.Digest, func(s *status.Layer) { s.State, s.Reason = status.Failed, err.Error() })
		return err
	}
	progress := c.status.StartLayer(l.Digest, b.Size())
	start := time.Now()
	info, err := index.IndexLayer(ctx, c.store, b, l.Digest, index.PassOptions{
		SpanSize: c.opts.SpanSize, CacheDir: c.opts.CacheDir, Progress: progress,
	})
	if err != nil {
		c.status.UpdateLayer(l.Digest, func(s *status.Layer) {
			s.State, s.Reason, s.Finished = status.Failed, err.Error(), time.Now()
		})
		return err
	}
	c.status.UpdateLayer(l.Digest, func(s *status.Layer) { markIndexed(s, info) })
	c.log.Info("layer indexed", "layer", l.Digest, "compression", info.Compression,
		"entries", info.Entries, "bytes", info.UncompressedSize, "spans", info.Spans, "took", time.Since(start))
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
