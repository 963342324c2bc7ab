// Package controller turns stream events into published images: for every
// image a source names it resolves the manifest, runs the layer pass on
// each layer not indexed yet (in parallel, once per layer however many
// images share it), merges the layers into a view and publishes the view
// with its tags. An image is published only once all of that succeeded.
//
// The controller also knows which streams, and so which blob sources, hold
// each layer. It opens layers for the lazy reader (OpenLayer), falling back
// from one source to the next, and it tells the reader to let go of blobs
// that no shown image uses any more.
package controller

import (
	"context"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/blob"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// Publisher shows streams to users; the FUSE root implements it.
type Publisher interface {
	SetStream(namespace, stream string, tags map[string]digest.Digest, images map[digest.Digest]*index.View)
	RemoveStream(namespace, stream string)
}

// LayerReleaser lets go of a layer's open blob and cached bytes; the lazy
// reader implements it. A later read opens the layer again.
type LayerReleaser interface {
	Release(layer digest.Digest) error
}

// Options tunes a Controller.
type Options struct {
	Platform v1.Platform
	// ImageWorkers is how many images are resolved and merged at once.
	ImageWorkers int
	// LayerPasses is how many layer passes run at once. A pass is CPU
	// bound; allowing more passes than cores lets all layers of an image
	// progress together, so the image is ready when the total work is
	// done rather than after rounds of the largest layers.
	LayerPasses int
	SpanSize    int64
	CacheDir    string
	// MaxLayerSize bounds a layer's uncompressed size (index.PassOptions).
	MaxLayerSize int64
	// RetryBackoff is the first wait before retrying an image whose
	// failure may pass (a blob not written yet, an I/O error, a full
	// disk); it doubles with every failed attempt up to RetryMax.
	RetryBackoff time.Duration
	// RetryMax caps the wait between attempts. Images that failed on
	// their content are looked at again this often, and are passed again
	// only when a blob or a source changed.
	RetryMax time.Duration
	Logger   *slog.Logger
}

// Controller is a source.Sink that indexes and publishes images.
type Controller struct {
	opts   Options
	store  index.Store
	reader LayerReleaser
	pub    Publisher
	status *status.Registry
	log    *slog.Logger
	passes chan struct{}
	// ctx is Run's context; retries and repairs scheduled from callbacks
	// stop with it.
	ctx context.Context

	// mu guards everything below: the state machine of every image, the
	// publishing rule and the status updates that go with them, so that
	// what is published always matches the recorded state.
	mu      sync.Mutex
	streams map[string]*streamState
	images  map[digest.Digest]*imageState
	// badCopies records, per layer, the sources whose copy failed on its
	// content, with the blob version that failed.
	badCopies map[digest.Digest]map[string]badCopy
	// repairing holds layers whose index is being rebuilt after damage.
	repairing map[digest.Digest]bool
	// retired remembers the sources of layers that no wanted image holds
	// any more, for processes that still read files of a removed image.
	retired retiredLayers
	// refs indexes who refers to each image and layer; streamRefs is what
	// each stream referenced when refs was last brought up to date.
	refs       refIndex
	streamRefs map[string][]digest.Digest
	queue      []digest.Digest
	wake       chan struct{}
	flights    map[digest.Digest]*layerFlight
	// unreferenced holds when each indexed layer was first seen held by
	// no wanted image; collecting holds layers whose data a garbage
	// collection is deleting, closed when it is done (gc.go).
	unreferenced map[digest.Digest]time.Time
	collecting   map[digest.Digest]chan struct{}
	synced       bool
	// settle returns freed memory to the OS once the work is done.
	settle *time.Timer
}

type streamState struct {
	src source.Stream
	// shown is what the publisher currently shows for each tag. A moved
	// tag keeps showing its old image until the new one is ready.
	shown map[string]digest.Digest
}

type imageState struct {
	state status.State
	view  *index.View
	// layers is known once the manifest was resolved; the sources of a
	// layer are those of the images that hold it.
	layers []digest.Digest
	// sources are those the image was last processed with; a layer of
	// a removed image is remembered with them.
	sources  []blob.Source
	queued   bool
	running  bool
	attempts int
	retry    *time.Timer
}

type layerFlight struct {
	done chan struct{}
	err  error
}

var _ source.Sink = (*Controller)(nil)

// New returns a Controller. Call Run to start its workers.
func New(store index.Store, reader LayerReleaser, pub Publisher, reg *status.Registry, opts Options) *Controller {
	if opts.ImageWorkers <= 0 {
		opts.ImageWorkers = 2
	}
	if opts.LayerPasses <= 0 {
		opts.LayerPasses = 2 * runtime.NumCPU()
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 10 * time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 5 * time.Minute
	}
	if opts.RetryMax < opts.RetryBackoff {
		opts.RetryMax = opts.RetryBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Controller{
		opts: opts, store: store, reader: reader, pub: pub, status: reg, log: opts.Logger,
		ctx:        context.Background(),
		passes:     make(chan struct{}, opts.LayerPasses),
		streams:    map[string]*streamState{},
		images:     map[digest.Digest]*imageState{},
		badCopies:  map[digest.Digest]map[string]badCopy{},
		repairing:  map[digest.Digest]bool{},
		retired:    retiredLayers{sources: map[digest.Digest][]blob.Source{}},
		refs:       newRefIndex(),
		streamRefs: map[string][]digest.Digest{},
		wake:       make(chan struct{}, 1),
		flights:    map[digest.Digest]*layerFlight{},

		unreferenced: map[digest.Digest]time.Time{},
		collecting:   map[digest.Digest]chan struct{}{},
	}
	reg.SetRefs(c.imageRefs)
	return c
}

// Run processes queued images until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	var wg sync.WaitGroup
	for range c.opts.ImageWorkers {
		wg.Go(func() { c.work(ctx) })
	}
	wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, img := range c.images {
		if img.retry != nil {
			img.retry.Stop()
		}
	}
}

// Synced implements source.Sink.
func (c *Controller) Synced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = true
}

