// Package badgerstore is the durable index.Store, kept in an embedded
// Badger database under the daemon's state directory.
//
// Keys are grouped by layer so that one prefix scan reads a layer back;
// an image's materialization has a key of its own:
//
//	l<digest>                          LayerInfo, written last: the completion marker
//	e<digest>/<seq u32>                entry, in tar order
//	s<digest>/<idx u32>                span, in stream order
//	w<digest>/<idx u32>                span window (flate-compressed)
//	o<digest>/<offset u64><meta u64>   content object ID (32 bytes)
//	m<image digest>                    Materialization, as JSON
//	v                                  schema version of all of the above
//
// Integers are big-endian, so key order is numeric order: a layer's
// content objects scan in (Offset, Meta) order, and materializations in
// image digest order.
//
// A layer's marker is written only after its entries and spans are synced,
// and it records their counts, which reads check, so a torn write after a
// power loss is detected instead of served. Content objects are not
// counted by the marker: they are recorded after the pass, by whoever
// materializes the layer, and belong to the layer's digest whether or not
// it is complete, so deleting or indexing the layer again drops them too.
package badgerstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
)

// Store is an index.Store backed by Badger.
type Store struct {
	db    *badger.DB
	space spaceGuard
	// beforeMarker, set by tests, runs when a layer's records are written
	// and its marker is not.
	beforeMarker func(digest.Digest) error
}

var _ index.Store = (*Store)(nil)

// ErrCorrupt is index.ErrCorrupt, under the name this package gave it
// before the index package had one. Every damage this store detects (a
// marker, entry or span that does not decode, or records that do not
// match the marker's counts) wraps it, so that the caller deletes the
// layer and indexes it again.
var ErrCorrupt = index.ErrCorrupt

// Option tunes Open.
type Option func(*config)

type config struct {
	badger  badger.Options
	reserve int64
}

// WithLogger routes Badger's own logging to l at warning level and above.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.badger.Logger = badgerLogger{l} }
}

// Open opens or creates the database in dir.
func Open(dir string, opts ...Option) (*Store, error) {
	c := config{badger: badger.DefaultOptions(dir).
		WithLogger(nil).
		// Memory is a product goal; Badger's defaults buffer up to
		// 5 x 64 MiB of memtables and a 256 MiB block cache.
		WithMemTableSize(16 << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(32 << 20).
		WithNumCompactors(2).
		// Without it, Badger syncs a memtable's write-ahead log only when
		// asked (DB.Sync, which reaches the active memtable alone) and a
		// rotated one never: a power loss could keep a completion marker
		// and lose records of its layer written to a memtable rotated out
		// just before it. With it, every committed batch is on disk before
		// the next is written, so the marker, written last, is durable only
		// after every record of its layer is.
		WithSyncWrites(true)}
	for _, opt := range opts {
		opt(&c)
	}
	o := c.badger
	if c.reserve <= 0 {
		c.reserve = reserveMemtables * o.MemTableSize
	}
	db, err := badger.Open(o)
	if err != nil {
		return nil, fmt.Errorf("opening index database in %s: %w", dir, err)
	}
	s := &Store{db: db, space: spaceGuard{dir: dir, reserve: uint64(c.reserve)}}
	if err := s.space.forWrite(); err != nil && o.Logger != nil {
		o.Logger.Warningf("layer passes will fail until space is freed: %v", err)
	}
	if err := s.checkSchema(o.Logger); err != nil {
		db.Close()
		return nil, fmt.Errorf("index database in %s: %w", dir, err)
	}
	return s, nil
}

// schemaVersion changes whenever a record's encoding does.
const schemaVersion = "2"

var schemaKey = []byte("v")

// checkSchema drops an index written in another schema: layers are cheap
// to index again, and guessing at an old encoding is not worth the risk
// of serving wrong bytes.
func (s *Store) checkSchema(log badger.Logger) error {
	var found string
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(schemaKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		found = string(v)
		return err
	})
	if err != nil {
		return err
	}
	if found == schemaVersion {
		return nil
	}
	if found != "" || s.hasPrefix([]byte{'l'}) {
		if log != nil {
			log.Warningf("index schema %q is not %q; dropping it, layers will be indexed again", found, schemaVersion)
		}
		if err := s.db.DropAll(); err != nil {
			return fmt.Errorf("dropping index of schema %q: %w", found, err)
		}
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(schemaKey, []byte(schemaVersion)) })
}

// Close implements index.Store.
func (s *Store) Close() error { return s.db.Close() }

func markerKey(d digest.Digest) []byte { return append([]byte{'l'}, d...) }

func recordPrefix(kind byte, d digest.Digest) []byte {
	p := make([]byte, 0, 2+len(d))
	p = append(p, kind)
	p = append(p, d...)
	return append(p, '/')
}

func recordKey(kind byte, d digest.Digest, n uint32) []byte {
	return binary.BigEndian.AppendUint32(recordPrefix(kind, d), n)
}

