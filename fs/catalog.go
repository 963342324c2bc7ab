package fs

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Root is the catalog of a mount: namespaces hold image streams, and a
// stream holds tags and images. It is safe for concurrent use, also while
// the kernel is using the mount. A Root serves at most one mount at a time.
type Root struct {
	reader ContentReader
	opts   Options
	log    *slog.Logger

	// mounted is the live root node; invalidations go through it. It is
	// nil before Mount, when the kernel caches nothing to invalidate.
	mounted atomic.Pointer[rootNode]
	// images finds every image still shown or held by the kernel by its
	// serial; imageFS answers requests about image inodes through it.
	images *imageTable
	// stats counts how image files are served; passthrough says whether
	// the current mount lets them pass through (see Root.Passthrough).
	stats       counters
	passthrough atomic.Bool

	mu              sync.RWMutex
	namespaces      map[string]*namespaceEntry
	changed         time.Time
	nextCatalogIno  uint64
	nextImageSerial uint64
}

// namespaceEntry is what a namespace directory shows. Nodes keep a pointer
// to it, so a directory the kernel still holds after its namespace went away
// shows as empty rather than as a later namespace of the same name.
type namespaceEntry struct {
	ino     uint64
	changed time.Time
	streams map[string]*streamEntry
}

// streamEntry is what a stream directory shows.
type streamEntry struct {
	ino     uint64
	changed time.Time
	tags    map[string]tagEntry
	images  map[digest.Digest]*image
}

// tagEntry is one tag symlink. Every target a tag points at gets its own
// inode, so the kernel can cache a tag's link text like any immutable
// symlink: a moved tag is a new inode, not a changed one.
type tagEntry struct {
	ino     uint64
	target  digest.Digest
	changed time.Time
}

// NewRoot returns an empty catalog whose image files read their bytes
// from reader.
func NewRoot(reader ContentReader, opts Options) *Root {
	opts = opts.withDefaults()
	return &Root{
		reader:          reader,
		opts:            opts,
		log:             opts.Logger,
		images:          newImageTable(),
		namespaces:      map[string]*namespaceEntry{},
		changed:         time.Now(),
		nextCatalogIno:  catalogInoBase,
		nextImageSerial: 1,
	}
}

// staleName is a directory entry the kernel may cache with an outdated
// answer: name in the directory at path dir below the mount root.
type staleName struct {
	dir  []string
	name string
}

// SetStream replaces what a stream shows: tags maps tag names to manifest
// digests and images maps manifest digests to their merged views. A tag
// whose digest is missing from images is left out. An image that was
// already shown under the same digest keeps its inodes, so the kernel's
// caches of it stay valid; removed images stay readable through the files
// and directories that processes still hold.
func (r *Root) SetStream(namespace, stream string, tags map[string]digest.Digest, images map[digest.Digest]*index.View) {
	if !validName(namespace) || !validName(stream) {
		r.log.Error("refusing to show a stream with an unusable name",
			"namespace", namespace, "stream", stream)
		return
	}
	r.invalidate(r.setStream(namespace, stream, tags, images))
}

