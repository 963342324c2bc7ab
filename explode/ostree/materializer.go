// Package ostree materializes every published image as an OSTree commit in
// the background, straight from the index: the merged view gives the tree,
// the lazy reader gives the bytes, and libostree (through the libostree
// leaf package) stores them. Nothing is extracted to a temporary
// directory, and OSTree does no whiteout processing, because the view has
// already applied the whiteouts.
//
// Refs follow the published catalog: explodefs/images/sha256/<hex> names
// each committed image, and explodefs/tags/<namespace>/<stream>/<tag> each
// tag that shows one. The state of every image's materialization lives in
// the index (index.Materialization), written before and after each
// commit, so a crash leaves no ref to a half-written commit and a restart
// redoes what was running.
//
// Once an image is committed, Backing hands the FUSE layer the OSTree
// object that holds a file's bytes, so that the kernel reads it directly
// (FUSE passthrough) and reads stop costing the daemon anything.
package ostree

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/explode/ostree/libostree"
	"github.com/explodefs/explodefs/explode/status"
	"github.com/explodefs/explodefs/index"
)

// Ref prefixes, as the design's contract names them.
const (
	ImageRefPrefix = "explodefs/images/sha256/"
	TagRefPrefix   = "explodefs/tags/"
)

// ImageRef returns the ref of an image's commit.
func ImageRef(image digest.Digest) string { return ImageRefPrefix + image.Encoded() }

// TagRef returns the ref of a tag.
func TagRef(namespace, stream, tag string) string {
	return TagRefPrefix + namespace + "/" + stream + "/" + tag
}

// ContentReader reads layers' uncompressed bytes and lets background work
// yield to reads users wait for; index.Reader implements it.
type ContentReader interface {
	index.LayerReader
	YieldToForeground(ctx context.Context, quiet, max time.Duration) (time.Duration, error)
}

// Wants tells the materializer what the sources still name, including
// images that are not ready yet, so that cleaning up never deletes the
// refs of an image a restart has not announced again. The controller
// implements it.
type Wants interface {
	// Ready reports whether the sources delivered their first full
	// state; before that nothing is deleted.
	Ready() bool
	WantsImage(image digest.Digest) bool
	WantsTag(namespace, stream, tag string) bool
}

// Options tunes a Materializer.
type Options struct {
	// RepoPath is the OSTree repository; created if missing, in bare mode
	// as root and bare-user otherwise.
	RepoPath string
	// RetryBackoff is the first wait before a failed image is tried
	// again; it doubles up to RetryMax.
	RetryBackoff, RetryMax time.Duration
	// YieldQuiet and YieldMax tune how background work gives way to
	// foreground reads (see index.Reader.YieldToForeground).
	YieldQuiet, YieldMax time.Duration
	// Writers is how many files are hashed and written at once;
	// DefaultWriters when zero.
	Writers int
	// Nice is the scheduling niceness of the threads that hash and write
	// objects, so that the kernel prefers FUSE readers. 10 when zero.
	Nice int
	// Commits, when set, hears of every commit that finished, for
	// metrics.
	Commits CommitObserver
	Logger  *slog.Logger
}

// CommitObserver hears how long each image's commit took. A commit cut
// short by shutdown, or skipped because the image was committed before,
// is not reported.
type CommitObserver interface {
	// ObserveCommit is given the time from taking the image off the
	// queue to its outcome, and the error it failed with (nil when it
	// was committed).
	ObserveCommit(took time.Duration, err error)
}

// Defaults for Options.
const (
	defaultRetryBackoff = time.Minute
	defaultRetryMax     = 30 * time.Minute
	defaultYieldQuiet   = 2 * time.Millisecond
	defaultYieldMax     = time.Second
	defaultNice         = 10
)

// DefaultWriters is two: one image's files are hashed and written on two
// threads while a third reads them ahead, which keeps two cores busy.
const DefaultWriters = 2

// Materializer writes published images into an OSTree repository.
type Materializer struct {
	opts   Options
	store  index.Store
	reader ContentReader
	status *status.Registry
	log    *slog.Logger
	repo   *libostree.Repo
	// verifier is a second handle on the repository, so that verifying an
	// object for a FUSE open never waits behind a commit.
	verifier *libostree.Repo
	wants    Wants

	mu      sync.Mutex
	streams map[string]streamState
	images  map[digest.Digest]*imageState
	queue   []digest.Digest
	wake    chan struct{}
	gcCalls chan gcCall

	verifiedMu sync.Mutex
	verified   map[libostree.Checksum]bool
}

type streamState struct {
	namespace, name string
	tags            map[string]digest.Digest
	images          []digest.Digest
}

type imageState struct {
	view   *index.View
	state  index.MaterialState
	commit libostree.Checksum
	reason string
	queued bool
	// holders counts the streams that show the image.
	holders int
	fails   int
	retryAt time.Time
}