// Layer implements index.Store.
func (s *Store) Layer(_ context.Context, d digest.Digest) (index.LayerInfo, error) {
	var info index.LayerInfo
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(markerKey(d))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("layer %s: %w", d, index.ErrNotFound)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if err := json.Unmarshal(v, &info); err != nil {
				return fmt.Errorf("completion marker: %w: %w", ErrCorrupt, err)
			}
			return nil
		})
	})
	if err != nil {
		return index.LayerInfo{}, fmt.Errorf("reading index of layer %s: %w", d, err)
	}
	return info, nil
}

// Layers implements index.Store: the completion markers, in key and so
// digest order.
func (s *Store) Layers(ctx context.Context, fn func(index.LayerInfo) error) error {
	return s.scanKeys(ctx, []byte{'l'}, func(k, v []byte) error {
		var info index.LayerInfo
		if err := json.Unmarshal(v, &info); err != nil {
			return fmt.Errorf("completion marker of layer %s: %w: %w", string(k[1:]), ErrCorrupt, err)
		}
		return fn(info)
	})
}

// scan calls fn with every value under prefix, in key order, and returns
// how many there were.
func (s *Store) scan(ctx context.Context, prefix []byte, fn func(v []byte) error) (int64, error) {
	var n int64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := it.Item().Value(fn); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Entries implements index.Store.
func (s *Store) Entries(ctx context.Context, d digest.Digest, fn func(index.Entry) error) error {
	info, err := s.Layer(ctx, d)
	if err != nil {
		return err
	}
	n, err := s.scan(ctx, recordPrefix('e', d), func(v []byte) error {
		var e index.Entry
		if err := e.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("entry record: %w: %w", ErrCorrupt, err)
		}
		return fn(e)
	})
	if err != nil {
		return fmt.Errorf("reading entries of layer %s: %w", d, err)
	}
	if n != info.Entries {
		return fmt.Errorf("layer %s: %d entries, marker says %d: %w", d, n, info.Entries, ErrCorrupt)
	}
	return nil
}

// Spans implements index.Store.
func (s *Store) Spans(ctx context.Context, d digest.Digest) ([]index.Span, error) {
	info, err := s.Layer(ctx, d)
	if err != nil {
		return nil, err
	}
	spans := make([]index.Span, 0, info.Spans)
	n, err := s.scan(ctx, recordPrefix('s', d), func(v []byte) error {
		var sp index.Span
		if err := sp.UnmarshalBinary(v); err != nil {
			return fmt.Errorf("span record: %w: %w", ErrCorrupt, err)
		}
		spans = append(spans, sp)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading spans of layer %s: %w", d, err)
	}
	if n != info.Spans {
		return nil, fmt.Errorf("layer %s: %d spans, marker says %d: %w", d, n, info.Spans, ErrCorrupt)
	}
	return spans, nil
}

// SpanWindow implements index.Store.
func (s *Store) SpanWindow(_ context.Context, d digest.Digest, i int) ([]byte, error) {
	var w []byte
	err := s.db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get(markerKey(d)); err != nil {
			return err
		}
		item, err := txn.Get(recordKey('w', d, uint32(i)))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil // spans at a gzip member start need no window
		}
		if err != nil {
			return err
		}
		w, err = item.ValueCopy(nil)
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		err = index.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading window %d of layer %s: %w", i, d, err)
	}
	return w, nil
}

// DeleteLayer implements index.Store. The marker goes first, so a crash
// halfway leaves an incomplete layer, never a damaged complete one.
func (s *Store) DeleteLayer(ctx context.Context, d digest.Digest) (err error) {
	defer recoverBadger("deleting layer", d, &err)
	if err := s.space.forDelete(); err != nil {
		return fmt.Errorf("deleting layer %s: %w", d, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(markerKey(d)) }); err != nil {
		return fmt.Errorf("deleting layer %s: %w", d, err)
	}
	return s.deleteRecords(ctx, d)
}

// deleteRecords removes a layer's records, its content objects among
// them, with ordinary deletes, found by a key-only scan. Badger's
// DropPrefix would be cheaper, but it blocks every writer of the database
// while it runs, so the passes of all other layers would fail with
// "Writes are blocked".
func (s *Store) deleteRecords(ctx context.Context, d digest.Digest) error {
	wb := s.db.NewWriteBatch()
	for _, kind := range []byte{'e', 's', 'w', 'o'} {
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: recordPrefix(kind, d)})
			defer it.Close()
			n := 0
			for it.Rewind(); it.Valid(); it.Next() {
				if n++; n%1024 == 0 {
					if err := ctx.Err(); err != nil {
						return err
					}
				}
				if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			wb.Cancel()
			return fmt.Errorf("deleting %c records of layer %s: %w", kind, d, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("deleting records of layer %s: %w", d, err)
	}
	return nil
}

func (s *Store) hasPrefix(prefix []byte) bool {
	found := false
	_ = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	return found
}

