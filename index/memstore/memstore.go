// Package memstore is an in-memory index.Store, for tests and for running
// without a state directory. It follows the same visibility rules as the
// durable store: nothing of a layer is readable before its writer commits.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Store is an in-memory index.Store. The zero value is not usable; call New.
type Store struct {
	mu     sync.RWMutex
	layers map[digest.Digest]*layer
	// objects belong to a layer's digest, not to a committed pass, as in
	// the durable store: they may be recorded for a layer never indexed.
	objects map[digest.Digest]map[objectKey]index.ObjectID
	images  map[digest.Digest]index.Materialization
}

type layer struct {
	info    index.LayerInfo
	entries []index.Entry
	spans   []index.Span
}

var _ index.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store {
	return &Store{
		layers:  map[digest.Digest]*layer{},
		objects: map[digest.Digest]map[objectKey]index.ObjectID{},
		images:  map[digest.Digest]index.Materialization{},
	}
}

func (s *Store) complete(d digest.Digest) (*layer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.layers[d]
	if !ok {
		return nil, fmt.Errorf("layer %s: %w", d, index.ErrNotFound)
	}
	return l, nil
}

// Layer implements index.Store.
func (s *Store) Layer(_ context.Context, d digest.Digest) (index.LayerInfo, error) {
	l, err := s.complete(d)
	if err != nil {
		return index.LayerInfo{}, err
	}
	return l.info, nil
}

// Entries implements index.Store.
func (s *Store) Entries(ctx context.Context, d digest.Digest, fn func(index.Entry) error) error {
	l, err := s.complete(d)
	if err != nil {
		return err
	}
	for _, e := range l.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// Spans implements index.Store.
func (s *Store) Spans(_ context.Context, d digest.Digest) ([]index.Span, error) {
	l, err := s.complete(d)
	if err != nil {
		return nil, err
	}
	out := make([]index.Span, len(l.spans))
	for i, sp := range l.spans {
		sp.Window = nil
		out[i] = sp
	}
	return out, nil
}

// SpanWindow implements index.Store.
func (s *Store) SpanWindow(_ context.Context, d digest.Digest, i int) ([]byte, error) {
	l, err := s.complete(d)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= len(l.spans) {
		return nil, fmt.Errorf("layer %s: span %d of %d: %w", d, i, len(l.spans), index.ErrNotFound)
	}
	return l.spans[i].Window, nil
}

// NewLayerWriter implements index.Store. Like the durable store, it drops
// the layer's content objects: they name entries of the pass being
// replaced.
func (s *Store) NewLayerWriter(_ context.Context, d digest.Digest) (index.LayerWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objects, d)
	return &writer{store: s, digest: d}, nil
}

// DeleteLayer implements index.Store.
func (s *Store) DeleteLayer(_ context.Context, d digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.layers, d)
	delete(s.objects, d)
	return nil
}

// Layers implements index.Store.
func (s *Store) Layers(ctx context.Context, fn func(index.LayerInfo) error) error {
	s.mu.RLock()
	infos := make([]index.LayerInfo, 0, len(s.layers))
	for _, l := range s.layers {
		infos = append(infos, l.info)
	}
	s.mu.RUnlock()
	slices.SortFunc(infos, func(a, b index.LayerInfo) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// Close implements index.Store.
func (s *Store) Close() error { return nil }

type writer struct {
	store  *Store
	digest digest.Digest
	layer  layer
	done   bool
}

var errWriterDone = errors.New("layer writer already committed or aborted")

func (w *writer) AddEntry(e index.Entry) error {
	if w.done {
		return errWriterDone
	}
	e.Xattrs = append([]index.Xattr(nil), e.Xattrs...)
	w.layer.entries = append(w.layer.entries, e)
	return nil
}

func (w *writer) AddSpan(sp index.Span) error {
	if w.done {
		return errWriterDone
	}
	sp.Window = append([]byte(nil), sp.Window...)
	w.layer.spans = append(w.layer.spans, sp)
	return nil
}

func (w *writer) Commit(info index.LayerInfo) error {
	if w.done {
		return errWriterDone
	}
	w.done = true
	info.Digest, info.Entries, info.Spans = w.digest, int64(len(w.layer.entries)), int64(len(w.layer.spans))
	w.layer.info = info
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	w.store.layers[w.digest] = &w.layer
	return nil
}

func (w *writer) Abort() error {
	w.done = true
	return nil
}
