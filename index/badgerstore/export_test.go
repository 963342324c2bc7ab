package badgerstore

import "github.com/dgraph-io/badger/v4"

// SetSchemaForTest overwrites the recorded schema version.
func (s *Store) SetSchemaForTest(v string) error {
	return s.db.Update(func(txn *badger.Txn) error { return txn.Set(schemaKey, []byte(v)) })
}
