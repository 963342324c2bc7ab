// Package status keeps the progress and failure state of every image and
// layer, for the HTTP status endpoint, `explodefs status` and metrics.
package status

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// State is where an image or layer is in its life.
type State string

// States. Only Ready images are visible in the mount.
const (
	Pending  State = "pending"
	Indexing State = "indexing"
	Ready    State = "ready"
	Failed   State = "failed"
	// Skipped images are named by a stream but not exploded, by policy
	// (an image outside the integrated registry, say); Reason says why.
	Skipped State = "skipped"
)

// Layer is the status of one layer pass.
type Layer struct {
	Digest      digest.Digest `json:"digest"`
	State       State         `json:"state"`
	Compression string        `json:"compression,omitempty"`
	BytesDone   int64         `json:"bytesDone"`
	BytesTotal  int64         `json:"bytesTotal"`
	Entries     int64         `json:"entries,omitempty"`
	// Ignored counts entries left out because a directory above them is
	// named like a whiteout (".wh."), which no filesystem may show.
	Ignored  int64     `json:"ignored,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// Image is the status of one image.
type Image struct {
	Digest     digest.Digest   `json:"digest"`
	Manifest   digest.Digest   `json:"manifest,omitempty"`
	Config     digest.Digest   `json:"config,omitempty"`
	Refs       []string        `json:"refs"`
	State      State           `json:"state"`
	Layers     []digest.Digest `json:"layers,omitempty"`
	BytesDone  int64           `json:"bytesDone"`
	BytesTotal int64           `json:"bytesTotal"`
	Files      int             `json:"files,omitempty"`
	Reason     string          `json:"reason,omitempty"`
	// Permanent says the failure is tied to the content of the blobs
	// tried; the image is tried again when a blob or a source changes.
	Permanent bool `json:"permanent,omitempty"`
	// Attempts counts failed attempts since the image was last ready.
	Attempts int `json:"attempts,omitempty"`
	// NextRetry is when a failed image is tried again.
	NextRetry time.Time `json:"nextRetry,omitzero"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	// Materialized is the state of the image's OSTree commit, when a
	// materializer runs.
	Materialized *Materialization `json:"materialized,omitempty"`
}

// Materialization is the progress of writing an image out as an OSTree
// commit.
type Materialization struct {
	// State is pending, running, done or failed.
	State      string    `json:"state"`
	Commit     string    `json:"commit,omitempty"`
	FilesDone  int64     `json:"filesDone"`
	FilesTotal int64     `json:"filesTotal"`
	BytesDone  int64     `json:"bytesDone"`
	BytesTotal int64     `json:"bytesTotal"`
	Reason     string    `json:"reason,omitempty"`
	Started    time.Time `json:"started,omitzero"`
	Finished   time.Time `json:"finished,omitzero"`
}

// Stream is the status of an image stream whose state could not be read;
// it keeps showing its last good state.
type Stream struct {
	Name   string    `json:"name"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"since"`
}

// Report is the whole status.
type Report struct {
	Images  []Image  `json:"images"`
	Layers  []Layer  `json:"layers"`
	Streams []Stream `json:"streams,omitempty"`
	Mount   *Mount   `json:"mount,omitempty"`
}

// Mount is what the FUSE mount served, since the daemon started.
type Mount struct {
	// Passthrough says whether opens of committed images' files are
	// served by kernel FUSE passthrough.
	Passthrough bool `json:"passthrough"`
	// Reads counts READ requests for image files the daemon answered;
	// passthrough reads never reach it.
	Reads            uint64 `json:"reads"`
	LazyOpens        uint64 `json:"lazyOpens"`
	PassthroughOpens uint64 `json:"passthroughOpens"`
	// BackingFiles counts OSTree objects registered for open files now.
	BackingFiles int64 `json:"backingFiles"`
}

// Registry holds the status. It is safe for concurrent use.
type Registry struct {
	mu      sync.Mutex
	images  map[digest.Digest]*Image
	layers  map[digest.Digest]*layerEntry
	streams map[string]Stream
	// refsOf, when set, names the references of an image at snapshot
	// time, so that keeping names current costs nothing per change.
	refsOf func(digest.Digest) []string
	// mount, when set, reports the FUSE mount's counters at snapshot time.
	mount func() Mount
}

// SetMount makes Snapshot include the mount's counters from fn.
func (r *Registry) SetMount(fn func() Mount) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mount = fn
}

// SetRefs makes Snapshot ask fn for each image's references. fn is called
// without the registry's lock held, so it may take locks of its own that
// are held while the registry is updated.
func (r *Registry) SetRefs(fn func(digest.Digest) []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refsOf = fn
}

