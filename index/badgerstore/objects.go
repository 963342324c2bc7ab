package badgerstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// objectKeyLen is how many bytes follow a layer's 'o' prefix: the offset
// and the metadata fingerprint, big-endian so that key order is
// (Offset, Meta) order.
const objectKeyLen = 16

func objectKey(prefix []byte, offset int64, meta uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+objectKeyLen)
	copy(k, prefix)
	k = binary.BigEndian.AppendUint64(k, uint64(offset))
	return binary.BigEndian.AppendUint64(k, meta)
}

func materializationKey(image digest.Digest) []byte { return append([]byte{'m'}, image...) }

// checkObjects refuses negative offsets before anything is written: they
// would sort after every real one under the unsigned key encoding, and
// no tar entry starts before its stream.
func checkObjects(objs []index.ContentObject) error {
	for _, o := range objs {
		if o.Offset < 0 {
			return fmt.Errorf("content object at offset %d: negative offset", o.Offset)
		}
	}
	return nil
}

// scanKeys calls fn with the key and value of every record under prefix,
// in key order. Both slices are valid only during the call.
func (s *Store) scanKeys(ctx context.Context, prefix []byte, fn func(k, v []byte) error) error {
	// A scan that finds nothing must still report a cancelled context.
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		n := 0
		for it.Rewind(); it.Valid(); it.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			item := it.Item()
			k := item.Key()
			if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// ContentObjects implements index.Store.
func (s *Store) ContentObjects(ctx context.Context, d digest.Digest, fn func(index.ContentObject) error) error {
	prefix := recordPrefix('o', d)
	err := s.scanKeys(ctx, prefix, func(k, v []byte) error {
		if len(k) != len(prefix)+objectKeyLen || len(v) != len(index.ObjectID{}) {
			return fmt.Errorf("content object record of %d key and %d value bytes: %w", len(k), len(v), ErrCorrupt)
		}
		o := index.ContentObject{
			Offset: int64(binary.BigEndian.Uint64(k[len(prefix):])),
			Meta:   binary.BigEndian.Uint64(k[len(prefix)+8:]),
		}
		if o.Offset < 0 {
			return fmt.Errorf("content object record at offset %d: %w", o.Offset, ErrCorrupt)
		}
		copy(o.ID[:], v)
		return fn(o)
	})
	if err != nil {
		return fmt.Errorf("reading content objects of layer %s: %w", d, err)
	}
	return nil
}

// ContentObject implements index.Store.
func (s *Store) ContentObject(_ context.Context, d digest.Digest, offset int64, meta uint64) (index.ObjectID, error) {
	var id index.ObjectID
	if offset < 0 {
		return id, fmt.Errorf("content object of layer %s at offset %d: %w", d, offset, index.ErrNotFound)
	}
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(objectKey(recordPrefix('o', d), offset, meta))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return index.ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != len(id) {
				return fmt.Errorf("record of %d bytes: %w", len(v), ErrCorrupt)
			}
			copy(id[:], v)
			return nil
		})
	})
	if err != nil {
		return index.ObjectID{}, fmt.Errorf("reading content object of layer %s at offset %d, meta %#x: %w", d, offset, meta, err)
	}
	return id, nil
}

