package index_test

import (
	"archive/tar"
	"context"
	"testing"

	"github.com/explodefs/explodefs/index"
)

// CacheStats.Inflated counts the decompression a read costs: from the
// span's checkpoint up to the verified chunk that holds the last byte
// asked for, once, and nothing for layers that need no inflating.
func TestReaderCountsInflatedBytes(t *testing.T) {
	raw := buildTar(t, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, data: textish(21, 3_000_000)}})
	ctx := context.Background()
	for _, c := range []compression{gzipOne, plain} {
		t.Run(string(c), func(t *testing.T) {
			l := indexLayer(t, c, raw, 512<<10, 4<<20)
			spans, err := l.store.Spans(ctx, l.digest)
			if err != nil {
				t.Fatal(err)
			}
			if len(spans) < 3 {
				t.Fatalf("%d spans; the test wants a read in the middle of the layer", len(spans))
			}
			if st := l.reader.CacheStats(); st.Inflated != 0 {
				t.Fatalf("inflated %d bytes before any read", st.Inflated)
			}
			// A byte 100 KiB into the third span: far from the start of
			// the layer, so the read does not look sequential and starts
			// no prefetch.
			off := spans[2].Out + 100<<10
			var b [1]byte
			if _, err := l.reader.ReadAt(ctx, l.digest, b[:], off); err != nil {
				t.Fatal(err)
			}
			want := int64(0)
			if c == gzipOne {
				want = 2 * index.VerifyChunkSize // the chunk at 64 KiB holds byte 100 KiB
			}
			if st := l.reader.CacheStats(); st.Inflated != want {
				t.Errorf("after one read: inflated %d bytes, want %d", st.Inflated, want)
			}
			// The same byte again is a cache hit: nothing more to inflate.
			if _, err := l.reader.ReadAt(ctx, l.digest, b[:], off); err != nil {
				t.Fatal(err)
			}
			if st := l.reader.CacheStats(); st.Inflated != want || st.Hits == 0 {
				t.Errorf("after a repeated read: inflated %d bytes, %d hits; want %d bytes and a hit", st.Inflated, st.Hits, want)
			}
		})
	}
}
