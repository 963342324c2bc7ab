package index_test

import (
	"archive/tar"
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/explodefs/explodefs/index"
	"github.com/explodefs/explodefs/index/indextest"
	"github.com/explodefs/explodefs/index/memstore"
)

// BenchmarkLayerPass measures the one pass over a 64 MB layer for each
// compression, in MB/s of tar. For zstd it also reports the decompressed
// cache the fallback keeps on disk, as a share of the compressed blob.
func BenchmarkLayerPass(b *testing.B) {
	var files []tarFile
	for i := range 64 {
		data := textish(uint64(i), 700_000)
		if i%4 == 0 {
			data = random(uint64(i), 300_000)
		}
		files = append(files, tarFile{hdr: tar.Header{Name: fmt.Sprintf("f%02d", i), Typeflag: tar.TypeReg, Mode: 0o644}, data: data})
	}
	raw := buildTar(b, files)
	for _, c := range []compression{gzipOne, plain, zstdC} {
		b.Run(string(c), func(b *testing.B) {
			blobBytes := compress(b, c, raw)
			d := digest.FromBytes(blobBytes)
			cacheDir := b.TempDir()
			b.SetBytes(int64(len(raw)))
			b.ResetTimer()
			for range b.N {
				if _, err := index.IndexLayer(context.Background(), memstore.New(), indextest.MemBlob(blobBytes), d, index.PassOptions{CacheDir: cacheDir}); err != nil {
					b.Fatal(err)
				}
			}
			if c == zstdC {
				fi, err := os.Stat(index.CachePath(cacheDir, d))
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(fi.Size())/float64(len(blobBytes)), "cache/blob")
			}
		})
	}
}
