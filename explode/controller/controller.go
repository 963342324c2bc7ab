// Package controller turns stream events into published images: for every
// image a source names it resolves the manifest, runs the layer pass on
// each layer not indexed yet (in parallel, once per layer however many
// images share it), merges the layers into a view and publishes the view
// with its tags. An image is published only once all of that succeeded.
package controller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	// RetryBackoff is the first wait before retrying an image whose
	// failure may be temporary (a blob not written yet); it doubles up to
	// 32 times its value.
	RetryBackoff time.Duration
	Logger       *slog.Logger
}

// Controller is a source.Sink that indexes and publishes images.
type Controller struct {
	opts   Options
	store  index.Store
	reader *index.Reader
	pub    Publisher
	status *status.Registry
	log    *slog.Logger
	passes chan struct{}

	mu      sync.Mutex
	streams map[string]*streamState
	images  map[digest.Digest]*imageState
	queue   []digest.Digest
	wake    chan struct{}
	flights map[digest.Digest]*layerFlight
	// layerSources lists the sources each layer was seen in.
	layerSources map[digest.Digest][]blob.Source
}

type streamState struct {
	src source.Stream
	// shown is what the publisher currently shows for each tag. A moved
	// tag keeps showing its old image until the new one is ready.
	shown map[string]digest.Digest
}

type imageState struct {
	state    status.State
	view     *index.View
	blobs    blob.Source
	queued   bool
	attempts int
}

type layerFlight struct {
	done chan struct{}
	err  error
}

var _ source.Sink = (*Controller)(nil)

// New returns a Controller. Call Run to start its workers.
func New(store index.Store, reader *index.Reader, pub Publisher, reg *status.Registry, opts Options) *Controller {
	if opts.ImageWorkers <= 0 {
		opts.ImageWorkers = 2
	}
	if opts.LayerPasses <= 0 {
		opts.LayerPasses = 2 * runtime.NumCPU()
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Controller{
		opts: opts, store: store, reader: reader, pub: pub, status: reg, log: opts.Logger,
		passes:       make(chan struct{}, opts.LayerPasses),
		streams:      map[string]*streamState{},
		images:       map[digest.Digest]*imageState{},
		wake:         make(chan struct{}, 1),
		flights:      map[digest.Digest]*layerFlight{},
		layerSources: map[digest.Digest][]blob.Source{},
	}
}

// Run processes queued images until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range c.opts.ImageWorkers {
		wg.Go(func() { c.work(ctx) })
	}
	wg.Wait()
}

// StreamChanged implements source.Sink.
func (c *Controller) StreamChanged(st source.Stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss, ok := c.streams[st.Key()]
	if !ok {
		ss = &streamState{shown: map[string]digest.Digest{}}
		c.streams[st.Key()] = ss
	}
	ss.src = st
	for _, d := range c.referenced(ss) {
		img, ok := c.images[d]
		if !ok {
			img = &imageState{state: status.Pending, blobs: st.Blobs}
			c.images[d] = img
			c.enqueue(d)
		}
	}
	c.refreshRefs()
	c.publish(ss)
	c.forgetUnreferenced()
}

// StreamRemoved implements source.Sink.
func (c *Controller) StreamRemoved(namespace, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, namespace+"/"+name)
	c.pub.RemoveStream(namespace, name)
	c.refreshRefs()
	c.forgetUnreferenced()
}

// referenced lists the images a stream needs: its history, its tags'
// targets and the images its tags still show.
func (c *Controller) referenced(ss *streamState) []digest.Digest {
	set := map[digest.Digest]bool{}
	for _, d := range ss.src.History {
		set[d] = true
	}
	for _, d := range ss.src.Tags {
		set[d] = true
	}
	for _, d := range ss.shown {
		set[d] = true
	}
	return slices.Sorted(maps.Keys(set))
}

func (c *Controller) forgetUnreferenced() {
	used := map[digest.Digest]bool{}
	for _, ss := range c.streams {
		for _, d := range c.referenced(ss) {
			used[d] = true
		}
	}
	for d := range c.images {
		if !used[d] {
			delete(c.images, d)
			c.status.RemoveImage(d)
		}
	}
}

