// Package gc reclaims what no stream references any more: the index
// records and decompressed caches of layers (through the controller) and
// the OSTree refs, records and objects of images (through the
// materializer), on a schedule and on demand, with a dry run that says
// what would go and how much space it frees.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/ostree"
)

// Layers collects layers no wanted image holds; the controller
// implements it.
type Layers interface {
	CollectLayers(ctx context.Context, opts controller.CollectOptions) (controller.LayerCollection, error)
}

// Repo deletes refs and records of images no source names and prunes the
// objects no ref reaches; the materializer implements it.
type Repo interface {
	GC(ctx context.Context, dryRun bool) (ostree.GCStats, error)
}

// Collector runs collections of both.
type Collector struct {
	Layers Layers
	// Repo is nil when images are not materialized.
	Repo Repo
	// Grace is how long a layer stays after the last image holding it
	// went (controller.CollectOptions.Grace).
	Grace time.Duration
	Log   *slog.Logger
}

// Report says what a collection did, or would do.
type Report struct {
	DryRun bool                       `json:"dryRun,omitempty"`
	Grace  time.Duration              `json:"grace"`
	Layers controller.LayerCollection `json:"layers"`
	// OSTree is absent when images are not materialized.
	OSTree *ostree.GCStats `json:"ostree,omitempty"`
}

// Bytes is what the collection frees, or would free.
func (r Report) Bytes() int64 {
	n := r.Layers.Bytes
	if r.OSTree != nil {
		n += int64(r.OSTree.Bytes)
	}
	return n
}

// Collect runs one collection: the layers first, then the repository.
// Both run even when the other fails; the error joins theirs.
func (c *Collector) Collect(ctx context.Context, dryRun bool) (Report, error) {
	rep := Report{DryRun: dryRun, Grace: c.Grace}
	var errs []error
	layers, err := c.Layers.CollectLayers(ctx, controller.CollectOptions{Grace: c.Grace, DryRun: dryRun})
	rep.Layers = layers
	if err != nil {
		errs = append(errs, fmt.Errorf("collecting layers: %w", err))
	}
	if c.Repo != nil {
		st, err := c.Repo.GC(ctx, dryRun)
		rep.OSTree = &st
		if err != nil {
			errs = append(errs, fmt.Errorf("collecting OSTree objects: %w", err))
		}
	}
	return rep, errors.Join(errs...)
}

// Run collects every interval until ctx ends; a zero or negative
// interval runs nothing. Collections before the sources' first full
// state are skipped quietly: nothing can be told unreferenced yet.
func (c *Collector) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := c.Collect(ctx, false)
		switch {
		case errors.Is(err, controller.ErrNotSynced):
		case err != nil && ctx.Err() == nil:
			c.log().Warn("scheduled garbage collection failed", "err", err)
		case err == nil && (len(rep.Layers.Layers) > 0 || rep.OSTree != nil && rep.OSTree.Pruned > 0):
			c.log().Info("garbage collected", "layers", len(rep.Layers.Layers), "bytes", rep.Bytes())
		}
	}
}

func (c *Collector) log() *slog.Logger {
	if c.Log == nil {
		return slog.Default()
	}
	return c.Log
}
