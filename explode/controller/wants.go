package controller

import (
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// WantsImage reports whether any stream names image d, in a tag, its
// history or a tag still showing it, whether or not it is ready yet.
func (c *Controller) WantsImage(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.refs.streamsOf[d]) > 0
}

// WantsTag reports whether the stream has the tag, whether or not the tag
// shows an image yet.
func (c *Controller) WantsTag(namespace, stream, tag string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss, ok := c.streams[namespace+"/"+stream]
	if !ok {
		return false
	}
	_, ok = ss.src.Tags[tag]
	return ok
}

// Publishers shows streams through each of its publishers in turn: the
// FUSE root and the materializer, say.
type Publishers []Publisher

// SetStream implements Publisher.
func (ps Publishers) SetStream(namespace, stream string, tags map[string]digest.Digest, images map[digest.Digest]*index.View) {
	for _, p := range ps {
		p.SetStream(namespace, stream, tags, images)
	}
}

// RemoveStream implements Publisher.
func (ps Publishers) RemoveStream(namespace, stream string) {
	for _, p := range ps {
		p.RemoveStream(namespace, stream)
	}
}
