// Package ocidir is the source that needs no cluster: a directory whose
// ROOT/<namespace>/<stream>/ subdirectories are OCI image layouts. Tags are
// the org.opencontainers.image.ref.name annotations of each layout's
// index.json. The tree is watched, so tags that appear, move or vanish
// show up without a restart.
package ocidir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/explodefs/explodefs/explode/blob/ocilayout"
	"github.com/explodefs/explodefs/explode/source"
	"github.com/explodefs/explodefs/index"
)

// Source watches a directory of OCI layouts.
type Source struct {
	root     string
	logger   *slog.Logger
	resync   time.Duration
	debounce time.Duration
}

var _ source.Source = (*Source)(nil)

// Option tunes a Source.
type Option func(*Source)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.logger = l } }

// WithResync sets how often the whole tree is rescanned even without
// filesystem events, as a safety net for missed events (e.g. on NFS).
func WithResync(d time.Duration) Option { return func(s *Source) { s.resync = d } }

// New returns a Source for root.
func New(root string, opts ...Option) *Source {
	s := &Source{root: root, logger: slog.Default(), resync: 30 * time.Second, debounce: 100 * time.Millisecond}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Run scans the tree, reports every stream, and then reports changes until
// ctx ends.
func (s *Source) Run(ctx context.Context, sink source.Sink) error {
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return fmt.Errorf("oci-dir source %s: %w", s.root, err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("oci-dir source %s: watching: %w", s.root, err)
	}
	defer w.Close()

	known := map[string]source.Stream{}
	failed := map[string]string{} // stream key -> the error last reported
	watched := map[string]bool{}
	scan := func() {
		s.watchTree(w, watched)
		current, broken := s.scan()
		for key, err := range broken {
			// Keep the last good state of a stream whose index.json
			// cannot be read right now, and say why once.
			if old, ok := known[key]; ok {
				current[key] = old
			}
			if failed[key] != err.Error() {
				ns, name, _ := strings.Cut(key, "/")
				sink.StreamFailed(ns, name, err)
				failed[key] = err.Error()
			}
		}
		for key, st := range current {
			_, isBroken := broken[key]
			_, wasBroken := failed[key]
			if old, ok := known[key]; !ok || !old.Equal(st) || (wasBroken && !isBroken) {
				sink.StreamChanged(st) // also clears a reported failure
			}
		}
		for key := range failed {
			_, isBroken := broken[key]
			_, isKnown := known[key]
			if _, ok := current[key]; !ok && !isBroken && !isKnown {
				// A stream that never read well went away.
				ns, name, _ := strings.Cut(key, "/")
				sink.StreamRemoved(ns, name)
			}
			if !isBroken {
				delete(failed, key)
			}
		}
		for key, old := range known {
			if _, ok := current[key]; !ok {
				sink.StreamRemoved(old.Namespace, old.Name)
			}
		}
		known = current
	}
	scan()
	sink.Synced()

	resync := time.NewTicker(s.resync)
	defer resync.Stop()
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("oci-dir source: watcher closed")
			}
			if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
				delete(watched, ev.Name)
			}
			// Writers replace index.json and add blobs in bursts;
			// one scan after the burst sees the final state.
			if debounce == nil {
				debounce = time.After(s.debounce)
			}
		case err := <-w.Errors:
			s.logger.Warn("oci-dir watch error; relying on resync", "root", s.root, "err", err)
		case <-debounce:
			debounce = nil
			scan()
		case <-resync.C:
			scan()
		}
	}
}

// watchTree adds watches on the root, namespace and stream directories.
func (s *Source) watchTree(w *fsnotify.Watcher, watched map[string]bool) {
	add := func(dir string) {
		if watched[dir] {
			return
		}
		if err := w.Add(dir); err != nil {
			s.logger.Warn("cannot watch directory", "dir", dir, "err", err)
			return
		}
		watched[dir] = true
	}
	add(s.root)
	for _, ns := range subdirs(s.root) {
		add(ns)
		for _, st := range subdirs(ns) {
			add(st)
		}
	}
}

func subdirs(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out
}

// scan reads every layout. Layouts that cannot be read now are returned
// apart with their error, so one bad stream never hides the others and a
// layout caught mid-rewrite keeps its last good state.
func (s *Source) scan() (streams map[string]source.Stream, broken map[string]error) {
	streams, broken = map[string]source.Stream{}, map[string]error{}
	for _, nsDir := range subdirs(s.root) {
		for _, stDir := range subdirs(nsDir) {
			ns, name := filepath.Base(nsDir), filepath.Base(stDir)
			if err := source.ValidateNames(ns, name); err != nil {
				s.logger.Warn("skipping layout", "dir", stDir, "err", err)
				continue
			}
			st, err := s.readLayout(ns, name, stDir)
			if errors.Is(err, fs.ErrNotExist) {
				continue // not (yet) a layout
			}
			if err != nil {
				s.logger.Warn("cannot read layout; keeping its last good state", "dir", stDir, "err", err)
				broken[ns+"/"+name] = err
				continue
			}
			streams[st.Key()] = st
		}
	}
	return streams, broken
}

func (s *Source) readLayout(ns, name, dir string) (source.Stream, error) {
	raw, err := readIndexJSON(filepath.Join(dir, "index.json"))
	if err != nil {
		return source.Stream{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return source.Stream{}, fmt.Errorf("parsing %s/index.json: %w", dir, err)
	}
	st := source.Stream{Namespace: ns, Name: name, Tags: map[string]digest.Digest{}, Blobs: ocilayout.New(dir)}
	seen := map[digest.Digest]bool{}
	for _, m := range idx.Manifests {
		if err := m.Digest.Validate(); err != nil {
			s.logger.Warn("skipping manifest with a bad digest", "dir", dir, "digest", m.Digest, "err", err)
			continue
		}
		if !seen[m.Digest] {
			seen[m.Digest] = true
			st.History = append(st.History, m.Digest)
		}
		tag, ok := m.Annotations[ocispec.AnnotationRefName]
		if !ok {
			continue
		}
		if err := source.ValidateTag(tag); err != nil {
			s.logger.Warn("skipping tag", "dir", dir, "err", err)
			continue
		}
		st.Tags[tag] = m.Digest
	}
	return st, nil
}

// maxIndexJSON bounds what is read of an index.json; real ones list a few
// manifests and stay far below it.
const maxIndexJSON = 16 << 20

// readIndexJSON reads a layout's index.json, refusing what is not a
// regular file (a FIFO would block the source) or is too large.
func readIndexJSON(name string) ([]byte, error) {
	f, fi, err := index.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > maxIndexJSON {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", name, fi.Size(), maxIndexJSON)
	}
	return io.ReadAll(io.LimitReader(f, maxIndexJSON))
}
