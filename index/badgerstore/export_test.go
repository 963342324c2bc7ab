package badgerstore

import (
	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// SetSchemaForTest overwrites the recorded schema version.
func (s *Store) SetSchemaForTest(v string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(schemaKey, []byte(v)) })
}

// DeleteRecordForTest deletes one entry ('e'), span ('s') or window ('w')
// record of a layer, as damage to the database would lose it.
func (s *Store) DeleteRecordForTest(d digest.Digest, kind byte, n uint32) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Delete(recordKey(kind, d, n)) })
}

// OverwriteRecordForTest replaces one record of a layer with v; kind 'l'
// is the completion marker.
func (s *Store) OverwriteRecordForTest(d digest.Digest, kind byte, n uint32, v []byte) error {
	key := markerKey(d)
	if kind != 'l' {
		key = recordKey(kind, d, n)
	}
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, v) })
}

// SetBeforeMarkerForTest makes fn run in every Commit once the layer's
// records are written and before its completion marker is.
func (s *Store) SetBeforeMarkerForTest(fn func(digest.Digest) error) { s.beforeMarker = fn }

// WithBadgerOptionsForTest lets a test change Badger's options.
func WithBadgerOptionsForTest(fn func(*badger.Options)) Option {
	return func(c *config) { fn(&c.badger) }
}

// SetKeyForTest writes v under a raw key, as damage to the database
// would.
func (s *Store) SetKeyForTest(key, v []byte) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(key, v) })
}
