package index_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// BenchmarkBuildView merges one layer of 300,000 entries, the size of the
// largest layers the issue asks to serve, from each store.
func BenchmarkBuildView(b *testing.B) {
	const n = 300_000
	entries := make([]index.Entry, n)
	for i := range entries {
		entries[i] = index.Entry{Path: fmt.Sprintf("many/g%02d/d%02d/file-%06d", i%100, (i/100)%30, i), Type: index.TypeRegular, Mode: 0o644, Size: 10, Offset: int64(i) * 1024}
	}
	stores := map[string]func(b *testing.B) index.Store{
		"memstore": func(*testing.B) index.Store { return memstore.New() },
		"badger": func(b *testing.B) index.Store {
			s, err := badgerstore.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for name, open := range stores {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s := open(b)
			defer s.Close()
			d := indextest.LayerDigest(1)
			w, _ := s.NewLayerWriter(ctx, d)
			for _, e := range entries {
				if err := w.AddEntry(e); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Commit(index.LayerInfo{WhiteoutFree: true}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for range b.N {
				if _, err := index.BuildView(ctx, s, []digest.Digest{d}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
