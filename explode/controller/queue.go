package controller

import (
	"context"
	"runtime/debug"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// enqueue queues image d unless it is queued already. An image that is
// being processed is queued again once that run ends.
func (c *Controller) enqueue(d digest.Digest) {
	img := c.images[d]
	if img.retry != nil {
		img.retry.Stop()
		img.retry = nil
	}
	if img.queued {
		return
	}
	img.queued = true
	if img.running {
		return // work queues it when the current run finishes
	}
	c.queue = append(c.queue, d)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Controller) next(ctx context.Context) (digest.Digest, bool) {
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			d := c.queue[0]
			c.queue = c.queue[1:]
			img, ok := c.images[d]
			if ok {
				img.queued, img.running = false, true
				img.state = status.Indexing
			}
			c.mu.Unlock()
			if ok {
				return d, true
			}
			continue
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-c.wake:
		}
	}
}

func (c *Controller) work(ctx context.Context) {
	for {
		d, ok := c.next(ctx)
		if !ok {
			return
		}
		view, err := c.process(ctx, d)
		if ctx.Err() != nil {
			return
		}
		c.finish(d, view, err)
	}
}

// finish records the outcome of processing image d and publishes it.
func (c *Controller) finish(d digest.Digest, view *index.View, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img, ok := c.images[d]
	if !ok {
		return // no stream wants it any more
	}
	img.running = false
	now := time.Now()
	if err == nil {
		img.state, img.view, img.attempts = status.Ready, view, 0
		c.status.UpdateImage(d, func(s *status.Image) {
			s.State, s.Reason, s.Finished, s.Files = status.Ready, "", now, view.Len()
			s.Attempts, s.NextRetry, s.Permanent = 0, time.Time{}, false
			s.BytesDone = s.BytesTotal
		})
		c.log.Info("image ready", "image", d, "inodes", view.Len())
	} else {
		img.state, img.view = status.Failed, nil
		img.attempts++
		permanent := isPermanent(err)
		wait := c.backoff(img.attempts, permanent)
		c.status.UpdateImage(d, func(s *status.Image) {
			s.State, s.Reason, s.Finished = status.Failed, err.Error(), now
			s.Attempts, s.NextRetry, s.Permanent = img.attempts, now.Add(wait), permanent
		})
		c.log.Error("image failed", "image", d, "attempt", img.attempts, "permanent", permanent, "retry_in", wait, "err", err)
		if !img.queued {
			img.retry = time.AfterFunc(wait, func() { c.retryNow(d) })
		}
	}
	if img.queued {
		// Asked for again while it ran (a repair, a new source).
		img.queued = false
		c.enqueue(d)
	}
	changed := c.publishHolders(d)
	c.forgetUnreferenced(changed)
	c.settleWhenIdle()
}

// settleDelay is how long the controller must stay idle before it hands
// the memory its work freed back to the OS.
const settleDelay = 2 * time.Second

// settleWhenIdle returns freed memory to the OS once no image is queued or
// being processed for settleDelay. Passes, merges and publishing free much
// more than they keep, and Go gives freed memory back only slowly. It
// costs one forced collection per burst of work. Measured with the
// million-entry bench (`go run ./test/bench -only memory`): 227–232 MiB
// idle with it, 228–258 MiB without.
func (c *Controller) settleWhenIdle() {
	if len(c.queue) > 0 {
		return
	}
	for _, img := range c.images {
		if img.running {
			return
		}
	}
	if c.settle != nil {
		c.settle.Stop()
	}
	c.settle = time.AfterFunc(settleDelay, func() {
		c.mu.Lock()
		busy := len(c.queue) > 0
		c.mu.Unlock()
		if !busy {
			debug.FreeOSMemory()
		}
	})
}

// backoff is the wait before attempt n+1: doubling from RetryBackoff for
// failures that may pass, capped at RetryMax. Failures tied to content
// wait RetryMax, and then cost only a look at whether a blob changed.
func (c *Controller) backoff(attempts int, permanent bool) time.Duration {
	if permanent {
		return c.opts.RetryMax
	}
	wait := c.opts.RetryBackoff
	for i := 1; i < attempts && wait < c.opts.RetryMax; i++ {
		wait *= 2
	}
	return min(wait, c.opts.RetryMax)
}

func (c *Controller) retryNow(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	if img, ok := c.images[d]; ok && img.state == status.Failed {
		img.retry = nil
		c.enqueue(d)
	}
}