// Ready reports whether the source has delivered its first full scan.
// Images may still be indexing; they appear as they become ready.
func (c *Controller) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// StreamChanged implements source.Sink.
func (c *Controller) StreamChanged(st source.Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := st.Key()
	before := c.layerSourceNamesOf(c.streamRefs[key])
	ss, ok := c.streams[key]
	if !ok {
		ss = &streamState{shown: map[string]digest.Digest{}}
		c.streams[key] = ss
	}
	ss.src = st
	c.status.SetStreamError(key, nil)
	for _, d := range c.referenced(ss) {
		img, ok := c.images[d]
		switch {
		case !ok:
			c.images[d] = &imageState{state: status.Pending}
			c.enqueue(d)
		case img.state == status.Failed:
			// The stream may bring a source that has what was
			// missing or broken: try again now.
			c.enqueue(d)
		}
	}
	c.syncSkipped(key, st.Skipped)
	// publish records what the stream references now, against what it
	// referenced before this change.
	c.forgetUnreferenced(c.publish(ss))
	c.releaseMovedLayers(before)
}

// StreamRemoved implements source.Sink.
func (c *Controller) StreamRemoved(namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := namespace + "/" + name
	c.status.SetStreamError(key, nil)
	c.syncSkipped(key, nil)
	if _, ok := c.streams[key]; !ok {
		return
	}
	before := c.layerSourceNamesOf(c.streamRefs[key])
	delete(c.streams, key)
	changed := c.syncRefs(key, nil)
	c.pub.RemoveStream(namespace, name)
	c.forgetUnreferenced(changed)
	c.releaseMovedLayers(before)
}

// StreamFailed implements source.Sink: the stream keeps what it shows.
func (c *Controller) StreamFailed(namespace, name string, err error) {
	c.status.SetStreamError(namespace+"/"+name, err)
	c.log.Warn("cannot read stream; keeping its last good state", "stream", namespace+"/"+name, "err", err)
}

// referenced lists the images a stream needs, most wanted first, so that
// they are queued in that order: its tags' targets, its history, and the
// images its tags still show.
func (c *Controller) referenced(ss *streamState) []digest.Digest {
	var out []digest.Digest
	seen := map[digest.Digest]bool{}
	add := func(d digest.Digest) {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	for _, tag := range slices.Sorted(maps.Keys(ss.src.Tags)) {
		add(ss.src.Tags[tag])
	}
	for _, d := range ss.src.History {
		add(d)
	}
	for _, tag := range slices.Sorted(maps.Keys(ss.shown)) {
		add(ss.shown[tag])
	}
	return out
}

// forgetUnreferenced drops those of the candidate images that no stream
// needs any more, and lets go of the blobs of layers that no remaining
// image holds.
func (c *Controller) forgetUnreferenced(candidates []digest.Digest) {
	var gone []digest.Digest
	for _, d := range candidates {
		if _, ok := c.images[d]; ok && len(c.refs.streamsOf[d]) == 0 && !slices.Contains(gone, d) {
			gone = append(gone, d)
		}
	}
	if len(gone) == 0 {
		return
	}
	// Sources are known through the images that hold a layer, so look
	// them up before the images go.
	sources := map[digest.Digest][]blob.Source{}
	for _, d := range gone {
		for _, l := range c.images[d].layers {
			if _, ok := sources[l]; !ok {
				sources[l] = c.layerSources(l)
			}
			sources[l] = appendNew(sources[l], c.images[d].sources...)
		}
	}
	for _, d := range gone {
		img := c.images[d]
		if img.retry != nil {
			img.retry.Stop()
		}
		c.setLayers(d, img, nil)
		delete(c.images, d)
		c.status.RemoveImage(d)
	}
	for l, srcs := range sources {
		if len(c.refs.imagesOf[l]) == 0 {
			c.retired.add(l, srcs)
			c.releaseLayer(l)
			delete(c.badCopies, l)
		}
	}
}

func (c *Controller) releaseLayer(l digest.Digest) {
	if err := c.reader.Release(l); err != nil {
		c.log.Warn("closing layer blob", "layer", l, "err", err)
	}
}