func (r *Root) setStream(namespace, stream string, tags map[string]digest.Digest, views map[digest.Digest]*index.View) []staleName {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()

	ns := r.namespaces[namespace]
	if ns == nil {
		ns = &namespaceEntry{ino: r.newCatalogIno(), changed: now, streams: map[string]*streamEntry{}}
		r.namespaces[namespace] = ns
		r.changed = now
	}
	st := ns.streams[stream]
	if st == nil {
		st = &streamEntry{ino: r.newCatalogIno(), changed: now,
			tags: map[string]tagEntry{}, images: map[digest.Digest]*image{}}
		ns.streams[stream] = st
		ns.changed = now
	}
	dir := []string{namespace, stream}
	var stale []staleName
	changed := false

	images := make(map[digest.Digest]*image, len(views))
	for d, view := range views {
		if old, ok := st.images[d]; ok {
			images[d] = old
			continue
		}
		img := r.newImage(namespace, stream, d, view)
		if img == nil {
			continue
		}
		images[d] = img
		changed = true
	}
	for d := range st.images {
		if _, ok := images[d]; !ok {
			stale = append(stale, staleName{dir, imageDirName(d)})
			changed = true
		}
	}

	newTags := make(map[string]tagEntry, len(tags))
	for tag, d := range tags {
		if !validName(tag) || strings.HasPrefix(tag, "@") {
			r.log.Error("refusing to show a tag with an unusable name",
				"namespace", namespace, "stream", stream, "tag", tag)
			continue
		}
		if images[d] == nil {
			r.log.Warn("leaving out a tag whose image is not shown",
				"namespace", namespace, "stream", stream, "tag", tag, "image", d)
			continue
		}
		if old, ok := st.tags[tag]; ok && old.target == d {
			newTags[tag] = old
			continue
		}
		newTags[tag] = tagEntry{ino: r.newCatalogIno(), target: d, changed: now}
		changed = true
	}
	for tag, old := range st.tags {
		if cur, ok := newTags[tag]; !ok || cur.ino != old.ino {
			stale = append(stale, staleName{dir, tag})
			changed = true
		}
	}

	st.tags, st.images = newTags, images
	if changed {
		st.changed = now
	}
	return stale
}

// newImage publishes view under a fresh serial, or returns nil when it
// cannot be shown.
func (r *Root) newImage(namespace, stream string, d digest.Digest, view *index.View) *image {
	if err := d.Validate(); err != nil || view == nil || view.Type(index.RootIno) != index.TypeDir {
		r.log.Error("refusing to show an image without a valid digest and view",
			"namespace", namespace, "stream", stream, "image", d, "err", err)
		return nil
	}
	if r.nextImageSerial > maxImageSerial {
		r.log.Error("out of image inode ranges; restart the daemon to show more images",
			"namespace", namespace, "stream", stream, "image", d)
		return nil
	}
	serial := r.nextImageSerial
	r.nextImageSerial++
	img := &image{
		digest:  d,
		serial:  serial,
		view:    view,
		reader:  r.reader,
		timeout: r.opts.ImageTimeout,
		log:     r.log.With("image", d.String()),
	}
	r.images.add(img)
	return img
}

// RemoveStream stops showing a stream. Processes that hold files or
// directories of its images keep them.
func (r *Root) RemoveStream(namespace, stream string) {
	r.invalidate(r.removeStream(namespace, stream))
}

func (r *Root) removeStream(namespace, stream string) []staleName {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.namespaces[namespace]
	if ns == nil || ns.streams[stream] == nil {
		return nil
	}
	delete(ns.streams, stream)
	ns.changed = now
	stale := []staleName{{[]string{namespace}, stream}}
	if len(ns.streams) == 0 {
		delete(r.namespaces, namespace)
		r.changed = now
		stale = append(stale, staleName{nil, namespace})
	}
	return stale
}

// invalidate drops the kernel's cached answers for names that changed, so
// that the next lookup sees the catalog as it is now. It must run without
// r.mu held: the kernel takes the directory's lock to invalidate, and a
// lookup holding that lock may be waiting for r.mu.
func (r *Root) invalidate(stale []staleName) {
	root := r.mounted.Load()
	if root == nil {
		return
	}
	for _, s := range stale {
		dir := root.EmbeddedInode()
		for _, name := range s.dir {
			if dir = dir.GetChild(name); dir == nil {
				break
			}
		}
		if dir == nil {
			// go-fuse forgets a directory only after the kernel did,
			// so the kernel caches nothing below it.
			continue
		}
		if errno := dir.NotifyEntry(s.name); errno != 0 && errno != syscall.ENOENT {
			r.log.Debug("invalidating a catalog entry",
				"dir", strings.Join(s.dir, "/"), "name", s.name, "err", errno)
		}
	}
}

func (r *Root) newCatalogIno() uint64 {
	r.nextCatalogIno++
	return r.nextCatalogIno
}

// validName reports whether name can be one path component.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 255 &&
		!strings.ContainsAny(name, "/\x00")
}

// imageDirName is the name of an image's directory in its stream: the
// manifest digest after an @, as in OpenShift's stream@sha256:… references.
func imageDirName(d digest.Digest) string { return "@" + d.String() }