// New opens (or creates) the repository and returns a Materializer. Call
// Run to start it and SetWants before the first GC.
func New(store index.Store, reader ContentReader, reg *status.Registry, opts Options) (*Materializer, error) {
	if opts.RepoPath == "" {
		return nil, errors.New("materializer: no OSTree repo path")
	}
	if opts.RetryBackoff <= 0 {
		opts.RetryBackoff = defaultRetryBackoff
	}
	if opts.RetryMax < opts.RetryBackoff {
		opts.RetryMax = max(defaultRetryMax, opts.RetryBackoff)
	}
	if opts.YieldQuiet <= 0 {
		opts.YieldQuiet = defaultYieldQuiet
	}
	if opts.YieldMax <= 0 {
		opts.YieldMax = defaultYieldMax
	}
	if opts.Nice == 0 {
		opts.Nice = defaultNice
	}
	if opts.Writers <= 0 {
		opts.Writers = DefaultWriters
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	mode := libostree.Bare
	if os.Geteuid() != 0 {
		mode = libostree.BareUser
	}
	if err := os.MkdirAll(filepath.Dir(opts.RepoPath), 0o755); err != nil {
		return nil, fmt.Errorf("materializer: %w", err)
	}
	repo, err := libostree.Create(opts.RepoPath, mode, libostree.Writers(opts.Writers), libostree.Nice(opts.Nice))
	if err != nil {
		return nil, fmt.Errorf("materializer: %w", err)
	}
	if repo.Mode() == libostree.Bare && os.Geteuid() != 0 {
		repo.Close()
		return nil, fmt.Errorf("materializer: ostree repo %s is in bare mode, which only root can write", opts.RepoPath)
	}
	verifier, err := libostree.Open(opts.RepoPath)
	if err != nil {
		repo.Close()
		return nil, fmt.Errorf("materializer: %w", err)
	}
	return &Materializer{
		opts: opts, store: store, reader: reader, status: reg, log: opts.Logger,
		repo: repo, verifier: verifier,
		streams:  map[string]streamState{},
		images:   map[digest.Digest]*imageState{},
		wake:     make(chan struct{}, 1),
		gcCalls:  make(chan gcCall),
		verified: map[libostree.Checksum]bool{},
	}, nil
}

// SetWants connects the materializer to what the sources name.
func (m *Materializer) SetWants(w Wants) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wants = w
}

// Repo returns the repository's path and mode.
func (m *Materializer) Repo() (string, libostree.Mode) { return m.repo.Path(), m.repo.Mode() }

// Close releases the repository. Call it after Run returned.
func (m *Materializer) Close() error {
	m.verifier.Close()
	return m.repo.Close()
}

// SetStream implements the controller's Publisher: the stream shows tags,
// and images are its ready images. It only records the change and wakes
// the worker, because the controller calls it with its own lock held.
func (m *Materializer) SetStream(namespace, stream string, tags map[string]digest.Digest, images map[digest.Digest]*index.View) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + stream
	old := m.streams[key]
	st := streamState{namespace: namespace, name: stream, tags: maps.Clone(tags)}
	for d, v := range images {
		st.images = append(st.images, d)
		img, ok := m.images[d]
		if !ok {
			img = &imageState{state: index.MaterialPending}
			m.images[d] = img
			m.enqueue(d, img)
			m.status.SetMaterialization(d, img.statusOf())
		}
		img.view = v
		img.holders++
	}
	m.streams[key] = st
	m.release(old.images)
	m.signal()
}

// RemoveStream implements the controller's Publisher.
func (m *Materializer) RemoveStream(namespace, stream string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := namespace + "/" + stream
	m.release(m.streams[key].images)
	delete(m.streams, key)
	m.signal()
}

// release drops a stream's hold on images, and forgets those no stream
// shows any more; the worker deletes their refs once the sources no
// longer want them.
func (m *Materializer) release(images []digest.Digest) {
	for _, d := range images {
		img, ok := m.images[d]
		if !ok {
			continue
		}
		if img.holders--; img.holders > 0 {
			continue
		}
		delete(m.images, d)
		if img.queued {
			m.queue = slices.DeleteFunc(m.queue, func(q digest.Digest) bool { return q == d })
		}
	}
}

// Queued returns how many images wait for a commit: new ones, and failed
// ones waiting to be tried again. The image being committed is not
// counted.
func (m *Materializer) Queued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.queue)
}

func (m *Materializer) enqueue(d digest.Digest, img *imageState) {
	if !img.queued {
		img.queued = true
		m.queue = append(m.queue, d)
	}
}

func (m *Materializer) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// statusOf returns an image's materialization as the status shows it.
func (img *imageState) statusOf() status.Materialization {
	out := status.Materialization{State: string(img.state), Reason: img.reason}
	if img.state == index.MaterialDone {
		out.Commit = img.commit.String()
	}
	return out
}

func sortedTags(streams map[string]streamState, d digest.Digest) []string {
	var out []string
	for _, st := range streams {
		for tag, target := range st.tags {
			if target == d {
				out = append(out, st.namespace+"/"+st.name+":"+tag)
			}
		}
	}
	slices.Sort(out)
	return out
}

// parseTagRef splits a tag ref into namespace, stream and tag.
func parseTagRef(ref string) (namespace, stream, tag string, ok bool) {
	rest, ok := strings.CutPrefix(ref, TagRefPrefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}
