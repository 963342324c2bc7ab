package controller

import (
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// tagShows is the publishing rule for one tag, in one place: a tag shows
// its target once the target is ready. Until then (and if the target
// fails) it keeps showing the image it showed before, as long as that one
// is still ready. A tag never shows an image that is not ready, so there
// is never a half view.
func tagShows(target, previous digest.Digest, ready func(digest.Digest) bool) (digest.Digest, bool) {
	switch {
	case ready(target):
		return target, true
	case previous != "" && ready(previous):
		return previous, true
	}
	return "", false
}

// publish shows the stream's ready images and the tags that point at them,
// and returns the images whose referring streams changed with it (a tag
// that stops showing an old image lets go of it). Called with c.mu held,
// so publications happen in order.
func (c *Controller) publish(ss *streamState) []digest.Digest {
	tags := map[string]digest.Digest{}
	for tag, d := range ss.src.Tags {
		if shown, ok := tagShows(d, ss.shown[tag], c.ready); ok {
			tags[tag] = shown
		}
	}
	ss.shown = tags
	refs := c.referenced(ss)
	views := map[digest.Digest]*index.View{}
	for _, d := range refs {
		if c.ready(d) {
			views[d] = c.images[d].view
		}
	}
	c.pub.SetStream(ss.src.Namespace, ss.src.Name, tags, views)
	return c.syncRefs(ss.src.Key(), refs)
}

// ready reports whether image d can be shown: it has a merged view. A
// ready image being refreshed after damage keeps its view, and stays
// shown; a failed one has none.
func (c *Controller) ready(d digest.Digest) bool {
	img, ok := c.images[d]
	return ok && img.view != nil
}

// publishHolders publishes every stream that references image d and
// returns the images whose referring streams changed.
func (c *Controller) publishHolders(d digest.Digest) []digest.Digest {
	var changed []digest.Digest
	for _, key := range c.streamKeysOf(d) {
		changed = append(changed, c.publish(c.streams[key])...)
	}
	return changed
}