type layerEntry struct {
	Layer
	progress *atomic.Int64
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{images: map[digest.Digest]*Image{}, layers: map[digest.Digest]*layerEntry{}, streams: map[string]Stream{}}
}

// SetStreamError records why stream ("namespace/name") cannot be read
// now, or clears it when err is nil.
func (r *Registry) SetStreamError(stream string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.streams, stream)
		return
	}
	if old, ok := r.streams[stream]; ok && old.Reason == err.Error() {
		return
	}
	r.streams[stream] = Stream{Name: stream, Reason: err.Error(), Since: time.Now()}
}

// RemoveLayer forgets a layer.
func (r *Registry) RemoveLayer(d digest.Digest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.layers, d)
}

// UpdateImage applies fn to the image's status, creating it if needed.
func (r *Registry) UpdateImage(d digest.Digest, fn func(*Image)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	img, ok := r.images[d]
	if !ok {
		img = &Image{Digest: d, State: Pending}
		r.images[d] = img
	}
	fn(img)
}

// Image returns a copy of one image's status, without its references.
func (r *Registry) Image(d digest.Digest) (Image, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	img, ok := r.images[d]
	if !ok {
		return Image{}, false
	}
	return img.copy(), true
}

// SetMaterialization records the materialization of an image the registry
// knows; an image it no longer knows (dropped meanwhile) is left alone.
func (r *Registry) SetMaterialization(d digest.Digest, m Materialization) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if img, ok := r.images[d]; ok {
		img.Materialized = &m
	}
}

// RemoveImage forgets an image.
func (r *Registry) RemoveImage(d digest.Digest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.images, d)
}

// StartLayer records that a pass began and returns the counter the pass
// advances as it reads compressed bytes.
func (r *Registry) StartLayer(d digest.Digest, total int64) *atomic.Int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	progress := new(atomic.Int64)
	r.layers[d] = &layerEntry{
		Layer:    Layer{Digest: d, State: Indexing, BytesTotal: total, Started: time.Now()},
		progress: progress,
	}
	return progress
}

// UpdateLayer applies fn to the layer's status, creating it if needed.
func (r *Registry) UpdateLayer(d digest.Digest, fn func(*Layer)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.layers[d]
	if !ok {
		l = &layerEntry{Layer: Layer{Digest: d, State: Pending}}
		r.layers[d] = l
	}
	fn(&l.Layer)
	if l.State != Indexing && l.progress != nil {
		l.BytesDone = l.progress.Load()
		l.progress = nil
	}
}

// copy returns img with slices and pointers of its own.
func (img *Image) copy() Image {
	out := *img
	out.Refs = append([]string(nil), img.Refs...)
	out.Layers = append([]digest.Digest(nil), img.Layers...)
	if img.Materialized != nil {
		m := *img.Materialized
		out.Materialized = &m
	}
	return out
}

func (l *layerEntry) snapshot() Layer {
	out := l.Layer
	if l.progress != nil {
		out.BytesDone = l.progress.Load()
	}
	return out
}

// Snapshot returns the current status, sorted by digest. An image's bytes
// are summed over its layers, so progress shows while it is indexed.
func (r *Registry) Snapshot() Report {
	rep, refsOf := r.snapshot()
	r.mu.Lock()
	mount := r.mount
	r.mu.Unlock()
	if mount != nil {
		m := mount()
		rep.Mount = &m
	}
	if refsOf != nil {
		for i := range rep.Images {
			rep.Images[i].Refs = refsOf(rep.Images[i].Digest)
		}
	}
	return rep
}

func (r *Registry) snapshot() (Report, func(digest.Digest) []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{Images: []Image{}, Layers: []Layer{}}
	for _, l := range r.layers {
		rep.Layers = append(rep.Layers, l.snapshot())
	}
	for _, img := range r.images {
		out := img.copy()
		sort.Strings(out.Refs)
		if out.State == Indexing {
			out.BytesDone = 0
			for _, d := range img.Layers {
				if l, ok := r.layers[d]; ok {
					out.BytesDone += l.snapshot().BytesDone
				}
			}
		}
		rep.Images = append(rep.Images, out)
	}
	for _, st := range r.streams {
		rep.Streams = append(rep.Streams, st)
	}
	sort.Slice(rep.Streams, func(i, j int) bool { return rep.Streams[i].Name < rep.Streams[j].Name })
	sort.Slice(rep.Images, func(i, j int) bool { return rep.Images[i].Digest < rep.Images[j].Digest })
	sort.Slice(rep.Layers, func(i, j int) bool { return rep.Layers[i].Digest < rep.Layers[j].Digest })
	return rep, r.refsOf
}
