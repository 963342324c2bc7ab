package index_test

import (
	"archive/tar"
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/badgerstore"
	"github.com/explodefs/explodefs/index/indextest"
)

// BenchmarkLayerPassBadger measures the pass into the durable store, so
// that the cost of making a layer's records durable before its completion
// marker shows: few large files (the span records dominate) and many small
// ones (the entry records dominate, and Badger rotates memtables within
// one layer).
func BenchmarkLayerPassBadger(b *testing.B) {
	layers := []struct {
		name  string
		files []tarFile
	}{
		{"64-files", benchFiles(64, 700_000)},
		{"40k-files", benchFiles(40_000, 600)},
	}
	for _, l := range layers {
		raw := buildTar(b, l.files)
		blobBytes := compress(b, gzipOne, raw)
		d := digest.FromBytes(blobBytes)
		b.Run(l.name, func(b *testing.B) {
			s, err := badgerstore.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			for range b.N {
				if _, err := index.IndexLayer(ctx, s, indextest.MemBlob(blobBytes), d, index.PassOptions{}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.DeleteLayer(ctx, d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func benchFiles(n, size int) []tarFile {
	files := make([]tarFile, n)
	for i := range files {
		files[i] = tarFile{
			hdr:  tar.Header{Name: fmt.Sprintf("d%03d/f%05d", i%512, i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: mtime},
			data: textish(uint64(i), size),
		}
	}
	return files
}
