package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/index"
)

// badCopy is a source's copy of a layer that failed on its content.
type badCopy struct {
	version string
	reason  string
}

// imageSources lists the blob sources of every stream that references
// image d, in a stable order, each once.
func (c *Controller) imageSources(d digest.Digest) []blob.Source {
	var out []blob.Source
	for _, key := range c.streamKeysOf(d) {
		if src := c.streams[key].src.Blobs; src != nil {
			out = appendNew(out, src)
		}
	}
	return out
}

// layerSources lists the sources of every image that holds layer, copies
// known to be bad last.
func (c *Controller) layerSources(layer digest.Digest) []blob.Source {
	var good, bad []blob.Source
	for _, d := range slices.Sorted(maps.Keys(c.refs.imagesOf[layer])) {
		for _, src := range c.imageSources(d) {
			if _, isBad := c.badCopies[layer][src.String()]; isBad {
				bad = appendNew(bad, src)
			} else {
				good = appendNew(good, src)
			}
		}
	}
	// A source is good or bad for the layer, never both.
	return append(good, bad...)
}

// layerSourceNamesOf maps the layers of the given images to the names of
// their sources.
func (c *Controller) layerSourceNamesOf(images []digest.Digest) map[digest.Digest]map[string]bool {
	out := map[digest.Digest]map[string]bool{}
	for _, d := range images {
		img, ok := c.images[d]
		if !ok {
			continue
		}
		for _, l := range img.layers {
			if out[l] != nil {
				continue
			}
			out[l] = map[string]bool{}
			for _, src := range c.layerSources(l) {
				out[l][src.String()] = true
			}
		}
	}
	return out
}

// releaseMovedLayers lets go of the open blob of every layer of before
// that lost a source since, so that the reader opens it again from a
// source that still has it and a deleted blob does not keep its disk
// space.
func (c *Controller) releaseMovedLayers(before map[digest.Digest]map[string]bool) {
	for l, names := range before {
		now := map[string]bool{}
		for _, src := range c.layerSources(l) {
			now[src.String()] = true
		}
		for name := range names {
			if !now[name] {
				c.releaseLayer(l)
				break
			}
		}
	}
}

// OpenLayer implements index.BlobOpener for the lazy reader: it tries each
// source of the layer in turn and returns the first blob that opens.
func (c *Controller) OpenLayer(ctx context.Context, layer digest.Digest) (index.Blob, error) {
	c.mu.Lock()
	srcs := c.layerSources(layer)
	if len(srcs) == 0 {
		// A process still holds a file of an image that is gone.
		srcs = c.retired.sources[layer]
	}
	c.mu.Unlock()
	if len(srcs) == 0 {
		return nil, fmt.Errorf("layer %s: no source holds it: %w", layer, fs.ErrNotExist)
	}
	var errs []error
	for _, src := range srcs {
		b, err := src.Open(ctx, layer)
		if err == nil {
			return b, nil
		}
		errs = append(errs, fmt.Errorf("from %s: %w", src, err))
	}
	return nil, errors.Join(errs...)
}

// maxRetiredLayers bounds how many removed layers' sources are remembered.
const maxRetiredLayers = 4096

// retiredLayers remembers where layers of removed images were, oldest
// first, so that files of an image a process still holds stay readable
// while their blobs exist. The blobs are not kept open: a deleted blob
// must not keep its disk space.
type retiredLayers struct {
	sources map[digest.Digest][]blob.Source
	order   []digest.Digest
}

func (r *retiredLayers) add(layer digest.Digest, srcs []blob.Source) {
	if len(srcs) == 0 {
		return
	}
	if _, ok := r.sources[layer]; !ok {
		r.order = append(r.order, layer)
	}
	r.sources[layer] = srcs
	for len(r.order) > maxRetiredLayers {
		delete(r.sources, r.order[0])
		r.order = r.order[1:]
	}
}

func (r *retiredLayers) remove(layer digest.Digest) {
	if _, ok := r.sources[layer]; ok {
		delete(r.sources, layer)
		r.order = slices.DeleteFunc(r.order, func(d digest.Digest) bool { return d == layer })
	}
}

// appendNew appends the sources of more that list lacks, by name.
func appendNew(list []blob.Source, more ...blob.Source) []blob.Source {
	for _, src := range more {
		if !slices.ContainsFunc(list, func(s blob.Source) bool { return s.String() == src.String() }) {
			list = append(list, src)
		}
	}
	return list
}
