package controller

import (
	"maps"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
)

// refIndex answers "who refers to this" without walking every stream, so
// that a change to one stream costs in proportion to that stream, not to
// the thousands of streams a cluster may hold.
type refIndex struct {
	// streamsOf maps an image to the keys of the streams that need it
	// (referenced).
	streamsOf map[digest.Digest]map[string]bool
	// imagesOf maps a layer to the wanted images that hold it.
	imagesOf map[digest.Digest]map[digest.Digest]bool
	// skippedBy maps an image a stream names but does not explode to the
	// reason each such stream gives.
	skippedBy map[digest.Digest]map[string]string
}

func newRefIndex() refIndex {
	return refIndex{
		streamsOf: map[digest.Digest]map[string]bool{},
		imagesOf:  map[digest.Digest]map[digest.Digest]bool{},
		skippedBy: map[digest.Digest]map[string]string{},
	}
}

func addTo[K, V comparable](m map[K]map[V]bool, k K, v V) {
	if m[k] == nil {
		m[k] = map[V]bool{}
	}
	m[k][v] = true
}

func removeFrom[K, V comparable](m map[K]map[V]bool, k K, v V) {
	delete(m[k], v)
	if len(m[k]) == 0 {
		delete(m, k)
	}
}

// syncRefs records that stream key references the images now (none when
// the stream is gone) and returns the images whose set of referring
// streams changed.
func (c *Controller) syncRefs(key string, now []digest.Digest) []digest.Digest {
	old := c.streamRefs[key]
	changed := map[digest.Digest]bool{}
	for _, d := range old {
		if !slices.Contains(now, d) {
			removeFrom(c.refs.streamsOf, d, key)
			changed[d] = true
		}
	}
	for _, d := range now {
		if !slices.Contains(old, d) {
			addTo(c.refs.streamsOf, d, key)
			changed[d] = true
		}
	}
	if len(now) == 0 {
		delete(c.streamRefs, key)
	} else {
		c.streamRefs[key] = now
	}
	return slices.Collect(maps.Keys(changed))
}

// syncSkipped records the images stream key skips, and shows each skipped
// image that is not exploded in the status with its reason.
func (c *Controller) syncSkipped(key string, skipped map[digest.Digest]string) {
	var touched []digest.Digest
	for d, by := range c.refs.skippedBy {
		if _, still := skipped[d]; !still {
			if _, ok := by[key]; ok {
				delete(by, key)
				touched = append(touched, d)
			}
		}
	}
	for d, reason := range skipped {
		if c.refs.skippedBy[d] == nil {
			c.refs.skippedBy[d] = map[string]string{}
		}
		if c.refs.skippedBy[d][key] != reason {
			c.refs.skippedBy[d][key] = reason
			touched = append(touched, d)
		}
	}
	for _, d := range touched {
		by := c.refs.skippedBy[d]
		if _, exploded := c.images[d]; exploded {
			continue
		}
		if len(by) == 0 {
			delete(c.refs.skippedBy, d)
			c.status.RemoveImage(d)
			continue
		}
		first := ""
		for key := range by {
			if first == "" || key < first {
				first = key
			}
		}
		reason := by[first]
		c.status.UpdateImage(d, func(s *status.Image) { s.State, s.Reason = status.Skipped, reason })
	}
}

// streamKeysOf lists the streams that reference image d, sorted.
func (c *Controller) streamKeysOf(d digest.Digest) []string {
	return slices.Sorted(maps.Keys(c.refs.streamsOf[d]))
}

// setLayers records the layers of image d.
func (c *Controller) setLayers(d digest.Digest, img *imageState, layers []digest.Digest) {
	for _, l := range img.layers {
		removeFrom(c.refs.imagesOf, l, d)
	}
	img.layers = layers
	for _, l := range layers {
		addTo(c.refs.imagesOf, l, d)
	}
}

// imageRefs names the references of image d for the status: the tags and
// history items naming an exploded image, or the streams that skip it.
// The status asks at snapshot time, so nothing is kept current per change.
func (c *Controller) imageRefs(d digest.Digest) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.images[d]; !ok {
		return slices.Sorted(maps.Keys(c.refs.skippedBy[d]))
	}
	var names []string
	for _, key := range c.streamKeysOf(d) {
		src := c.streams[key].src
		for _, tag := range slices.Sorted(maps.Keys(src.Tags)) {
			if src.Tags[tag] == d {
				names = append(names, key+":"+tag)
			}
		}
		if slices.Contains(src.History, d) {
			names = append(names, key+"@"+d.String())
		}
	}
	return names
}
