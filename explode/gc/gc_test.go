package gc

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/controller"
	"github.com/explodefs/explodefs/explode/ostree"
	"github.com/explodefs/explodefs/explode/ostree/libostree"
)

type fakeLayers struct {
	calls atomic.Int32
	opts  controller.CollectOptions
	res   controller.LayerCollection
	err   error
}

func (f *fakeLayers) CollectLayers(_ context.Context, opts controller.CollectOptions) (controller.LayerCollection, error) {
	f.calls.Add(1)
	f.opts = opts
	return f.res, f.err
}

type fakeRepo struct {
	calls  atomic.Int32
	dryRun bool
	st     ostree.GCStats
	err    error
}

func (f *fakeRepo) GC(_ context.Context, dryRun bool) (ostree.GCStats, error) {
	f.calls.Add(1)
	f.dryRun = dryRun
	return f.st, f.err
}

func TestCollectRunsBothAndAddsTheirBytes(t *testing.T) {
	layers := &fakeLayers{res: controller.LayerCollection{
		Layers: []controller.CollectedLayer{{Digest: digest.FromString("l"), IndexBytes: 10, CacheBytes: 5}}, Bytes: 15}}
	repo := &fakeRepo{st: ostree.GCStats{PruneStats: libostree.PruneStats{Pruned: 2, Bytes: 100}}}
	c := &Collector{Layers: layers, Repo: repo, Grace: time.Minute}
	rep, err := c.Collect(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if !layers.opts.DryRun || layers.opts.Grace != time.Minute || !repo.dryRun {
		t.Errorf("dry run or grace not passed on: layers %+v, repo dry run %v", layers.opts, repo.dryRun)
	}
	if rep.Bytes() != 115 || !rep.DryRun || rep.OSTree == nil || rep.OSTree.Pruned != 2 {
		t.Errorf("report %+v frees %d bytes; want 115", rep, rep.Bytes())
	}
}

func TestCollectGoesOnAfterAFailure(t *testing.T) {
	broken := errors.New("disk on fire")
	layers := &fakeLayers{err: broken}
	repo := &fakeRepo{}
	c := &Collector{Layers: layers, Repo: repo}
	if _, err := c.Collect(context.Background(), false); !errors.Is(err, broken) {
		t.Errorf("error %v, want the layers' failure", err)
	}
	if repo.calls.Load() != 1 {
		t.Error("the repository was not collected after the layers failed")
	}
	// Without a materializer only layers are collected.
	c.Repo = nil
	layers.err = nil
	rep, err := c.Collect(context.Background(), false)
	if err != nil || rep.OSTree != nil {
		t.Errorf("without a repository: %+v, %v", rep, err)
	}
}

func TestRunCollectsOnSchedule(t *testing.T) {
	layers := &fakeLayers{err: controller.ErrNotSynced}
	c := &Collector{Layers: layers}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx, 10*time.Millisecond); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for layers.calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if n := layers.calls.Load(); n < 3 {
		t.Errorf("%d collections in the time of many intervals", n)
	}
	// A zero interval never collects.
	c.Run(context.Background(), 0)
}
