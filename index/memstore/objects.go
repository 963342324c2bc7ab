package memstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

type objectKey struct {
	offset int64
	meta   uint64
}

// ContentObjects implements index.Store. It calls fn on a sorted copy,
// without the lock held, so fn may use the store.
func (s *Store) ContentObjects(ctx context.Context, d digest.Digest, fn func(index.ContentObject) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reading content objects of layer %s: %w", d, err)
	}
	s.mu.RLock()
	objs := make([]index.ContentObject, 0, len(s.objects[d]))
	for k, id := range s.objects[d] {
		objs = append(objs, index.ContentObject{Offset: k.offset, Meta: k.meta, ID: id})
	}
	s.mu.RUnlock()
	slices.SortFunc(objs, func(a, b index.ContentObject) int {
		return cmp.Or(cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.Meta, b.Meta))
	})
	for i, o := range objs {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("reading content objects of layer %s: %w", d, err)
			}
		}
		if err := fn(o); err != nil {
			return fmt.Errorf("reading content objects of layer %s: %w", d, err)
		}
	}
	return nil
}

// ContentObject implements index.Store.
func (s *Store) ContentObject(_ context.Context, d digest.Digest, offset int64, meta uint64) (index.ObjectID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.objects[d][objectKey{offset, meta}]
	if !ok {
		return index.ObjectID{}, fmt.Errorf("content object of layer %s at offset %d, meta %#x: %w", d, offset, meta, index.ErrNotFound)
	}
	return id, nil
}

// PutContentObjects implements index.Store. It refuses negative offsets,
// as the durable store does, whose key encoding cannot order them.
func (s *Store) PutContentObjects(ctx context.Context, d digest.Digest, objs []index.ContentObject) error {
	for _, o := range objs {
		if o.Offset < 0 {
			return fmt.Errorf("layer %s: content object at offset %d: negative offset", d, o.Offset)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recording content objects of layer %s: %w", d, err)
	}
	if len(objs) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.objects[d]
	if m == nil {
		m = make(map[objectKey]index.ObjectID, len(objs))
		s.objects[d] = m
	}
	for _, o := range objs {
		m[objectKey{o.Offset, o.Meta}] = o.ID
	}
	return nil
}

// Materialization implements index.Store.
func (s *Store) Materialization(_ context.Context, image digest.Digest) (index.Materialization, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.images[image]
	if !ok {
		return index.Materialization{}, fmt.Errorf("materialization of image %s: %w", image, index.ErrNotFound)
	}
	return m, nil
}

// PutMaterialization implements index.Store. It refuses an invalid
// digest, as the durable store does.
func (s *Store) PutMaterialization(_ context.Context, image digest.Digest, m index.Materialization) error {
	if err := image.Validate(); err != nil {
		return fmt.Errorf("recording materialization of image %q: %w", image, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.images[image] = m
	return nil
}

// DeleteMaterialization implements index.Store.
func (s *Store) DeleteMaterialization(_ context.Context, image digest.Digest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.images, image)
	return nil
}

type imageRecord struct {
	image digest.Digest
	m     index.Materialization
}

// Materializations implements index.Store. Like ContentObjects, it calls
// fn on a sorted copy without the lock held.
func (s *Store) Materializations(ctx context.Context, fn func(digest.Digest, index.Materialization) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reading materializations: %w", err)
	}
	s.mu.RLock()
	recs := make([]imageRecord, 0, len(s.images))
	for image, m := range s.images {
		recs = append(recs, imageRecord{image, m})
	}
	s.mu.RUnlock()
	slices.SortFunc(recs, func(a, b imageRecord) int { return strings.Compare(string(a.image), string(b.image)) })
	for i, r := range recs {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("reading materializations: %w", err)
			}
		}
		if err := fn(r.image, r.m); err != nil {
			return fmt.Errorf("reading materializations: %w", err)
		}
	}
	return nil
}