// PutContentObjects implements index.Store. The objects go through a
// write batch, which commits whenever Badger's transaction size limit is
// reached, so they are not recorded atomically: a failure may leave some
// of them, which a retry replaces.
func (s *Store) PutContentObjects(ctx context.Context, d digest.Digest, objs []index.ContentObject) (err error) {
	if err := checkObjects(objs); err != nil {
		return fmt.Errorf("layer %s: %w", d, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("recording content objects of layer %s: %w", d, err)
	}
	// A Badger panic is a failure of the state directory, like any other
	// failed write, so it is reported as one.
	var panicked error
	defer func() {
		if panicked != nil {
			err = &index.StoreError{Layer: d, Err: panicked}
		}
	}()
	defer recoverBadger("recording content objects of layer", d, &panicked)
	fail := func(err error) error {
		return &index.StoreError{Layer: d, Err: fmt.Errorf("recording %d content objects: %w", len(objs), err)}
	}
	if len(objs) == 0 {
		return nil
	}
	if err := s.space.forWrite(); err != nil {
		return fail(err)
	}
	prefix := recordPrefix('o', d)
	recLen := len(prefix) + objectKeyLen + len(index.ObjectID{})
	// One allocation for every key and value: the batch keeps the slices
	// until it commits, so they must not be reused.
	buf := make([]byte, 0, len(objs)*recLen)
	wb := s.db.NewWriteBatch()
	unchecked := 0
	for i, o := range objs {
		if i%1024 == 1023 {
			if err := ctx.Err(); err != nil {
				wb.Cancel()
				return fmt.Errorf("recording content objects of layer %s: %w", d, err)
			}
		}
		if unchecked += recLen; unchecked >= spaceCheckBytes {
			unchecked = 0
			if err := s.space.forWrite(); err != nil {
				wb.Cancel()
				return fail(err)
			}
		}
		start := len(buf)
		buf = append(buf, prefix...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(o.Offset))
		buf = binary.BigEndian.AppendUint64(buf, o.Meta)
		buf = append(buf, o.ID[:]...)
		mid := start + len(prefix) + objectKeyLen
		if err := wb.Set(buf[start:mid:mid], buf[mid:len(buf):len(buf)]); err != nil {
			wb.Cancel()
			return fail(err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fail(err)
	}
	return nil
}

// Materialization implements index.Store.
func (s *Store) Materialization(_ context.Context, image digest.Digest) (index.Materialization, error) {
	var m index.Materialization
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(materializationKey(image))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return index.ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return decodeMaterialization(v, &m) })
	})
	if err != nil {
		return index.Materialization{}, fmt.Errorf("reading materialization of image %s: %w", image, err)
	}
	return m, nil
}

func decodeMaterialization(v []byte, m *index.Materialization) error {
	if err := json.Unmarshal(v, m); err != nil {
		return fmt.Errorf("materialization record: %w: %w", ErrCorrupt, err)
	}
	return nil
}

// PutMaterialization implements index.Store. The store syncs every write
// (SyncWrites), so the record is durable once Update returns.
//
// Failures are index.StoreError naming the image, so that callers treat
// them as they treat a layer's store failures.
func (s *Store) PutMaterialization(_ context.Context, image digest.Digest, m index.Materialization) (err error) {
	if err := image.Validate(); err != nil {
		return fmt.Errorf("recording materialization of image %q: %w", image, err)
	}
	var panicked error
	defer func() {
		if panicked != nil {
			err = &index.StoreError{Image: image, Err: panicked}
		}
	}()
	defer recoverBadger("recording materialization of image", image, &panicked)
	fail := func(err error) error {
		return &index.StoreError{Image: image, Err: fmt.Errorf("recording its materialization: %w", err)}
	}
	v, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding materialization of image %s: %w", image, err)
	}
	if err := s.space.forWrite(); err != nil {
		return fail(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(materializationKey(image), v) }); err != nil {
		return fail(err)
	}
	return nil
}

// DeleteMaterialization implements index.Store. Like DeleteLayer, it
// writes only a tombstone, so it may go further into the free-space
// reserve than a write.
func (s *Store) DeleteMaterialization(_ context.Context, image digest.Digest) (err error) {
	var panicked error
	defer func() {
		if panicked != nil {
			err = &index.StoreError{Image: image, Err: panicked}
		}
	}()
	defer recoverBadger("deleting materialization of image", image, &panicked)
	fail := func(err error) error {
		return &index.StoreError{Image: image, Err: fmt.Errorf("deleting its materialization: %w", err)}
	}
	if err := s.space.forDelete(); err != nil {
		return fail(err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(materializationKey(image)) }); err != nil {
		return fail(err)
	}
	return nil
}

// Materializations implements index.Store.
func (s *Store) Materializations(ctx context.Context, fn func(digest.Digest, index.Materialization) error) error {
	err := s.scanKeys(ctx, []byte{'m'}, func(k, v []byte) error {
		image := digest.Digest(k[1:])
		var m index.Materialization
		if err := decodeMaterialization(v, &m); err != nil {
			return fmt.Errorf("image %s: %w", image, err)
		}
		return fn(image, m)
	})
	if err != nil {
		return fmt.Errorf("reading materializations: %w", err)
	}
	return nil
}