// refreshRefs rewrites every image's list of names in the status.
func (c *Controller) refreshRefs() {
	refs := map[digest.Digest][]string{}
	for _, ss := range c.streams {
		for tag, d := range ss.src.Tags {
			refs[d] = append(refs[d], ss.src.Key()+":"+tag)
		}
		for _, d := range ss.src.History {
			refs[d] = append(refs[d], ss.src.Key()+"@"+d.String())
		}
	}
	for d := range c.images {
		c.status.UpdateImage(d, func(s *status.Image) { s.Refs = refs[d] })
	}
}

// publish shows the stream's ready images and the tags that point at them.
// Called with c.mu held, so publications happen in order.
func (c *Controller) publish(ss *streamState) {
	tags := map[string]digest.Digest{}
	for tag, d := range ss.src.Tags {
		switch {
		case c.ready(d):
			tags[tag] = d
		case c.ready(ss.shown[tag]) && c.images[d] != nil && c.images[d].state != status.Failed:
			tags[tag] = ss.shown[tag] // keep the old image until the new one is ready
		}
	}
	ss.shown = tags
	views := map[digest.Digest]*index.View{}
	for _, d := range c.referenced(ss) {
		if c.ready(d) {
			views[d] = c.images[d].view
		}
	}
	c.pub.SetStream(ss.src.Namespace, ss.src.Name, tags, views)
}

func (c *Controller) ready(d digest.Digest) bool {
	img, ok := c.images[d]
	return ok && img.state == status.Ready
}

func (c *Controller) enqueue(d digest.Digest) {
	img := c.images[d]
	if img.queued {
		return
	}
	img.queued = true
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
				img.queued = false
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
		c.mu.Lock()
		blobs := c.images[d].blobs
		c.mu.Unlock()
		view, err := c.process(ctx, d, blobs)
		if ctx.Err() != nil {
			return
		}
		c.finish(ctx, d, view, err)
	}
}

func (c *Controller) finish(ctx context.Context, d digest.Digest, view *index.View, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	img, ok := c.images[d]
	if !ok {
		return // no stream wants it any more
	}
	now := time.Now()
	if err != nil {
		img.state = status.Failed
		img.attempts++
		c.status.UpdateImage(d, func(s *status.Image) { s.State, s.Reason, s.Finished = status.Failed, err.Error(), now })
		c.log.Error("image failed", "image", d, "err", err)
		if retryable(err) && img.attempts <= 6 {
			wait := c.opts.RetryBackoff << (img.attempts - 1)
			time.AfterFunc(wait, func() { c.retry(ctx, d) })
		}
	} else {
		img.state, img.view, img.attempts = status.Ready, view, 0
		c.status.UpdateImage(d, func(s *status.Image) {
			s.State, s.Reason, s.Finished, s.Files = status.Ready, "", now, view.Len()
			s.BytesDone = s.BytesTotal
		})
		c.log.Info("image ready", "image", d, "inodes", view.Len())
	}
	for _, ss := range c.streams {
		if slices.Contains(c.referenced(ss), d) {
			c.publish(ss)
		}
	}
	c.forgetUnreferenced()
}

func (c *Controller) retry(ctx context.Context, d digest.Digest) {
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if img, ok := c.images[d]; ok && img.state == status.Failed {
		img.state = status.Pending
		c.enqueue(d)
	}
}

// retryable reports failures that may pass by themselves: a blob that is
// not there yet. Corrupt or hostile content fails the same way every time.
func retryable(err error) bool {
	return errors.Is(err, fs.ErrNotExist) && !errors.Is(err, index.ErrNotFound)
}

func fmtImage(d digest.Digest, err error) error {
	return fmt.Errorf("image %s: %w", d, err)
}

func (c *Controller) noteLayerSource(layer digest.Digest, src blob.Source) {
	if !slices.Contains(c.layerSources[layer], src) {
		c.layerSources[layer] = append(c.layerSources[layer], src)
	}
}

// OpenLayer implements index.BlobOpener: it tries every source the layer
// was seen in, newest first.
func (c *Controller) OpenLayer(ctx context.Context, layer digest.Digest) (index.Blob, error) {
	c.mu.Lock()
	srcs := slices.Clone(c.layerSources[layer])
	c.mu.Unlock()
	if len(srcs) == 0 {
		return nil, fmt.Errorf("layer %s: no source holds it: %w", layer, fs.ErrNotExist)
	}
	var errs []error
	for _, src := range slices.Backward(srcs) {
		b, err := src.Open(ctx, layer)
		if err == nil {
			return b, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}
