package controller

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
)

// LayerDamaged is the reader's OnCorrupt hook: the index of layer, or the
// blob it was read from, turned out damaged during a read. The layer's
// index is dropped and every image holding it is processed again; the
// images stay shown meanwhile, and the fresh pass finds a good copy or
// fails the images with the reason.
func (c *Controller) LayerDamaged(layer digest.Digest, cause error) {
	c.mu.Lock()
	if c.repairing[layer] || c.collecting[layer] != nil {
		c.mu.Unlock()
		return
	}
	c.repairing[layer] = true
	ctx := c.ctx
	c.mu.Unlock()
	c.log.Warn("layer damaged; indexing it again", "layer", layer, "err", cause)
	go func() {
		err := c.dropLayerIndex(ctx, layer)
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.repairing, layer)
		if err != nil {
			c.log.Error("dropping damaged layer index", "layer", layer, "err", err)
			return
		}
		for d := range c.refs.imagesOf[layer] {
			c.enqueue(d)
		}
	}()
}

// dropLayerIndex deletes a layer's index and lets go of its open blob.
func (c *Controller) dropLayerIndex(ctx context.Context, layer digest.Digest) error {
	if err := c.store.DeleteLayer(ctx, layer); err != nil {
		return fmt.Errorf("layer %s: deleting its damaged index: %w", layer, err)
	}
	c.releaseLayer(layer)
	c.status.UpdateLayer(layer, func(s *status.Layer) { s.State, s.Reason = status.Pending, "index damaged; indexing again" })
	return nil
}