// NewLayerWriter implements index.Store. It refuses to start, with an
// error wrapping ENOSPC, when the filesystem is nearly full.
func (s *Store) NewLayerWriter(ctx context.Context, d digest.Digest) (_ index.LayerWriter, err error) {
	defer recoverBadger("starting layer", d, &err)
	if err := s.space.forWrite(); err != nil {
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	if _, err := s.Layer(ctx, d); err == nil {
		if err := s.DeleteLayer(ctx, d); err != nil {
			return nil, err
		}
	} else if err := s.deleteRecords(ctx, d); err != nil {
		return nil, err
	}
	return &writer{store: s, digest: d, batch: s.db.NewWriteBatch()}, nil
}

type writer struct {
	store   *Store
	digest  digest.Digest
	batch   *badger.WriteBatch
	entries uint32
	spans   uint32
	done    bool
	// unchecked counts record bytes added since free space was checked.
	unchecked int
}

// added counts n record bytes and checks the free space once enough were
// added since the last check.
func (w *writer) added(n int) error {
	if w.unchecked += n; w.unchecked < spaceCheckBytes {
		return nil
	}
	w.unchecked = 0
	return w.store.space.forWrite()
}

var errWriterDone = errors.New("layer writer already committed or aborted")

func (w *writer) AddEntry(e index.Entry) (err error) {
	defer recoverBadger("recording an entry of layer", w.digest, &err)
	if w.done {
		return errWriterDone
	}
	v, err := e.MarshalBinary()
	if err != nil {
		return err
	}
	if err := w.added(len(v)); err != nil {
		return fmt.Errorf("layer %s: recording entry %q: %w", w.digest, e.Path, err)
	}
	if err := w.batch.Set(recordKey('e', w.digest, w.entries), v); err != nil {
		return fmt.Errorf("layer %s: recording entry %q: %w", w.digest, e.Path, err)
	}
	w.entries++
	return nil
}

func (w *writer) AddSpan(sp index.Span) (err error) {
	defer recoverBadger("recording a span of layer", w.digest, &err)
	if w.done {
		return errWriterDone
	}
	v, err := sp.MarshalBinary()
	if err != nil {
		return err
	}
	if err := w.added(len(v) + len(sp.Window)); err != nil {
		return fmt.Errorf("layer %s: recording span %d: %w", w.digest, w.spans, err)
	}
	if err := w.batch.Set(recordKey('s', w.digest, w.spans), v); err != nil {
		return fmt.Errorf("layer %s: recording span %d: %w", w.digest, w.spans, err)
	}
	if len(sp.Window) > 0 {
		if err := w.batch.Set(recordKey('w', w.digest, w.spans), append([]byte(nil), sp.Window...)); err != nil {
			return fmt.Errorf("layer %s: recording window %d: %w", w.digest, w.spans, err)
		}
	}
	w.spans++
	return nil
}

// Commit writes the completion marker only after every record of the
// layer is durable: the store syncs every batch it writes (SyncWrites), and
// Flush returns once the last batch of the layer is written.
func (w *writer) Commit(info index.LayerInfo) (err error) {
	defer recoverBadger("committing layer", w.digest, &err)
	if w.done {
		return errWriterDone
	}
	w.done = true
	if err := w.store.space.forWrite(); err != nil {
		w.batch.Cancel()
		return fmt.Errorf("layer %s: writing index: %w", w.digest, err)
	}
	if err := w.batch.Flush(); err != nil {
		return fmt.Errorf("layer %s: writing index: %w", w.digest, err)
	}
	if hook := w.store.beforeMarker; hook != nil {
		if err := hook(w.digest); err != nil {
			return fmt.Errorf("layer %s: %w", w.digest, err)
		}
	}
	info.Digest, info.Entries, info.Spans = w.digest, int64(w.entries), int64(w.spans)
	v, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := w.store.db.Update(func(txn *badger.Txn) error { return txn.Set(markerKey(w.digest), v) }); err != nil {
		return fmt.Errorf("layer %s: marking complete: %w", w.digest, err)
	}
	return nil
}

// recoverBadger turns a panic inside Badger into an error of the call we
// made: Badger asserts rather than returns on some paths it does not
// expect to fail, and one failed pass must not end the daemon.
func recoverBadger(what string, d digest.Digest, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s %s: the index database failed: %v", what, d, r)
	}
}

func (w *writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.batch.Cancel()
	return nil
}

// badgerLogger adapts slog to Badger's logger, dropping its chatty info
// and debug lines.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error(fmt.Sprintf(f, a...), "component", "badger")
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Warn(fmt.Sprintf(f, a...), "component", "badger")
}
func (b badgerLogger) Infof(string, ...any)  {}
func (b badgerLogger) Debugf(string, ...any) {}

// LayerBytes sums the key and value bytes recorded for a layer, by kind:
// entries, spans and windows. It measures the index's own encoding,
// before Badger's block compression and table overhead.
func (s *Store) LayerBytes(d digest.Digest) (entries, spans, windows int64, err error) {
	sum := func(kind byte) (int64, error) {
		var n int64
		err := s.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: recordPrefix(kind, d)})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n += int64(len(it.Item().Key())) + it.Item().ValueSize()
			}
			return nil
		})
		return n, err
	}
	if entries, err = sum('e'); err != nil {
		return
	}
	if spans, err = sum('s'); err != nil {
		return
	}
	windows, err = sum('w')
	return
}
